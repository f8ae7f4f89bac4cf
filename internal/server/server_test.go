package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"

	"github.com/ckpt-dev/ckpt/internal/runtime"
)

// fakeCheckpointer stands in for the checkpoint service in these unit tests.
type fakeCheckpointer struct {
	mu      sync.Mutex
	path    string
	err     error
	calls   int
	ref     runtime.Ref
	timeout time.Duration
	tcp     bool
	// failContainer: checkpointing this container fails (500).
	failContainer string
}

func (f *fakeCheckpointer) Checkpoint(_ context.Context, ref runtime.Ref, opts runtime.CheckpointOptions) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	f.ref, f.timeout, f.tcp = ref, opts.Timeout, opts.TCPEstablished
	if f.failContainer != "" && ref.Container == f.failContainer {
		return "", errors.New("runtime exploded")
	}
	return f.path, f.err
}

// passGuard lets everything through and remembers the subresource used per path.
type passGuard struct {
	mu   sync.Mutex
	seen map[string]string
}

func (g *passGuard) Wrap(verb, sub string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.mu.Lock()
		if g.seen == nil {
			g.seen = map[string]string{}
		}
		g.seen[r.URL.Path] = verb + "|" + sub
		g.mu.Unlock()
		next.ServeHTTP(w, r)
	})
}

// denyGuard answers 401 to everything, as auth does for anonymous callers.
type denyGuard struct{}

func (denyGuard) Wrap(_, _ string, _ http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeText(w, http.StatusUnauthorized, "Unauthorized")
	})
}

type healthFunc func(context.Context) error

func (f healthFunc) Healthy(ctx context.Context) error { return f(ctx) }

const (
	textPlain = "text/plain; charset=utf-8"
	appJSON   = "application/json"
	archive   = "/var/lib/kubelet/checkpoints/checkpoint-web_default-app-2026-01-02T03:04:05Z.tar"
)

func serve(h http.Handler, method, target string) *http.Response {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, target, nil))
	return rec.Result()
}

func body(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func wrapped(err error) error { return fmt.Errorf("checkpoint container default/web/app: %w", err) }

// TestStatusTable covers every row of the status table in docs/api.md.
func TestStatusTable(t *testing.T) {
	const ok = "/checkpoint/default/web/app"
	cases := []struct {
		name     string
		method   string
		target   string
		path     string // what the Checkpointer returns
		err      error  // what the Checkpointer returns
		status   int
		ctype    string
		body     string // exact, or prefix when it ends in "..."
		called   bool
		allowHdr string
	}{
		{name: "success", method: "POST", target: ok, path: archive,
			status: 200, ctype: appJSON, body: `{"items":["` + archive + `"]}`, called: true},
		{name: "success, path needing JSON escapes", method: "POST", target: ok, path: `/tmp/a"b\c.tar`,
			status: 200, ctype: appJSON, body: `{"items":["/tmp/a\"b\\c.tar"]}`, called: true},
		{name: "pod name with dots", method: "POST", target: "/checkpoint/default/web.v1/app", path: archive,
			status: 200, ctype: appJSON, body: `{"items":["` + archive + `"]}`, called: true},
		{name: "pod not found", method: "POST", target: ok, err: wrapped(runtime.ErrPodNotFound),
			status: 404, ctype: textPlain, body: "pod does not exist", called: true},
		{name: "container not found", method: "POST", target: ok, err: wrapped(runtime.ErrContainerNotFound),
			status: 404, ctype: textPlain, body: "container app does not exist", called: true},
		{name: "invalid", method: "POST", target: ok, err: wrapped(runtime.ErrInvalid),
			status: 400, ctype: textPlain, body: "checkpoint container default/web/app: invalid argument", called: true},
		{name: "timeout", method: "POST", target: ok, err: wrapped(runtime.ErrTimeout),
			status: 500, ctype: textPlain, body: "checkpointing of default/web/app failed (checkpoint container default/web/app: timed out)", called: true},
		{name: "deadline", method: "POST", target: ok, err: context.DeadlineExceeded,
			status: 500, ctype: textPlain, body: "checkpointing of default/web/app failed (context deadline exceeded)", called: true},
		{name: "unsupported", method: "POST", target: ok, err: wrapped(runtime.ErrUnsupported),
			status: 500, ctype: textPlain, body: "checkpointing of default/web/app failed (checkpoint container default/web/app: operation not supported by the runtime)", called: true},
		{name: "unavailable", method: "POST", target: ok, err: wrapped(runtime.ErrUnavailable),
			status: 500, ctype: textPlain, body: "checkpointing of default/web/app failed (checkpoint container default/web/app: runtime unavailable)", called: true},
		{name: "busy", method: "POST", target: ok, err: wrapped(runtime.ErrBusy),
			status: 500, ctype: textPlain, body: "checkpointing of default/web/app failed (checkpoint container default/web/app: container is busy)", called: true},
		{name: "not running", method: "POST", target: ok, err: wrapped(runtime.ErrNotRunning),
			status: 500, ctype: textPlain, body: "checkpointing of default/web/app failed (checkpoint container default/web/app: container is not running)", called: true},
		{name: "other error", method: "POST", target: ok, err: errors.New("criu: dump failed"),
			status: 500, ctype: textPlain, body: "checkpointing of default/web/app failed (criu: dump failed)", called: true},
		{name: "relative archive path", method: "POST", target: ok, path: "x.tar",
			status: 500, ctype: textPlain, body: `checkpointing of default/web/app failed (archive path "x.tar" is not absolute)`, called: true},
		{name: "bad namespace", method: "POST", target: "/checkpoint/Default/web/app",
			status: 400, ctype: textPlain, body: `invalid namespace "Default": a lowercase RFC 1123 label must consist of...`},
		{name: "namespace with dots", method: "POST", target: "/checkpoint/a.b/web/app",
			status: 400, ctype: textPlain, body: `invalid namespace "a.b": ...`},
		{name: "bad pod", method: "POST", target: "/checkpoint/default/web_1/app",
			status: 400, ctype: textPlain, body: `invalid pod name "web_1": a lowercase RFC 1123 subdomain must consist of...`},
		{name: "bad container", method: "POST", target: "/checkpoint/default/web/app.1",
			status: 400, ctype: textPlain, body: `invalid container name "app.1": must not contain dots`},
		{name: "too long container", method: "POST", target: "/checkpoint/default/web/" + strings.Repeat("a", 64),
			status: 400, ctype: textPlain, body: `invalid container name "aaaa...`},
		{name: "escaped slash in segment", method: "POST", target: "/checkpoint/default/we%2Fb/app",
			status: 400, ctype: textPlain, body: `invalid pod name "we/b": ...`},
		{name: "negative timeout", method: "POST", target: ok + "?timeout=-1",
			status: 400, ctype: textPlain, body: `invalid timeout "-1": must be a whole number of seconds...`},
		{name: "malformed query", method: "POST", target: ok + "?timeout=1;x=2",
			status: 400, ctype: textPlain, body: `invalid query: ...`},
		{name: "missing segment", method: "POST", target: "/checkpoint/default/web",
			status: 404, ctype: textPlain, body: "404 page not found"},
		{name: "extra segment", method: "POST", target: ok + "/x",
			status: 404, ctype: textPlain, body: "404 page not found"},
		// The kubelet's go-restful route ignores one trailing slash.
		{name: "trailing slash", method: "POST", target: ok + "/", path: archive,
			status: 200, ctype: appJSON, body: `{"items":["` + archive + `"]}`, called: true},
		{name: "two trailing slashes", method: "POST", target: ok + "//",
			status: 404, ctype: textPlain, body: "404 page not found"},
		{name: "trailing slash on the route root", method: "POST", target: "/checkpoint/",
			status: 404, ctype: textPlain, body: "404 page not found"},
		{name: "empty segment", method: "POST", target: "/checkpoint/default//app",
			status: 404, ctype: textPlain, body: "404 page not found"},
		{name: "dot-dot segment", method: "POST", target: "/checkpoint/default/x/../web/app",
			status: 404, ctype: textPlain, body: "404 page not found"},
		{name: "bare prefix", method: "POST", target: "/checkpoint",
			status: 404, ctype: textPlain, body: "404 page not found"},
		{name: "unknown path", method: "GET", target: "/pods",
			status: 404, ctype: textPlain, body: "404 page not found"},
		{name: "GET checkpoint", method: "GET", target: ok,
			status: 405, ctype: textPlain, body: "405: Method Not Allowed", allowHdr: "POST"},
		{name: "DELETE checkpoint", method: "DELETE", target: ok,
			status: 405, ctype: textPlain, body: "405: Method Not Allowed", allowHdr: "POST"},
		{name: "POST healthz", method: "POST", target: "/healthz",
			status: 405, ctype: textPlain, body: "405: Method Not Allowed", allowHdr: "GET, HEAD"},
		{name: "healthz", method: "GET", target: "/healthz",
			status: 200, ctype: textPlain, body: "ok"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fc := &fakeCheckpointer{path: c.path, err: c.err}
			h := New(Options{CheckpointEnabled: true, Registry: prometheus.NewRegistry()}, fc, &passGuard{}, nil)
			resp := serve(h, c.method, c.target)
			got := body(t, resp)
			if resp.StatusCode != c.status {
				t.Errorf("status = %d, want %d (body %q)", resp.StatusCode, c.status, got)
			}
			if ct := resp.Header.Get("Content-Type"); ct != c.ctype {
				t.Errorf("Content-Type = %q, want %q", ct, c.ctype)
			}
			if prefix, ok := strings.CutSuffix(c.body, "..."); ok {
				if !strings.HasPrefix(got, prefix) {
					t.Errorf("body = %q, want prefix %q", got, prefix)
				}
			} else if got != c.body {
				t.Errorf("body = %q, want %q", got, c.body)
			}
			if (fc.calls > 0) != c.called {
				t.Errorf("checkpointer called %d times, want called=%v", fc.calls, c.called)
			}
			if a := resp.Header.Get("Allow"); a != c.allowHdr {
				t.Errorf("Allow = %q, want %q", a, c.allowHdr)
			}
			if resp.Header.Get("X-Content-Type-Options") != "nosniff" {
				t.Error("missing X-Content-Type-Options: nosniff")
			}
		})
	}
}

func TestCheckpointRef(t *testing.T) {
	fc := &fakeCheckpointer{path: archive}
	h := New(Options{CheckpointEnabled: true}, fc, &passGuard{}, nil)
	serve(h, "POST", "/checkpoint/kube-system/etcd-node1.example/etcd")
	want := runtime.Ref{Namespace: "kube-system", Pod: "etcd-node1.example", Container: "etcd"}
	if fc.ref != want {
		t.Fatalf("ref = %+v, want %+v", fc.ref, want)
	}
}

func TestTimeoutReachesCheckpointer(t *testing.T) {
	cases := []struct {
		query string
		def   time.Duration
		want  time.Duration
	}{
		{"", 0, DefaultTimeout}, // Options without a default get the kubelet's 2m
		{"", 45 * time.Second, 45 * time.Second},
		{"?timeout=0", 45 * time.Second, 45 * time.Second},
		{"?timeout=5", 45 * time.Second, 5 * time.Second},
		{"?timeout=5&timeout=7", 45 * time.Second, 7 * time.Second},
		{"?timeout=abc&timeout=7", 45 * time.Second, 7 * time.Second}, // only the last value counts
		{"?other=1", 45 * time.Second, 45 * time.Second},
	}
	for _, c := range cases {
		fc := &fakeCheckpointer{path: archive}
		h := New(Options{CheckpointEnabled: true, DefaultTimeout: c.def}, fc, &passGuard{}, nil)
		resp := serve(h, "POST", "/checkpoint/default/web/app"+c.query)
		if resp.StatusCode != 200 {
			t.Errorf("%q: status %d", c.query, resp.StatusCode)
			continue
		}
		if fc.timeout != c.want {
			t.Errorf("%q (default %v): checkpointer got %v, want %v", c.query, c.def, fc.timeout, c.want)
		}
	}
}

func TestTCPEstablishedReachesCheckpointer(t *testing.T) {
	cases := []struct {
		query  string
		status int
		want   bool
	}{
		{"", 200, false},
		{"?tcpEstablished=true", 200, true},
		{"?tcpEstablished=1", 200, true},
		{"?tcpEstablished=false", 200, false},
		{"?tcpEstablished=true&tcpEstablished=false", 200, false}, // the last value wins
		{"?tcpEstablished=yes", 400, false},
		{"?tcpEstablished=", 400, false},
	}
	for _, c := range cases {
		fc := &fakeCheckpointer{path: archive}
		h := New(Options{CheckpointEnabled: true}, fc, &passGuard{}, nil)
		resp := serve(h, "POST", "/checkpoint/default/web/app"+c.query)
		if resp.StatusCode != c.status {
			t.Errorf("%q: status %d, want %d", c.query, resp.StatusCode, c.status)
			continue
		}
		if c.status == 200 && fc.tcp != c.want {
			t.Errorf("%q: checkpointer got tcpEstablished=%v, want %v", c.query, fc.tcp, c.want)
		}
		if c.status != 200 && fc.calls != 0 {
			t.Errorf("%q: a bad value still reached the checkpointer", c.query)
		}
	}
}

func TestParseTimeout(t *testing.T) {
	const def = 2 * time.Minute
	cases := []struct {
		name    string
		values  []string
		want    time.Duration
		wantErr string
	}{
		{"absent", nil, def, ""},
		{"zero", []string{"0"}, def, ""},
		{"five", []string{"5"}, 5 * time.Second, ""},
		{"plus sign", []string{"+5"}, 5 * time.Second, ""},
		{"repeated, last wins", []string{"5", "9"}, 9 * time.Second, ""},
		{"repeated, last is zero", []string{"5", "0"}, def, ""},
		{"repeated, last is bad", []string{"5", "x"}, 0, `"x"`},
		{"negative", []string{"-1"}, 0, `"-1"`},
		{"fraction", []string{"1.5"}, 0, `"1.5"`},
		{"word", []string{"abc"}, 0, `"abc"`},
		{"empty", []string{""}, 0, `""`},
		{"unit", []string{"5s"}, 0, `"5s"`},
		{"space", []string{" 5"}, 0, `" 5"`},
		{"largest", []string{fmt.Sprint(maxTimeoutSeconds)}, time.Duration(maxTimeoutSeconds) * time.Second, ""},
		{"duration overflow", []string{fmt.Sprint(maxTimeoutSeconds + 1)}, 0, fmt.Sprintf("%q", fmt.Sprint(maxTimeoutSeconds+1))},
		{"int64 overflow", []string{"99999999999999999999"}, 0, `"99999999999999999999"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := parseTimeout(c.values, def)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err = %v, want one naming %s", err, c.wantErr)
				}
				return
			}
			if err != nil || got != c.want {
				t.Fatalf("= %v, %v; want %v", got, err, c.want)
			}
		})
	}
}

func TestFeatureGateOff(t *testing.T) {
	fc := &fakeCheckpointer{path: archive}
	g := &passGuard{}
	h := New(Options{CheckpointEnabled: false}, fc, g, nil)
	for _, m := range []string{"POST", "GET"} {
		resp := serve(h, m, "/checkpoint/default/web/app")
		if got := body(t, resp); resp.StatusCode != 404 || got != "404 page not found" {
			t.Errorf("%s with gate off: %d %q, want 404", m, resp.StatusCode, got)
		}
	}
	if fc.calls != 0 {
		t.Error("checkpointer called with the gate off")
	}
	if got := g.seen["/checkpoint/default/web/app"]; got != "|checkpoint" {
		t.Errorf("gate-off 404 authorized as %q, want subresource checkpoint", got)
	}
}

func TestFeatureGate(t *testing.T) {
	fg := NewFeatureGate()
	if !fg.Enabled(ContainerCheckpoint) {
		t.Fatal("ContainerCheckpoint must default to on")
	}
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	fg.AddFlag(fs)
	if err := fs.Parse([]string{"--feature-gates=ContainerCheckpoint=false"}); err != nil {
		t.Fatal(err)
	}
	if fg.Enabled(ContainerCheckpoint) {
		t.Fatal("--feature-gates=ContainerCheckpoint=false did not turn it off")
	}
	if err := NewFeatureGate().Set("NoSuchGate=true"); err == nil {
		t.Fatal("unknown gate accepted")
	}
}

func TestGuardSubresources(t *testing.T) {
	g := &passGuard{}
	h := New(Options{CheckpointEnabled: true, Registry: prometheus.NewRegistry()}, &fakeCheckpointer{path: archive}, g, nil)
	want := map[string]string{
		"/checkpoint/default/web/app": "checkpoint",
		"/metrics":                    "metrics",
		"/healthz":                    "healthz",
		"/healthz/ping":               "healthz",
		"/pods":                       "proxy",
		"/metrics/cadvisor":           "metrics",
	}
	for p, sub := range want {
		method := "GET"
		if strings.HasPrefix(p, "/checkpoint/") {
			method = "POST"
		}
		serve(h, method, p)
		if got := g.seen[p]; got != "|"+sub {
			t.Errorf("%s authorized as %q, want verb from method and subresource %q", p, got, sub)
		}
	}
}

func TestGuardRunsFirst(t *testing.T) {
	fc := &fakeCheckpointer{path: archive}
	h := New(Options{CheckpointEnabled: true}, fc, denyGuard{}, nil)
	for _, c := range []struct{ method, target string }{
		{"POST", "/checkpoint/default/web/app"},
		{"GET", "/checkpoint/default/web/app"}, // would be 405
		{"POST", "/checkpoint/BAD/web/app"},    // would be 400
		{"POST", "/checkpoint/default//app"},   // would be 404
		{"GET", "/nothing"},                    // would be 404
		{"GET", "/metrics"}, {"GET", "/healthz"},
	} {
		if resp := serve(h, c.method, c.target); resp.StatusCode != 401 {
			t.Errorf("%s %s: %d, want 401 before anything else", c.method, c.target, resp.StatusCode)
		}
	}
	if fc.calls != 0 {
		t.Error("checkpointer called for an unauthenticated request")
	}
}

func TestHealthz(t *testing.T) {
	h := New(Options{}, nil, &passGuard{}, healthFunc(func(context.Context) error { return errors.New("runtime unavailable") }))
	resp := serve(h, "GET", "/healthz")
	if got := body(t, resp); resp.StatusCode != 500 || !strings.Contains(got, "runtime unavailable") {
		t.Fatalf("unhealthy: %d %q", resp.StatusCode, got)
	}
	h = New(Options{}, nil, &passGuard{}, healthFunc(func(context.Context) error { return nil }))
	if resp := serve(h, "GET", "/healthz"); resp.StatusCode != 200 || body(t, resp) != "ok" {
		t.Fatalf("healthy: %d", resp.StatusCode)
	}
	if resp := serve(h, "HEAD", "/healthz"); resp.StatusCode != 200 {
		t.Fatalf("HEAD healthz: %d", resp.StatusCode)
	}
}

func TestMetricsServesTheRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "ckpt_test_total", Help: "test"})
	reg.MustRegister(c)
	c.Add(3)
	h := New(Options{CheckpointEnabled: true, Registry: reg}, &fakeCheckpointer{path: archive}, &passGuard{}, nil)
	resp := serve(h, "GET", "/metrics")
	if text := body(t, resp); resp.StatusCode != 200 || !strings.Contains(text, "ckpt_test_total 3\n") {
		t.Fatalf("/metrics: %d\n%s", resp.StatusCode, text)
	}
}
