package server

import (
	"bytes"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ckpt-dev/ckpt/internal/auth"
)

// countRequests is a RequestRecorder that counts method|path|code.
type countRequests struct {
	mu   sync.Mutex
	seen map[string]int
}

func (c *countRequests) Begin(method, path string) func(int) {
	return func(code int) {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.seen == nil {
			c.seen = map[string]int{}
		}
		c.seen[method+"|"+path+"|"+http.StatusText(code)]++
	}
}

// userGuard authenticates everyone as "alice" the way auth.Wrap does, and
// denies the "deny" pod with 403.
type userGuard struct{}

func (userGuard) Wrap(_, _ string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/deny/") {
			writeText(w, http.StatusForbidden, "Forbidden")
			return
		}
		next.ServeHTTP(w, r.WithContext(auth.WithUser(r.Context(), "alice", nil)))
	})
}

func TestAccessLogAndRequestMetrics(t *testing.T) {
	for _, c := range []struct {
		verbosity int
		wantLines []string // substrings, one line each, in order
	}{
		{0, []string{`method=POST path=/checkpoint/default/web/fail user=alice status=500`}},
		{2, []string{
			`method=POST path=/checkpoint/default/web/app user=alice status=200 duration=`,
			`method=POST path=/checkpoint/default/deny/app user="" status=403`,
			`method=GET path=/nothing user=alice status=404`,
			`method=POST path=/checkpoint/default/web/fail user=alice status=500`,
		}},
		{4, []string{`query="timeout=5"`, `status=403`, `status=404`, `status=500`}},
	} {
		var buf bytes.Buffer
		reqs := &countRequests{}
		log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{
			ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
				if a.Key == slog.TimeKey {
					return slog.Attr{}
				}
				return a
			}}))
		fc := &fakeCheckpointer{path: archive, failContainer: "fail"}
		h := New(Options{CheckpointEnabled: true, Registry: prometheus.NewRegistry(), Requests: reqs,
			AccessLog: log, Verbosity: c.verbosity, UserFrom: auth.UserFrom}, fc, userGuard{}, nil)
		serve(h, "POST", "/checkpoint/default/web/app?timeout=5")
		serve(h, "POST", "/checkpoint/default/deny/app")
		serve(h, "GET", "/nothing")
		serve(h, "POST", "/checkpoint/default/web/fail")

		lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
		if len(lines) != len(c.wantLines) {
			t.Fatalf("-v %d: %d lines, want %d:\n%s", c.verbosity, len(lines), len(c.wantLines), buf.String())
		}
		for i, want := range c.wantLines {
			if !strings.Contains(lines[i], want) {
				t.Errorf("-v %d: line %d %q lacks %q", c.verbosity, i, lines[i], want)
			}
		}
		want := map[string]int{
			"POST|checkpoint|OK": 1, "POST|checkpoint|Forbidden": 1, "GET|other|Not Found": 1,
			"POST|checkpoint|Internal Server Error": 1,
		}
		for k, n := range want {
			if reqs.seen[k] != n {
				t.Errorf("-v %d: %s counted %d, want %d (all: %v)", c.verbosity, k, reqs.seen[k], n, reqs.seen)
			}
		}
	}
}

func TestPathRoot(t *testing.T) {
	for p, want := range map[string]string{
		"/checkpoint/a/b/c": "checkpoint", "/checkpoints": "checkpoints", "/checkpoints/x.tar": "checkpoints",
		"/healthz": "healthz", "/metrics/cadvisor": "metrics", "/restore/a/b/c": "restore", "/stop/a/b/c": "stop",
		"/": "other", "/pods": "other", "/checkpointx": "other",
	} {
		if got := pathRoot(p); got != want {
			t.Errorf("pathRoot(%q) = %q, want %q", p, got, want)
		}
	}
}
