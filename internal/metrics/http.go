package metrics

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// HTTP records requests per path, like the kubelet's
// kubelet_http_requests_total and kubelet_http_requests_duration_seconds
// (path is the route's root, "checkpoint", "healthz", ...). A nil *HTTP
// records nothing.
type HTTP struct {
	total    *prometheus.CounterVec
	duration *prometheus.HistogramVec
	inFlight *prometheus.GaugeVec
}

// NewHTTP creates the request metrics and registers them with reg.
func NewHTTP(reg prometheus.Registerer) *HTTP {
	h := &HTTP{
		total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "http_requests_total",
			Help:      "HTTP requests answered, by method, path (route root) and status code.",
		}, []string{"method", "path", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace,
			Name:      "http_request_duration_seconds",
			Help:      "Time to answer an HTTP request, by method and path (route root).",
			Buckets:   []float64{0.005, 0.025, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600},
		}, []string{"method", "path"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace,
			Name:      "http_inflight_requests",
			Help:      "HTTP requests being answered, by method and path (route root).",
		}, []string{"method", "path"}),
	}
	if reg != nil {
		reg.MustRegister(h.total, h.duration, h.inFlight)
	}
	return h
}

// Begin marks a request in flight; end records its status and duration.
func (h *HTTP) Begin(method, path string) (end func(code int)) {
	if h == nil {
		return func(int) {}
	}
	start := time.Now()
	g := h.inFlight.WithLabelValues(method, path)
	g.Inc()
	return func(code int) {
		g.Dec()
		h.duration.WithLabelValues(method, path).Observe(time.Since(start).Seconds())
		h.total.WithLabelValues(method, path, strconv.Itoa(code)).Inc()
	}
}

// Feature is one feature gate as kubernetes_feature_enabled shows it.
type Feature struct {
	Name    string
	Stage   string // "ALPHA", "BETA", "" for GA, "DEPRECATED"
	Enabled bool
}

// RegisterFeatures exposes the feature gates as the gauge Kubernetes
// components export, kubernetes_feature_enabled{name, stage}: 1 on, 0 off.
func RegisterFeatures(reg prometheus.Registerer, features []Feature) {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "kubernetes_feature_enabled",
		Help: "Whether a feature gate is enabled (1) or not (0), by name and stage.",
	}, []string{"name", "stage"})
	for _, f := range features {
		v := 0.0
		if f.Enabled {
			v = 1
		}
		g.WithLabelValues(f.Name, f.Stage).Set(v)
	}
	reg.MustRegister(g)
}
