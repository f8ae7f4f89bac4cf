package main

import (
	"strings"
	"testing"
)

// The analysis must follow the numbers: the same run with other numbers
// says other things.
func TestAnalysisFollowsTheNumbers(t *testing.T) {
	sum := func(row string, mib int, lat float64) summary { return summary{Row: row, MiB: mib, Latency: lat} }
	for _, tc := range []struct {
		name      string
		sums      []summary
		samples   []sample
		want, not []string
	}{
		{
			name: "flat live downtime, restore within target",
			sums: []summary{sum("ml", 64, 0.20), sum("ml", 4096, 0.24), sum("mc", 64, 0.5), sum("mc", 4096, 6),
				sum("rr", 1024, 1), sum("ra", 1024, 1.1), sum("rc", 1024, 1.15)},
			want: []string{"0.200 s to 0.240 s (1.20 ×): it barely grows with memory", "grows with memory", "| 4096 | 6.000 s | 0.240 s | 0.04 × |",
				"Live downtime ≤ 1 s at 4096 MiB**: 0.240 s (yes)", "Full restore ≤ 1.2 × raw CRIU's** (the target is set at 1024 and 4096 MiB): within it, 1.15 × at 1024 MiB"},
			not: []string{"missed", "over it"},
		},
		{
			name:    "live downtime grows, restore misses",
			sums:    []summary{sum("ml", 64, 0.2), sum("ml", 1024, 0.6), sum("ml", 4096, 3), sum("rr", 1024, 1), sum("ra", 1024, 1.2), sum("rc", 1024, 2.5)},
			samples: []sample{{Row: "rc", MiB: 1024, CRIURestore: seconds(0.3)}, {Row: "rc", MiB: 1024, CRIURestore: seconds(0.5)}},
			want: []string{"(15.00 ×): it grows", "Live downtime ≤ 1 s at 4096 MiB**: 3.000 s (no). From 1024 MiB (0.600 s) it grew by 0.800 s per GiB", "over it by 2.50 × at 1024 MiB",
				"takes 17 % at 1024 MiB", "0.400 s + 2.100 s (0.48 GiB/s moved, against 1.00 GiB/s for rr's whole restore) at 1024 MiB"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := analysisText(tc.sums, tc.samples, nil, map[string]string{"cpus": "2"})
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("missing %q in:\n%s", w, got)
				}
			}
			for _, n := range tc.not {
				if strings.Contains(got, n) {
					t.Errorf("has %q:\n%s", n, got)
				}
			}
		})
	}
}

// TestFreezeSplitFollowsThePhases: the missed freeze target names the
// phase that holds most of c's extra frozen time in this run's samples.
func TestFreezeSplitFollowsThePhases(t *testing.T) {
	s := func(row string, pages, acks, scripts float64) sample {
		p := freezePhases{Pages: seconds(pages), Acks: seconds(acks), Scripts: seconds(scripts)}
		p.Frozen = p.Pages + p.Acks + p.Scripts + seconds(0.1)
		return sample{Row: row, MiB: 1024, Freeze: p.Frozen, Phases: p}
	}
	sums := []summary{{Row: "a", MiB: 1024, Latency: 1, Freeze: 1}, {Row: "c", MiB: 1024, Latency: 1.1, Freeze: 2, FreezeRatio: 2}}
	for _, tc := range []struct {
		name    string
		samples []sample
		want    string
	}{
		{"pages", []sample{s("a", 0.5, 0.1, 0), s("c", 1.4, 0.2, 0.1)}, "in the page transfers (0.90 s more)"},
		{"acks", []sample{s("a", 0.5, 0.1, 0), s("c", 0.6, 1.3, 0.1)}, "in the waits for the parasite (1.20 s more)"},
		{"none", []sample{s("c", 1, 1, 1)}, "no dump.log phases"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := analysisText(sums, tc.samples, nil, map[string]string{"cpus": "2"})
			if !strings.Contains(got, tc.want) {
				t.Errorf("missing %q in:\n%s", tc.want, got)
			}
		})
	}
}

// TestMissesAreExplained: a missed (c) ≤ 1.15 × (a) and a missed lazy
// time to running each get a line made of this run's numbers.
func TestMissesAreExplained(t *testing.T) {
	sums := []summary{
		{Row: "a", MiB: 1024, Latency: 1, Freeze: 0.5},
		{Row: "c", MiB: 1024, Latency: 1.5, LatencyRatio: 1.5, Freeze: 0.7, FreezeRatio: 1.4},
		{Row: "rl", MiB: 1024, Latency: 0.4}, {Row: "rl", MiB: 4096, Latency: 0.6},
	}
	samples := []sample{{Row: "c", MiB: 1024, Latency: seconds(1.4)}, {Row: "c", MiB: 1024, Latency: seconds(1.6)},
		{Row: "rl", MiB: 4096, Latency: seconds(0.45)}, {Row: "rl", MiB: 4096, Latency: seconds(0.75)}}
	got := analysisText(sums, samples, nil, map[string]string{"cpus": "2"})
	for _, w := range []string{
		"(c) ≤ 1.15 × (a) at 1024 MiB: missed** (1.50 ×, 0.500 s more; c took 1.40–1.60 s over 2 runs): 0.200 s of the",
		"The target (≤ 0.5 s at 4096 MiB) is missed: 0.600 s at 4096 MiB, 0.200 s more than at 1024 MiB",
		"spread over 0.450–0.750 s", "the runs' spread is larger than the growth",
	} {
		if !strings.Contains(got, w) {
			t.Errorf("missing %q in:\n%s", w, got)
		}
	}
}
