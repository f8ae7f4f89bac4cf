package metrics

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
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
