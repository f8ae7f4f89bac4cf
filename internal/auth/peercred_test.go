package auth

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestLocalPeerCredentials serves NewLocal on a real unix socket: the
// test's own process is the peer, and its credentials decide.
func TestLocalPeerCredentials(t *testing.T) {
	a := NewLocal(node)
	dir := t.TempDir()
	sock := filepath.Join(dir, "s")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: a.Wrap("", "checkpoint", echo), ConnContext: ConnContext}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })

	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
	resp, err := c.Post("http://local/checkpoint/default/pod/ctr", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if os.Geteuid() == 0 {
		if resp.StatusCode != 200 || string(b) != "system:node-admin|"+NodeAdminGroup+",system:authenticated" {
			t.Fatalf("root peer: %d %q", resp.StatusCode, b)
		}
	} else if resp.StatusCode != 403 || !strings.Contains(string(b), "only root (uid 0)") {
		t.Fatalf("non-root peer: %d %q", resp.StatusCode, b)
	}
}

func TestLocalDecisions(t *testing.T) {
	a := NewLocal(node)
	h := a.Wrap("", "checkpoint", echo)
	cases := []struct {
		name   string
		cred   *unix.Ucred
		status int
		body   string
	}{
		{"root", &unix.Ucred{Pid: 1, Uid: 0, Gid: 0}, 200, "system:node-admin|" + NodeAdminGroup + ",system:authenticated"},
		{"root group but another uid", &unix.Ucred{Pid: 1, Uid: 1000, Gid: 0}, 403,
			"Forbidden (user=uid:1000, verb=create, resource=nodes, subresource=checkpoint): only root (uid 0) on the node may use the local socket; others use the HTTPS API with credentials"},
		{"nobody", &unix.Ucred{Pid: 1, Uid: 65534, Gid: 65534}, 403, "Forbidden (user=uid:65534, verb=create, resource=nodes, subresource=checkpoint): only root"},
		{"no credentials (not a unix socket)", nil, 401, "Unauthorized"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "/checkpoint/default/pod/ctr", nil)
			if c.cred != nil {
				r = r.WithContext(WithPeerCred(r.Context(), *c.cred))
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			if rec.Code != c.status || !strings.HasPrefix(rec.Body.String(), c.body) {
				t.Fatalf("%d %q, want %d %q", rec.Code, rec.Body.String(), c.status, c.body)
			}
		})
	}
}

// A bearer token never stands in for peer credentials on the socket.
func TestLocalIgnoresTokens(t *testing.T) {
	h := NewLocal(node).Wrap("", "checkpoint", echo)
	r := httptest.NewRequest("POST", "/checkpoint/default/pod/ctr", nil)
	r.Header.Set("Authorization", "Bearer anything")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	if rec.Code != 401 {
		t.Fatalf("token without peer credentials: %d", rec.Code)
	}
}

// ConnContext on a TCP connection records nothing.
func TestConnContextTCP(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := net.Dial("tcp", l.Addr().String())
		if err == nil {
			defer c.Close()
			io.ReadAll(c)
		}
	}()
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, ok := ConnContext(context.Background(), c).Value(peerKey{}).(unix.Ucred); ok {
		t.Fatal("TCP connection got peer credentials")
	}
}
