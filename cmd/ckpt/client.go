package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/spf13/pflag"
)

// clientOptions are the flags of every command that talks to a ckpt server
// (checkpoint now; checkpoints ls|get|rm and restore later).
type clientOptions struct {
	server    string
	token     string
	tokenFile string
	caFile    string
	certFile  string
	keyFile   string
	insecure  bool
}

const defaultServer = "https://127.0.0.1:10250"

func (o *clientOptions) addFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.server, "server", defaultServer, "URL of the ckpt (or kubelet) server")
	fs.StringVar(&o.token, "token", "", "bearer token (visible in the process list; prefer --token-file)")
	fs.StringVar(&o.tokenFile, "token-file", "", "file holding the bearer token")
	fs.StringVar(&o.caFile, "cacert", "", "PEM CA bundle to verify the server (for a self-signed server: its <cert-dir>/ckpt.crt)")
	fs.StringVar(&o.certFile, "cert", "", "client certificate (PEM) for --client-ca-file authentication")
	fs.StringVar(&o.keyFile, "key", "", "private key (PEM) for --cert")
	fs.BoolVar(&o.insecure, "insecure-skip-tls-verify", false, "do not verify the server's certificate (unsafe)")
}

// apiClient sends requests to a ckpt server.
type apiClient struct {
	base  *url.URL
	http  *http.Client
	token string
}

func (o *clientOptions) newClient() (*apiClient, error) {
	base, err := url.Parse(o.server)
	if err != nil {
		return nil, fmt.Errorf("--server %q: %w", o.server, err)
	}
	if (base.Scheme != "https" && base.Scheme != "http") || base.Host == "" {
		return nil, fmt.Errorf("--server %q: want http(s)://host:port", o.server)
	}
	if base.User != nil || base.RawQuery != "" || base.Fragment != "" {
		return nil, fmt.Errorf("--server %q: no user, query or fragment allowed", o.server)
	}
	token, err := o.readToken()
	if err != nil {
		return nil, err
	}
	tlsCfg, err := o.tlsConfig()
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tlsCfg
	return &apiClient{
		base:  base,
		token: token,
		http: &http.Client{
			Transport: tr,
			// No Timeout: a checkpoint takes as long as the server allows;
			// callers bound requests with their context.
			// Never follow redirects: a POST must reach what was asked.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}, nil
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

// do sends method to the server's base URL joined with the path segments
// (each escaped), with the query, and the bearer token if any.
func (c *apiClient) do(ctx context.Context, method string, segments []string, query url.Values) (*http.Response, error) {
	return c.send(ctx, method, segments, query, nil)
}

// send is do with a request body (streamed; nil for none).
func (c *apiClient) send(ctx context.Context, method string, segments []string, query url.Values, body io.Reader) (*http.Response, error) {
	escaped := make([]string, len(segments))
	for i, s := range segments {
		escaped[i] = url.PathEscape(s)
	}
	u := c.base.JoinPath(escaped...) // takes escaped elements
	u.RawQuery = query.Encode()
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		// err already names the method and URL.
		var unknownCA x509.UnknownAuthorityError
		if errors.As(err, &unknownCA) {
			return nil, fmt.Errorf("%w (for a self-signed server, pass its <cert-dir>/ckpt.crt as --cacert)", err)
		}
		return nil, err
	}
	return resp, nil
}

// maxErrorBody bounds how much of an error answer is read and shown.
const maxErrorBody = 64 << 10

// statusError turns a non-2xx answer into an error with the server's message.
func statusError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	msg := strings.TrimSpace(strings.ToValidUTF8(string(b), "?"))
	if msg == "" {
		return fmt.Errorf("server answered %s", resp.Status)
	}
	return fmt.Errorf("server answered %s: %s", resp.Status, msg)
}
