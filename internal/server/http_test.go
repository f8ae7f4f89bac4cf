package server

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestNewHTTPServer(t *testing.T) {
	s := NewHTTPServer("127.0.0.1:0", http.NotFoundHandler(), nil)
	if s.WriteTimeout != 0 {
		t.Error("WriteTimeout must be 0: checkpoints take minutes")
	}
	if s.ReadHeaderTimeout <= 0 || s.ReadTimeout <= 0 || s.IdleTimeout <= 0 || s.MaxHeaderBytes <= 0 {
		t.Errorf("missing limits: %+v", s)
	}
}

func TestCheckPlainHTTPAddress(t *testing.T) {
	cases := []struct {
		addr string
		ok   bool
	}{
		{"127.0.0.1:10250", true},
		{"127.1.2.3:80", true},
		{"[::1]:10250", true},
		{"localhost:10250", true},
		{"[::ffff:127.0.0.1]:1", true},
		{":10250", false}, // every interface
		{"0.0.0.0:10250", false},
		{"[::]:10250", false},
		{"10.0.0.1:10250", false},
		{"192.168.1.1:10250", false},
		{"example.com:10250", false},
		{"localhost.example.com:1", false},
		{"[fe80::1%lo]:1", false},
		{"127.0.0.1", false}, // no port
		{"", false},
	}
	for _, c := range cases {
		err := CheckPlainHTTPAddress(c.addr)
		if (err == nil) != c.ok {
			t.Errorf("CheckPlainHTTPAddress(%q) = %v, want ok=%v", c.addr, err, c.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "loopback") && c.addr != "127.0.0.1" && c.addr != "" {
			t.Errorf("error %q does not explain the loopback rule", err)
		}
	}
}

func TestTLSSelfSignedGenerateAndReuse(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	cfg, err := TLSConfig("", "", dir, "node1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MinVersion != tls.VersionTLS12 || cfg.ClientAuth != tls.NoClientCert {
		t.Errorf("MinVersion=%x ClientAuth=%v", cfg.MinVersion, cfg.ClientAuth)
	}
	certPath, keyPath := filepath.Join(dir, "ckpt.crt"), filepath.Join(dir, "ckpt.key")
	for p, mode := range map[string]os.FileMode{dir: 0o700, keyPath: 0o600} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s mode %v, want %v", p, fi.Mode().Perm(), mode)
		}
	}
	first, _ := os.ReadFile(certPath)
	leaf := parseFirst(t, first)
	if leaf.VerifyHostname("node1") != nil || leaf.VerifyHostname("127.0.0.1") != nil || leaf.VerifyHostname("localhost") != nil {
		t.Errorf("certificate names: DNS %v IPs %v", leaf.DNSNames, leaf.IPAddresses)
	}

	if _, err := TLSConfig("", "", dir, "node1", nil); err != nil {
		t.Fatal(err)
	}
	second, _ := os.ReadFile(certPath)
	if !bytes.Equal(first, second) {
		t.Error("existing certificate was not reused")
	}

	// A client that trusts ckpt.crt can talk to the server on loopback.
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("hi")) }))
	srv.TLS = cfg
	srv.StartTLS()
	defer srv.Close()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(first)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := c.Get(srv.URL)
	if err != nil {
		t.Fatalf("TLS request with ckpt.crt as CA: %v", err)
	}
	resp.Body.Close()
}

func TestTLSExpiredIsReplaced(t *testing.T) {
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "old"},
		NotBefore:    time.Now().Add(-48 * time.Hour),
		NotAfter:     time.Now().Add(-24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	os.WriteFile(filepath.Join(dir, "ckpt.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(filepath.Join(dir, "ckpt.key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)

	if _, err := TLSConfig("", "", dir, "node1", nil); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(filepath.Join(dir, "ckpt.crt"))
	if c := parseFirst(t, data); c.Subject.CommonName == "old" || time.Now().After(c.NotAfter) {
		t.Error("expired self-signed certificate was kept")
	}
}

func TestTLSGivenFilesAndClientCAs(t *testing.T) {
	dir := t.TempDir()
	if _, err := TLSConfig("", "", dir, "node1", nil); err != nil {
		t.Fatal(err)
	}
	cert, key := filepath.Join(dir, "ckpt.crt"), filepath.Join(dir, "ckpt.key")
	cfg, err := TLSConfig(cert, key, "", "", x509.NewCertPool())
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ClientAuth != tls.VerifyClientCertIfGiven || cfg.ClientCAs == nil {
		t.Errorf("ClientAuth = %v, want VerifyClientCertIfGiven with the pool", cfg.ClientAuth)
	}
	for _, bad := range [][2]string{{cert, ""}, {"", key}, {cert, filepath.Join(dir, "missing")}} {
		if _, err := TLSConfig(bad[0], bad[1], "", "", nil); err == nil {
			t.Errorf("TLSConfig(%q, %q) accepted", bad[0], bad[1])
		}
	}
	if _, err := TLSConfig("", "", "", "", nil); err == nil {
		t.Error("no files and no directory accepted")
	}
	// Half a pair in certDir is an error, not silently replaced.
	half := t.TempDir()
	os.WriteFile(filepath.Join(half, "ckpt.crt"), []byte("x"), 0o644)
	if _, err := TLSConfig("", "", half, "node1", nil); err == nil {
		t.Error("certificate without key accepted")
	}
}

func parseFirst(t *testing.T, data []byte) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatal("no PEM block")
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
