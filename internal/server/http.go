package server

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	certutil "k8s.io/client-go/util/cert"
)

// Server limits. There is deliberately no WriteTimeout: a checkpoint can
// take minutes, and its deadline comes from the request's timeout.
const (
	readHeaderTimeout = 10 * time.Second
	readTimeout       = time.Minute // whole request, body included
	idleTimeout       = 90 * time.Second
	maxHeaderBytes    = 1 << 20
)

// NewHTTPServer returns an http.Server for h with ckpt's limits. With a
// non-nil tlsCfg, serve it with ListenAndServeTLS("", "").
func NewHTTPServer(addr string, h http.Handler, tlsCfg *tls.Config) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		TLSConfig:         tlsCfg,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
	}
}

// Names of the self-signed pair in certDir.
const (
	SelfSignedCertName = "ckpt.crt"
	SelfSignedKeyName  = "ckpt.key"
)

// TLSConfig builds the serving TLS configuration. With certFile and keyFile
// it uses them; without, it uses (or first generates, the way the kubelet
// does) a self-signed pair ckpt.crt/ckpt.key in certDir, valid for hostname
// (os.Hostname() if empty) and for localhost, 127.0.0.1 and ::1. With
// clientCAs, client certificates are verified when given, and callers
// without one are left to the other authenticators.
func TLSConfig(certFile, keyFile, certDir, hostname string, clientCAs *x509.CertPool) (*tls.Config, error) {
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("tls: certificate and key files must be given together")
	}
	if certFile == "" {
		if certDir == "" {
			return nil, errors.New("tls: no certificate files and no directory to generate them in")
		}
		certFile = filepath.Join(certDir, SelfSignedCertName)
		keyFile = filepath.Join(certDir, SelfSignedKeyName)
		if err := ensureSelfSigned(certFile, keyFile, hostname); err != nil {
			return nil, err
		}
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("tls: load %s and %s: %w", certFile, keyFile, err)
	}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
	}
	if clientCAs != nil {
		cfg.ClientCAs = clientCAs
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return cfg, nil
}

// ensureSelfSigned keeps a readable, unexpired pair, and otherwise writes a
// new one: the key 0600, the directory 0700.
func ensureSelfSigned(certFile, keyFile, hostname string) error {
	ok, err := certutil.CanReadCertAndKey(certFile, keyFile)
	if err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	if ok && !expired(certFile) {
		return nil
	}
	if hostname == "" {
		if hostname, err = os.Hostname(); err != nil {
			return fmt.Errorf("tls: hostname for self-signed certificate: %w", err)
		}
	}
	certPEM, keyPEM, err := certutil.GenerateSelfSignedCertKey(hostname,
		[]net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, []string{"localhost"})
	if err != nil {
		return fmt.Errorf("tls: generate self-signed certificate for %s: %w", hostname, err)
	}
	if err := os.MkdirAll(filepath.Dir(certFile), 0o700); err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	// Key first: a crash between the two writes leaves no cert, so the
	// pair is regenerated next time rather than mismatched.
	if err := writeFileAtomic(keyFile, keyPEM, 0o600); err != nil {
		return err
	}
	return writeFileAtomic(certFile, certPEM, 0o644)
}

// expired reports whether the first certificate in file is past NotAfter;
// an unparsable file counts as expired so that it is replaced.
func expired(file string) bool {
	data, err := os.ReadFile(file)
	if err != nil {
		return true
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return true
	}
	c, err := x509.ParseCertificate(block.Bytes)
	return err != nil || time.Now().After(c.NotAfter)
}

func writeFileAtomic(name string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".tmp*")
	if err != nil {
		return fmt.Errorf("tls: write %s: %w", name, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return fmt.Errorf("tls: write %s: %w", name, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("tls: write %s: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("tls: write %s: %w", name, err)
	}
	if err := os.Rename(tmp, name); err != nil {
		return fmt.Errorf("tls: write %s: %w", name, err)
	}
	return nil
}

// CheckPlainHTTPAddress allows serving without TLS only on a loopback
// address (127.0.0.0/8, ::1 or "localhost"): plain HTTP elsewhere would
// carry bearer tokens and archive paths in the clear.
func CheckPlainHTTPAddress(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("plain HTTP address %q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	ip, err := netip.ParseAddr(host)
	if err == nil && ip.Zone() == "" && ip.Unmap().IsLoopback() {
		return nil
	}
	return fmt.Errorf("plain HTTP address %q: only a loopback address (127.0.0.0/8, ::1, localhost) may serve without TLS; give a TLS certificate or listen on 127.0.0.1", addr)
}
