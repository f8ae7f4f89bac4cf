// Package client is the Go client of ckpt's HTTP API: the kubelet's
// checkpoint route and ckpt's own archive, restore and stop routes, over
// HTTPS, plain loopback HTTP, or the agent's local socket
// (<root-dir>/ckpt.sock).
//
// Every call maps a non-success answer to a *StatusError that wraps one of
// the Err* sentinels (errors.Is(err, client.ErrNotFound)) and carries the
// server's message. Up- and downloads stream, with optional progress
// callbacks.
package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
)

// Config says how to reach one server.
type Config struct {
	// Server is the base URL, https://host:port or (loopback only)
	// http://host:port. Ignored when Socket is set.
	Server string
	// Socket is the path of the agent's local socket; the server then
	// authenticates the caller by its process credentials, and Token and
	// TLS are not used.
	Socket string
	// Token is a bearer token.
	Token string
	// TLS verifies the server and may hold a client certificate; nil
	// means the system roots.
	TLS *tls.Config
	// Transport, when set, sends every request instead of a transport
	// built from TLS (which is then ignored): e.g. client-go's, carrying
	// a kubeconfig's credentials to the API server's node or pod proxy,
	// with Server = https://API/api/v1/nodes/NODE/proxy.
	Transport http.RoundTripper
	// MaxIdleConnsPerHost is how many idle connections are kept for
	// reuse (0: net/http's default, 2); raise it for many concurrent calls.
	MaxIdleConnsPerHost int
}

// Client sends requests to one ckpt server. It is safe for concurrent use.
type Client struct {
	base   *url.URL
	http   *http.Client
	token  string
	socket string
}

// New returns a client for cfg.
func New(cfg Config) (*Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	// HTTP/1.1: archives stream as plain request and response bodies,
	// and the kubelet's API is HTTP/1.1 too.
	tr.ForceAttemptHTTP2 = false
	tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	tr.MaxIdleConnsPerHost = cfg.MaxIdleConnsPerHost
	c := &Client{token: cfg.Token, socket: cfg.Socket}
	if cfg.Socket != "" {
		// The host is never resolved: every connection goes to the socket.
		c.base = &url.URL{Scheme: "http", Host: "ckpt.sock"}
		c.token = "" // never sent over the socket: the peer's credentials are what count
		path := cfg.Socket
		tr.Proxy = nil
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}
	} else {
		base, err := url.Parse(cfg.Server)
		if err != nil {
			return nil, fmt.Errorf("server %q: %w", cfg.Server, err)
		}
		if (base.Scheme != "https" && base.Scheme != "http") || base.Host == "" {
			return nil, fmt.Errorf("server %q: want http(s)://host:port", cfg.Server)
		}
		if base.User != nil || base.RawQuery != "" || base.Fragment != "" {
			return nil, fmt.Errorf("server %q: no user, query or fragment allowed", cfg.Server)
		}
		c.base = base
		if cfg.TLS != nil {
			tr.TLSClientConfig = cfg.TLS.Clone()
		}
	}
	var rt http.RoundTripper = tr
	if cfg.Transport != nil && cfg.Socket == "" {
		rt = cfg.Transport
	}
	c.http = &http.Client{
		Transport: rt,
		// No Timeout: a checkpoint takes as long as the server allows;
		// callers bound requests with their context.
		// Never follow redirects: a POST must reach what was asked.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return c, nil
}

// CloseIdleConnections closes the connections kept for reuse.
func (c *Client) CloseIdleConnections() { c.http.CloseIdleConnections() }

// String names the server: its URL, or unix://PATH for the local socket.
func (c *Client) String() string {
	if c.socket != "" {
		return "unix://" + c.socket
	}
	return c.base.String()
}

// request is one call: method, path segments (escaped here), query, body.
type request struct {
	method   string
	segments []string
	query    url.Values
	body     io.Reader
	size     int64 // of body; -1 unknown
	header   http.Header
}

// send sends r and returns the answer, whatever its status.
func (c *Client) send(ctx context.Context, r request) (*http.Response, error) {
	escaped := make([]string, len(r.segments))
	for i, s := range r.segments {
		escaped[i] = url.PathEscape(s)
	}
	u := c.base.JoinPath(escaped...) // takes escaped elements
	u.RawQuery = r.query.Encode()
	req, err := http.NewRequestWithContext(ctx, r.method, u.String(), r.body)
	if err != nil {
		return nil, err
	}
	if r.body != nil && r.size >= 0 {
		req.ContentLength = r.size
	}
	for k, v := range r.header {
		req.Header[k] = v
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, c.explain(err)
	}
	return resp, nil
}

// explain adds what to do to the errors a new user meets first.
func (c *Client) explain(err error) error {
	var unknownCA x509.UnknownAuthorityError
	switch {
	case errors.As(err, &unknownCA):
		return fmt.Errorf("%w (for a self-signed server, pass its <cert-dir>/ckpt.crt as --cacert)", err)
	case c.socket != "" && errors.Is(err, syscall.EACCES):
		return fmt.Errorf("%w (the local socket %s is for root on the node; others use --server or --context with credentials)", err, c.socket)
	case c.socket != "" && (errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED)):
		return fmt.Errorf("%w (is `ckpt serve` running with this --root-dir?)", err)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("%w (no agent listens at %s: give --server or --context, or run as root on the node, where the CLI uses the agent's local socket)", err, c.base.Host)
	}
	return err
}

// call sends r and returns the answer when its status is one of ok;
// otherwise it returns a *StatusError named op.
func (c *Client) call(ctx context.Context, op string, r request, ok ...int) (*http.Response, error) {
	resp, err := c.send(ctx, r)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	for _, s := range ok {
		if resp.StatusCode == s {
			return resp, nil
		}
	}
	defer resp.Body.Close()
	return nil, statusError(op, resp)
}

// Raw sends one request to pathAndQuery (already escaped, e.g.
// "/checkpoint/default/web/app?timeout=5") with the client's transport and
// credentials, and returns the answer whatever its status; the caller
// closes its body. It is for tests of the HTTP layer itself (unknown
// paths, wrong methods, malformed queries); everything else has a typed
// call.
func (c *Client) Raw(ctx context.Context, method, pathAndQuery string, body io.Reader) (*http.Response, error) {
	if !strings.HasPrefix(pathAndQuery, "/") {
		return nil, fmt.Errorf("raw request %q: want an absolute path", pathAndQuery)
	}
	// Joined as text, so that unclean paths ("//", "/../") go out as given.
	base := strings.TrimSuffix(c.base.String(), "/")
	req, err := http.NewRequestWithContext(ctx, method, base+pathAndQuery, body)
	if err != nil {
		return nil, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, c.explain(err)
	}
	return resp, nil
}
