// Package metrics holds ckpt's Prometheus metrics for checkpoints.
//
// Archive sizes are a histogram, not a counter: its _sum is the total bytes
// written (what a counter would give) and its buckets show the spread of
// sizes, which is what capacity planning needs.
package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

const namespace = "ckpt"

// Metrics records checkpoint outcomes. A nil *Metrics records nothing.
type Metrics struct {
	duration     prometheus.Histogram
	archiveBytes prometheus.Histogram
	errors       *prometheus.CounterVec
	total        *prometheus.CounterVec
	inFlight     prometheus.Gauge
	lastFreeze   prometheus.Gauge
}

// New creates the metrics and registers them with reg (nil: not registered).
// It panics if they are already registered there, as MustRegister does.
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace,
			Name:      "checkpoint_duration_seconds",
			Help:      "Time from accepting a checkpoint request to its outcome.",
			// 50 ms to 10 min: small containers dump in well under a
			// second, multi-GiB ones take minutes.
			Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600},
		}),
		archiveBytes: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace,
			Name:      "checkpoint_archive_bytes",
			Help:      "Size of each archive written by a successful checkpoint; _sum is the total bytes written.",
			// 1 MiB, 4 MiB, ... 256 GiB.
			Buckets: prometheus.ExponentialBuckets(1<<20, 4, 10),
		}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "checkpoint_errors_total",
			Help:      "Failed checkpoints by reason.",
		}, []string{"reason"}),
		total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "checkpoints_total",
			Help:      "Checkpoints attempted, by result (success or failure).",
		}, []string{"result"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace,
			Name:      "checkpoints_in_flight",
			Help:      "Checkpoints currently running.",
		}),
		lastFreeze: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace,
			Name:      "checkpoint_last_freeze_seconds",
			Help:      "How long the container was frozen in the last successful checkpoint that reported it.",
		}),
	}
	// Both results exist from the start, so rate() works before the first failure.
	m.total.WithLabelValues("success")
	m.total.WithLabelValues("failure")
	if reg != nil {
		reg.MustRegister(m.duration, m.archiveBytes, m.errors, m.total, m.inFlight, m.lastFreeze)
	}
	return m
}

// Begin marks a checkpoint in flight; the returned func records the outcome.
// reason "" means success; any other value is the failure's reason label.
// archiveBytes and freeze are recorded only on success and when positive.
// The returned func must be called exactly once; later calls do nothing.
func (m *Metrics) Begin() (end func(archiveBytes int64, freeze time.Duration, reason string)) {
	if m == nil {
		return func(int64, time.Duration, string) {}
	}
	start := time.Now()
	m.inFlight.Inc()
	done := false
	return func(archiveBytes int64, freeze time.Duration, reason string) {
		if done {
			return
		}
		done = true
		m.inFlight.Dec()
		m.duration.Observe(time.Since(start).Seconds())
		if reason != "" {
			m.total.WithLabelValues("failure").Inc()
			m.errors.WithLabelValues(reason).Inc()
			return
		}
		m.total.WithLabelValues("success").Inc()
		if archiveBytes > 0 {
			m.archiveBytes.Observe(float64(archiveBytes))
		}
		if freeze > 0 {
			m.lastFreeze.Set(freeze.Seconds())
		}
	}
}
