package main

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{3}, 3},
		{[]float64{3, 1, 2}, 2},
		{[]float64{4, 1, 3, 2}, 2.5},
	} {
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestSummarizeRatiosToRowA(t *testing.T) {
	s := func(row string, mib int, lat, frz float64) sample {
		return sample{Row: row, MiB: mib, Latency: seconds(lat), Freeze: seconds(frz)}
	}
	sums := summarize([]sample{
		s("a", 1024, 1, 0.5), s("a", 1024, 3, 0.7), s("a", 1024, 2, 0.6),
		s("c", 1024, 2.2, 0.6), s("c", 1024, 2.4, 0.9), s("c", 1024, 1.8, 0.3),
		s("rc", 1024, 5, 0), s("c", 64, 1, 0),
	})
	want := map[string]summary{
		"a/1024":  {Latency: 2, LatencyRatio: 1, FreezeRatio: 1},
		"c/1024":  {Latency: 2.2, LatencyRatio: 1.1, FreezeRatio: 1},
		"rc/1024": {Latency: 5}, // restores have no ratio to a checkpoint
		"c/64":    {Latency: 1}, // no row a at this size
	}
	if len(sums) != len(want) {
		t.Fatalf("got %d summaries, want %d", len(sums), len(want))
	}
	if sums[0].MiB != 64 || sums[1].Row != "a" {
		t.Errorf("order: %+v", sums)
	}
	for _, got := range sums {
		w := want[got.Row+"/"+strconv.Itoa(got.MiB)]
		if !near(got.Latency, w.Latency) || !near(got.LatencyRatio, w.LatencyRatio) || !near(got.FreezeRatio, w.FreezeRatio) {
			t.Errorf("%s at %d MiB: latency %v ratio %v freeze ratio %v, want %v %v %v", got.Row, got.MiB,
				got.Latency, got.LatencyRatio, got.FreezeRatio, w.Latency, w.LatencyRatio, w.FreezeRatio)
		}
	}
}

func near(a, b float64) bool { return a-b < 1e-9 && b-a < 1e-9 }

// TestChartOfOneSize: a run of one size (one point per row) still draws.
func TestChartOfOneSize(t *testing.T) {
	path := filepath.Join(t.TempDir(), "chart.png")
	if err := writeChart(path, []summary{{Row: "ml", MiB: 4096, Latency: 0.98}}); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(path); err != nil || st.Size() == 0 {
		t.Fatalf("no chart: %v", err)
	}
}
