package server

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"time"
)

// observe wraps the API with the access log and the request metrics.
func (s *server) observe(next http.Handler) http.Handler {
	if s.opts.AccessLog == nil && s.opts.Requests == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		root := pathRoot(r.URL.Path)
		end := func(int) {}
		if s.opts.Requests != nil {
			end = s.opts.Requests.Begin(r.Method, root)
		}
		// The Guard puts the user in the request it passes on; the
		// handler below it reports the name back through this holder.
		who := &requestUser{}
		rec := &statusRecorder{ResponseWriter: w}
		next.ServeHTTP(rec, r.WithContext(context.WithValue(r.Context(), requestUserKey{}, who)))
		status := rec.status
		if status == 0 {
			status = http.StatusOK
		}
		end(status)
		if s.opts.AccessLog == nil || (s.opts.Verbosity < 2 && status < 500) {
			return
		}
		attrs := []slog.Attr{slog.String("method", r.Method), slog.String("path", r.URL.Path),
			slog.String("user", who.name), slog.Int("status", status),
			slog.Duration("duration", time.Since(start).Round(time.Microsecond))}
		if s.opts.Verbosity >= 4 {
			attrs = append(attrs, slog.String("query", r.URL.RawQuery), slog.String("remote", r.RemoteAddr),
				slog.String("userAgent", r.UserAgent()))
		}
		s.opts.AccessLog.LogAttrs(r.Context(), slog.LevelInfo, "HTTP", attrs...)
	})
}

type requestUserKey struct{}

type requestUser struct{ name string }

// noteUser records the authenticated user for the access log; it runs
// behind the Guard.
func (s *server) noteUser(next http.Handler) http.Handler {
	if s.opts.UserFrom == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if who, ok := r.Context().Value(requestUserKey{}).(*requestUser); ok {
			who.name, _ = s.opts.UserFrom(r.Context())
		}
		next.ServeHTTP(w, r)
	})
}

// pathRoot is the metrics label for a path: its first segment when it is
// one of the API's, "other" otherwise (so unknown paths cannot blow up the
// label's cardinality).
func pathRoot(p string) string {
	first, _, _ := strings.Cut(strings.TrimPrefix(p, "/"), "/")
	switch first {
	case "checkpoint", "checkpoints", "restore", "stop", "healthz", "metrics":
		return first
	}
	return "other"
}

// statusRecorder remembers the status written; it passes Flush on so
// streamed downloads still stream.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the real writer.
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }
