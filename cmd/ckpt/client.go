package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/pflag"

	"github.com/ckpt-dev/ckpt/pkg/client"
)

// clientOptions are the flags of every command that talks to a ckpt server.
// Which server: --server, else --context (or the config's current
// context), else the local socket <root-dir>/ckpt.sock when it exists,
// else defaultServer.
type clientOptions struct {
	g         *globalOptions
	server    string
	context   string
	token     string
	tokenFile string
	caFile    string
	certFile  string
	keyFile   string
	insecure  bool
	fs        *pflag.FlagSet
}

const defaultServer = "https://127.0.0.1:10250"

// socketName is the agent's local socket in its root dir.
const socketName = "ckpt.sock"

func (o *clientOptions) addFlags(g *globalOptions, fs *pflag.FlagSet) {
	o.g, o.fs = g, fs
	fs.StringVar(&o.server, "server", "", "URL of the ckpt (or kubelet) server (default: the config's context, else the local socket <root-dir>/"+socketName+" as root on the node, else "+defaultServer+")")
	fs.StringVar(&o.context, "context", "", "context of the client config ($CKPT_CONFIG or ~/.config/ckpt/config.yaml) to use")
	fs.StringVar(&o.token, "token", "", "bearer token (visible in the process list; prefer --token-file)")
	fs.StringVar(&o.tokenFile, "token-file", "", "file holding the bearer token")
	fs.StringVar(&o.caFile, "cacert", "", "PEM CA bundle to verify the server (for a self-signed server: its <cert-dir>/ckpt.crt)")
	fs.StringVar(&o.certFile, "cert", "", "client certificate (PEM) for --client-ca-file authentication")
	fs.StringVar(&o.keyFile, "key", "", "private key (PEM) for --cert")
	fs.BoolVar(&o.insecure, "insecure-skip-tls-verify", false, "do not verify the server's certificate (unsafe)")
}

// tcpFlagsGiven reports whether a flag that only makes sense over TCP was
// given: then the local socket is not used.
func (o *clientOptions) tcpFlagsGiven() bool {
	return o.token != "" || o.tokenFile != "" || o.caFile != "" || o.certFile != "" || o.keyFile != "" || o.insecure
}

// socketPath is the local agent socket for this root dir.
func (g *globalOptions) socketPath() string { return filepath.Join(g.rootDir, socketName) }

// newClient resolves which server to talk to and how.
func (o *clientOptions) newClient() (*client.Client, error) {
	c := *o // flags given win over the context's values
	if c.server == "" {
		ctxName := c.context
		cfg, err := loadConfig()
		if err != nil {
			return nil, err
		}
		if ctxName == "" {
			ctxName = cfg.CurrentContext
		}
		switch {
		case ctxName != "":
			k, ok := cfg.find(ctxName)
			if !ok {
				return nil, fmt.Errorf("--context %q: no such context in %s", ctxName, configPath())
			}
			c.fillFrom(k)
		case !c.tcpFlagsGiven() && c.g != nil && socketExists(c.g.socketPath()):
			return client.New(client.Config{Socket: c.g.socketPath()})
		default:
			c.server = defaultServer
		}
	}
	if strings.HasPrefix(c.server, "unix://") {
		return client.New(client.Config{Socket: strings.TrimPrefix(c.server, "unix://")})
	}
	token, err := c.readToken()
	if err != nil {
		return nil, err
	}
	tlsCfg, err := c.tlsConfig()
	if err != nil {
		return nil, err
	}
	return client.New(client.Config{Server: c.server, Token: token, TLS: tlsCfg})
}

// withServer returns a copy of the options aimed at another server.
func (o clientOptions) withServer(url string) *clientOptions {
	o.server = url
	return &o
}

// socketExists reports whether path is a socket, or may be one that this
// user may not reach (permission denied): then connecting says why.
func socketExists(path string) bool {
	st, err := os.Stat(path)
	if errors.Is(err, fs.ErrPermission) {
		return true
	}
	return err == nil && st.Mode().Type() == os.ModeSocket
}

func (o *clientOptions) readToken() (string, error) {
	if o.token != "" && o.tokenFile != "" {
		return "", errors.New("--token and --token-file are mutually exclusive")
	}
	if o.tokenFile == "" {
		return o.token, nil
	}
	b, err := os.ReadFile(o.tokenFile)
	if err != nil {
		return "", fmt.Errorf("read --token-file: %w", err)
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", fmt.Errorf("--token-file %s is empty", o.tokenFile)
	}
	return t, nil
}

func (o *clientOptions) tlsConfig() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: o.insecure}
	if o.caFile != "" {
		pem, err := os.ReadFile(o.caFile)
		if err != nil {
			return nil, fmt.Errorf("read --cacert: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--cacert %s holds no PEM certificate", o.caFile)
		}
		cfg.RootCAs = pool
	}
	if (o.certFile == "") != (o.keyFile == "") {
		return nil, errors.New("--cert and --key must be given together")
	}
	if o.certFile != "" {
		cert, err := tls.LoadX509KeyPair(o.certFile, o.keyFile)
		if err != nil {
			return nil, fmt.Errorf("load --cert/--key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}
