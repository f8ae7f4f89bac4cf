package metrics

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
)

// sample finds one series in what reg gathers; labels are name=value pairs.
func sample(t *testing.T, reg prometheus.Gatherer, name string, labels ...string) *dto.Metric {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			return m
		}
	}
	return nil
}

func value(t *testing.T, reg prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	m := sample(t, reg, name, labels...)
	switch {
	case m == nil:
		return -1
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	t.Fatalf("%s is not a counter or gauge", name)
	return 0
}

func TestBeginEnd(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m := New(reg)

	end := m.Begin()
	if got := value(t, reg, "ckpt_checkpoints_in_flight"); got != 1 {
		t.Fatalf("in flight during checkpoint = %v, want 1", got)
	}
	end(5<<20, 1500*time.Millisecond, "")
	end(1, time.Second, "twice") // a second call is ignored

	m.Begin()(0, 0, "timeout")
	m.Begin()(0, 0, "timeout")
	m.Begin()(7, 3*time.Second, "pod_not_found") // size and freeze of failures are ignored

	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"ckpt_checkpoints_in_flight", nil, 0},
		{"ckpt_checkpoint_last_freeze_seconds", nil, 1.5},
		{"ckpt_checkpoints_total", []string{"result", "success"}, 1},
		{"ckpt_checkpoints_total", []string{"result", "failure"}, 3},
		{"ckpt_checkpoint_errors_total", []string{"reason", "timeout"}, 2},
		{"ckpt_checkpoint_errors_total", []string{"reason", "pod_not_found"}, 1},
		{"ckpt_checkpoint_errors_total", []string{"reason", ""}, -1}, // success is no error
		{"ckpt_checkpoint_errors_total", []string{"reason", "twice"}, -1},
	} {
		if got := value(t, reg, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}

	size := sample(t, reg, "ckpt_checkpoint_archive_bytes").GetHistogram()
	if size.GetSampleCount() != 1 || size.GetSampleSum() != 5<<20 {
		t.Errorf("archive bytes count=%d sum=%v, want 1 and %d", size.GetSampleCount(), size.GetSampleSum(), 5<<20)
	}
	dur := sample(t, reg, "ckpt_checkpoint_duration_seconds").GetHistogram()
	if dur.GetSampleCount() != 4 {
		t.Errorf("duration count = %d, want 4", dur.GetSampleCount())
	}
	if b := dur.GetBucket(); len(b) == 0 || b[len(b)-1].GetUpperBound() < 600 {
		t.Errorf("duration buckets must reach 10 minutes: %v", b)
	}
}

func TestNilMetrics(t *testing.T) {
	var m *Metrics
	m.Begin()(1, time.Second, "") // must not panic
}

func TestUnregistered(t *testing.T) {
	m := New(nil)
	m.Begin()(1, 0, "")
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m.total)
	if got := value(t, reg, "ckpt_checkpoints_total", "result", "success"); got != 1 {
		t.Fatalf("success = %v, want 1", got)
	}
}

func TestHTTPMetricsPerPath(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := NewHTTP(reg)
	end := h.Begin("POST", "checkpoint")
	if got := testutil.ToFloat64(h.inFlight.WithLabelValues("POST", "checkpoint")); got != 1 {
		t.Fatalf("in flight %v, want 1", got)
	}
	end(200)
	h.Begin("POST", "checkpoint")(403)
	h.Begin("GET", "healthz")(200)
	for _, c := range []struct {
		method, path, code string
		want               float64
	}{
		{"POST", "checkpoint", "200", 1},
		{"POST", "checkpoint", "403", 1},
		{"GET", "healthz", "200", 1},
		{"GET", "checkpoint", "200", 0},
	} {
		if got := testutil.ToFloat64(h.total.WithLabelValues(c.method, c.path, c.code)); got != c.want {
			t.Errorf("%s %s %s = %v, want %v", c.method, c.path, c.code, got, c.want)
		}
	}
	if got := testutil.ToFloat64(h.inFlight.WithLabelValues("POST", "checkpoint")); got != 0 {
		t.Errorf("in flight after end %v, want 0", got)
	}
	var nilHTTP *HTTP
	nilHTTP.Begin("GET", "x")(200) // records nothing, does not panic
}

func TestFeatureGauge(t *testing.T) {
	reg := prometheus.NewRegistry()
	RegisterFeatures(reg, []Feature{{Name: "ContainerCheckpoint", Stage: "BETA", Enabled: true}, {Name: "Off", Stage: "ALPHA"}})
	want := `
# HELP kubernetes_feature_enabled Whether a feature gate is enabled (1) or not (0), by name and stage.
# TYPE kubernetes_feature_enabled gauge
kubernetes_feature_enabled{name="ContainerCheckpoint",stage="BETA"} 1
kubernetes_feature_enabled{name="Off",stage="ALPHA"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "kubernetes_feature_enabled"); err != nil {
		t.Fatal(err)
	}
}
