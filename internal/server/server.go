// Package server is ckpt's HTTP API: the kubelet's checkpoint endpoint plus
// health and metrics. It is a thin transport: it validates requests, calls
// the domain code through small interfaces, and maps typed errors to HTTP
// statuses in one place (errorResponse).
package server

import (
	"context"
	"log/slog"
	"net/http"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ckpt-dev/ckpt/internal/runtime"
)

// Checkpointer checkpoints one container and returns the absolute path of
// the archive it published. internal/checkpoint.Service implements it.
// timeout is the caller's request timeout (never zero: the server applies
// its default); the Checkpointer owns the deadline it derives from it.
type Checkpointer interface {
	Checkpoint(ctx context.Context, ref runtime.Ref, opts runtime.CheckpointOptions) (path string, err error)
}

// Guard authenticates and authorizes a request before next runs.
// internal/auth.Auth implements it. verb "" means "derive it from the HTTP
// method" (POST → create, GET → get, ...); subresource is the nodes
// subresource the kubelet would check ("checkpoint", "metrics", "proxy").
type Guard interface {
	Wrap(verb, subresource string, next http.Handler) http.Handler
}

// HealthChecker reports whether ckpt can serve. nil means always healthy.
type HealthChecker interface {
	Healthy(ctx context.Context) error
}

// RequestRecorder counts requests per path (internal/metrics.HTTP).
type RequestRecorder interface {
	Begin(method, path string) (end func(code int))
}

// Options configures New.
type Options struct {
	CheckpointEnabled bool          // feature gate ContainerCheckpoint (default true)
	DefaultTimeout    time.Duration // --runtime-request-timeout (default 2m)
	// Registry is served on /metrics; nil = prometheus.DefaultGatherer. The
	// checkpoint service records the checkpoint metrics in it.
	Registry prometheus.Gatherer
	// Requests records every request by method and path root; nil = none.
	Requests RequestRecorder
	// AccessLog gets a line per request (method, path, user, status,
	// duration): at Verbosity >= 2 every request (the kubelet's -v 2), at
	// Verbosity 0 and 1 only answers with status >= 500; nil = none.
	AccessLog *slog.Logger
	Verbosity int
	// UserFrom names the user the Guard authenticated, from the request
	// context (auth.UserFrom), for the access log; nil = no names.
	UserFrom func(context.Context) (string, bool)
	// Images, if set, lets POST /restore take ?image=REF: a checkpoint
	// image in the local store, or pulled from its registry.
	Images ImageArchives
}

// DefaultTimeout is the kubelet's default runtime request timeout.
const DefaultTimeout = 2 * time.Minute

// route is one entry of the API. pattern is an http.ServeMux pattern
// without a method; methods maps each allowed method to its handler, and
// every other method gets 405 with an Allow header.
type route struct {
	pattern     string
	subresource string // for the Guard
	methods     map[string]http.HandlerFunc
	verb        string // for the Guard; "" = from the HTTP method
}

type server struct {
	opts Options
	c    Checkpointer
	h    HealthChecker
	a    Archives
}

// New returns the API handler. g must not be nil (use a pass-through Guard
// only in tests or behind another authenticating layer).
func New(opts Options, c Checkpointer, g Guard, h HealthChecker) http.Handler {
	return NewWithArchives(opts, c, nil, g, h)
}

// NewWithArchives is New plus the archive management and restore routes
// (absent when a is nil).
func NewWithArchives(opts Options, c Checkpointer, a Archives, g Guard, h HealthChecker) http.Handler {
	if opts.DefaultTimeout <= 0 {
		opts.DefaultTimeout = DefaultTimeout
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.DefaultGatherer
	}
	s := &server{opts: opts, c: c, h: h, a: a}

	// The route table: one entry per path pattern, its methods, and what
	// the Guard authorizes it as.
	routes := []route{
		// The kubelet authorizes /healthz as nodes/healthz (falling back to
		// nodes/proxy; see auth.Subresources).
		{pattern: "/healthz", subresource: "healthz", methods: map[string]http.HandlerFunc{http.MethodGet: s.healthz}},
		{pattern: "/metrics", subresource: "metrics", methods: map[string]http.HandlerFunc{
			http.MethodGet: promhttp.HandlerFor(opts.Registry, promhttp.HandlerOpts{}).ServeHTTP,
		}},
	}
	// Feature gate off: the route does not exist, so it is a 404 like any
	// unknown path, as in the kubelet.
	if opts.CheckpointEnabled && c != nil {
		routes = append(routes, route{pattern: "/checkpoint/{ns}/{pod}/{ctr}", subresource: "checkpoint",
			methods: map[string]http.HandlerFunc{http.MethodPost: s.checkpoint}})
		if _, ok := c.(PodCheckpointer); ok {
			routes = append(routes, route{pattern: "/checkpoint/{ns}/{pod}", subresource: "checkpoint",
				methods: map[string]http.HandlerFunc{http.MethodPost: s.checkpoint}})
		}
	}

	if a != nil {
		routes = append(routes,
			route{pattern: "/checkpoints", subresource: "checkpoint", verb: "list",
				methods: map[string]http.HandlerFunc{http.MethodGet: s.listArchives}},
			route{pattern: "/checkpoints/{file}", subresource: "checkpoint",
				methods: map[string]http.HandlerFunc{http.MethodGet: s.downloadArchive, http.MethodDelete: s.deleteArchive}},
			route{pattern: "/restore/{ns}/{pod}/{ctr}", subresource: "restore",
				methods: map[string]http.HandlerFunc{http.MethodPost: s.restore}},
			route{pattern: "/stop/{ns}/{pod}/{ctr}", subresource: "stop",
				methods: map[string]http.HandlerFunc{http.MethodPost: s.stop}},
		)
		if _, ok := a.(PodArchives); ok {
			routes = append(routes, route{pattern: "/restore/{ns}/{pod}", subresource: "restore",
				methods: map[string]http.HandlerFunc{http.MethodPost: s.restorePod}})
		}
	}

	mux := http.NewServeMux()
	for _, r := range routes {
		mux.Handle(r.pattern, g.Wrap(r.verb, r.subresource, s.noteUser(methodHandler(r.methods))))
	}
	// Unknown paths are authorized too (as the kubelet's filter does for
	// every path) so that they reveal nothing to anonymous callers.
	notFound := map[string]http.Handler{}
	for _, sub := range []string{"checkpoint", "restore", "stop", "metrics", "healthz", "proxy"} {
		notFound[sub] = g.Wrap("", sub, s.noteUser(http.HandlerFunc(writeNotFound)))
	}
	unknown := func(w http.ResponseWriter, r *http.Request) {
		notFound[subresourceOf(r.URL.Path)].ServeHTTP(w, r)
	}
	mux.HandleFunc("/", unknown)

	api := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Content-Type-Options", "nosniff")
		// The kubelet's go-restful routes ignore one trailing slash:
		// POST /checkpoint/ns/pod/ctr/ checkpoints ctr. So does ckpt, on
		// the same routes (and its own restful ones).
		if p, ok := trimRouteSlash(r.URL.Path); ok {
			r = r.Clone(r.Context())
			r.URL.Path, r.URL.RawPath = p, ""
		}
		// ServeMux answers unclean paths ("//", "/./", "/../") with a
		// redirect to another path; a POST must never be redirected to
		// some other container: 404.
		if !isClean(r.URL.Path) {
			unknown(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
	return s.observe(api)
}

// trimRouteSlash drops one trailing slash from a path under the restful
// routes (/checkpoint/, /checkpoints, /restore/, /stop/).
func trimRouteSlash(p string) (string, bool) {
	if len(p) < 2 || !strings.HasSuffix(p, "/") {
		return p, false
	}
	t := p[:len(p)-1]
	switch subresourceOf(t) {
	case "checkpoint", "restore", "stop":
		if t != "/checkpoint" && t != "/restore" && t != "/stop" {
			return t, true
		}
	}
	return p, false
}

// methodHandler dispatches on the method and answers 405 otherwise.
// GET routes also answer HEAD.
func methodHandler(methods map[string]http.HandlerFunc) http.Handler {
	var allow []string
	for m := range methods {
		allow = append(allow, m)
		if m == http.MethodGet {
			allow = append(allow, http.MethodHead)
		}
	}
	slices.Sort(allow)
	allowHeader := strings.Join(allow, ", ")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m := r.Method
		if m == http.MethodHead {
			m = http.MethodGet
		}
		if h, ok := methods[m]; ok {
			h(w, r)
			return
		}
		w.Header().Set("Allow", allowHeader)
		writeText(w, http.StatusMethodNotAllowed, "405: Method Not Allowed") // go-restful's text
	})
}

// subresourceOf names the kubelet's nodes subresource for a path, the way
// the kubelet authorizes requests: by path prefix.
func subresourceOf(p string) string {
	switch {
	case p == "/checkpoint" || strings.HasPrefix(p, "/checkpoint/"),
		p == "/checkpoints" || strings.HasPrefix(p, "/checkpoints/"):
		return "checkpoint"
	case p == "/restore" || strings.HasPrefix(p, "/restore/"):
		return "restore"
	case p == "/stop" || strings.HasPrefix(p, "/stop/"):
		return "stop"
	case p == "/metrics" || strings.HasPrefix(p, "/metrics/"):
		return "metrics"
	case p == "/healthz" || strings.HasPrefix(p, "/healthz/"):
		return "healthz"
	}
	return "proxy"
}

func isClean(p string) bool {
	return p == "/" || (strings.HasPrefix(p, "/") && path.Clean(p) == p)
}

func (s *server) healthz(w http.ResponseWriter, r *http.Request) {
	if s.h != nil {
		if err := s.h.Healthy(r.Context()); err != nil {
			writeText(w, http.StatusInternalServerError, "unhealthy: "+err.Error())
			return
		}
	}
	writeText(w, http.StatusOK, "ok")
}

// writeText writes a plain-text body. The kubelet's go-restful WriteError
// sets no content type and net/http sniffs "text/plain; charset=utf-8";
// that value is set here explicitly, and the body has no trailing newline.
func writeText(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(msg))
}

func writeNotFound(w http.ResponseWriter, _ *http.Request) {
	writeText(w, http.StatusNotFound, "404 page not found")
}
