package main

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"image/color"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// summary is the median of one row at one size.
type summary struct {
	Row                       string
	MiB                       int
	N                         int
	Latency, Freeze           float64 // seconds
	Size, RSS                 float64 // bytes
	LatencyRatio, FreezeRatio float64 // to row a at the same size (0: unknown)
}

func summarize(samples []sample) []summary {
	type key struct {
		row string
		mib int
	}
	groups := map[key][]sample{}
	for _, s := range samples {
		k := key{s.Row, s.MiB}
		groups[k] = append(groups[k], s)
	}
	var out []summary
	for k, g := range groups {
		var lat, frz, size, rss []float64
		for _, s := range g {
			lat = append(lat, s.Latency.Seconds())
			if s.Freeze > 0 {
				frz = append(frz, s.Freeze.Seconds())
			}
			size = append(size, float64(s.Size))
			rss = append(rss, float64(s.RSS))
		}
		out = append(out, summary{Row: k.row, MiB: k.mib, N: len(g), Latency: median(lat), Freeze: median(frz), Size: median(size), RSS: median(rss)})
	}
	base := map[int]summary{}
	for _, s := range out {
		if s.Row == "a" {
			base[s.MiB] = s
		}
	}
	for i, s := range out {
		if b, ok := base[s.MiB]; ok && !strings.HasPrefix(s.Row, "r") && !strings.HasPrefix(s.Row, "m") {
			if b.Latency > 0 {
				out[i].LatencyRatio = s.Latency / b.Latency
			}
			if b.Freeze > 0 && s.Freeze > 0 {
				out[i].FreezeRatio = s.Freeze / b.Freeze
			}
		}
	}
	order := map[string]int{}
	for i, r := range rowInfo {
		order[r.id] = i
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].MiB != out[j].MiB {
			return out[i].MiB < out[j].MiB
		}
		return order[out[i].Row] < order[out[j].Row]
	})
	return out
}

func writeResults(o options, e *env, samples []sample, par *parallelResult, started time.Time) error {
	if len(samples) == 0 {
		return nil
	}
	sums := summarize(samples)
	if err := writeCSV(filepath.Join(o.out, "samples.csv"), samples); err != nil {
		return err
	}
	if err := writeSummaryCSV(filepath.Join(o.out, "summary.csv"), sums); err != nil {
		return err
	}
	if err := writeChart(filepath.Join(o.out, "time-vs-memory.png"), sums); err != nil {
		return err
	}
	if err := writeState(o.out, e, par, started); err != nil {
		return err
	}
	return os.WriteFile(o.doc, []byte(markdown(o, e, sums, samples, par, started)), 0o644)
}

func writeCSV(path string, samples []sample) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	w := csv.NewWriter(f)
	w.Write([]string{"row", "name", "mib", "run", "latency_s", "freeze_s", "size_bytes", "agent_peak_rss_bytes",
		"frozen_pages_s", "frozen_acks_s", "frozen_scripts_s", "criu_restore_s"})
	for _, s := range samples {
		w.Write([]string{s.Row, rowName(s.Row), strconv.Itoa(s.MiB), strconv.Itoa(s.Run),
			fmt.Sprintf("%.4f", s.Latency.Seconds()), fmt.Sprintf("%.4f", s.Freeze.Seconds()),
			strconv.FormatInt(s.Size, 10), strconv.FormatInt(s.RSS, 10),
			fmt.Sprintf("%.4f", s.Phases.Pages.Seconds()), fmt.Sprintf("%.4f", s.Phases.Acks.Seconds()), fmt.Sprintf("%.4f", s.Phases.Scripts.Seconds()),
			fmt.Sprintf("%.4f", s.CRIURestore.Seconds())})
	}
	w.Flush()
	if err := w.Error(); err != nil {
		return err
	}
	return f.Close()
}

func writeSummaryCSV(path string, sums []summary) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	w := csv.NewWriter(f)
	w.Write([]string{"row", "name", "mib", "runs", "median_latency_s", "latency_ratio_to_a", "median_freeze_s", "freeze_ratio_to_a", "median_size_bytes", "median_agent_peak_rss_bytes"})
	for _, s := range sums {
		w.Write([]string{s.Row, rowName(s.Row), strconv.Itoa(s.MiB), strconv.Itoa(s.N),
			fmt.Sprintf("%.4f", s.Latency), ratio(s.LatencyRatio), fmt.Sprintf("%.4f", s.Freeze), ratio(s.FreezeRatio),
			fmt.Sprintf("%.0f", s.Size), fmt.Sprintf("%.0f", s.RSS)})
	}
	w.Flush()
	if err := w.Error(); err != nil {
		return err
	}
	return f.Close()
}

func ratio(r float64) string {
	if r == 0 {
		return ""
	}
	return fmt.Sprintf("%.2f", r)
}

// writeChart draws median latency against memory size, one line per row,
// on log-log axes.
func writeChart(path string, sums []summary) error {
	p := plot.New()
	p.Title.Text = "checkpoint / restore time against container memory (medians)"
	p.X.Label.Text = "container memory (MiB)"
	p.Y.Label.Text = "end-to-end time (s)"
	p.X.Scale, p.Y.Scale = plot.LogScale{}, plot.LogScale{}
	var xt []plot.Tick
	for _, s := range sums {
		if len(xt) == 0 || xt[len(xt)-1].Value != float64(s.MiB) {
			xt = append(xt, plot.Tick{Value: float64(s.MiB), Label: strconv.Itoa(s.MiB)})
		}
	}
	var yt []plot.Tick
	for _, v := range []float64{0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100} {
		yt = append(yt, plot.Tick{Value: v, Label: strconv.FormatFloat(v, 'g', -1, 64)})
	}
	p.X.Tick.Marker, p.Y.Tick.Marker = plot.ConstantTicks(xt), plot.ConstantTicks(yt)
	p.Legend.Top, p.Legend.Left = true, true
	p.Add(plotter.NewGrid())
	i := 0
	for _, r := range rowInfo {
		var pts plotter.XYs
		for _, s := range sums {
			if s.Row == r.id && s.Latency > 0 {
				pts = append(pts, plotter.XY{X: float64(s.MiB), Y: s.Latency})
			}
		}
		if len(pts) == 0 {
			continue
		}
		l, sc, err := plotter.NewLinePoints(pts)
		if err != nil {
			return err
		}
		l.Color = plotutil.Color(i)
		l.Dashes = plotutil.Dashes(i / 7)
		if strings.HasPrefix(r.id, "r") {
			l.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
		}
		sc.Color, sc.Shape = plotutil.Color(i), plotutil.Shape(i)
		if r.id == "c" {
			l.Width = vg.Points(2.5)
			l.Color = color.RGBA{R: 200, A: 255}
			sc.Color = l.Color
		}
		p.Add(l, sc)
		p.Legend.Add(r.id+": "+r.name, l, sc)
		i++
	}
	// A log axis needs a positive range that is not a single point (a run
	// of one size, or of one row).
	for _, a := range []*plot.Axis{&p.X, &p.Y} {
		if a.Min <= 0 || a.Min == a.Max {
			a.Min, a.Max = max(a.Max, 1e-3)/2, max(a.Max, 1e-3)*2
		}
	}
	return p.Save(10*vg.Inch, 6.5*vg.Inch, path)
}

func markdown(o options, e *env, sums []summary, samples []sample, par *parallelResult, started time.Time) string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	w("# Benchmarks\n\n")
	w("Written by `make bench` (bench/cmd/ckptbench) on %s. Raw data: `bench/results/samples.csv`,\n", started.UTC().Format("2006-01-02 15:04 MST"))
	w("medians: `bench/results/summary.csv`, chart: `bench/results/time-vs-memory.png`.\n\n")
	w("![time against memory](../bench/results/time-vs-memory.png)\n\n")
	w("## Machine and versions\n\n| | |\n|---|---|\n")
	keys := make([]string, 0, len(e.versions))
	for k := range e.versions {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		w("| %s | %s |\n", k, strings.ReplaceAll(e.versions[k], "|", "/"))
	}
	w("\n## How it is measured\n\n")
	w("Each size runs the counter example with `COUNTER_MEM_MIB` MiB of touched, non-zero memory (same image in every\n")
	w("runtime). The rows run in groups that share one container, one group at a time, so that only that group's containers\n")
	w("hold memory: %s. Within a group every row gets one discarded warm-up run, then the rows take turns (a b c ... a b c ...), %d measured\n", groupList(e), o.runs)
	w("runs each; the tables show medians. Durable against durable: row a fsyncs every image file, row b fsyncs its tar,\n")
	w("ckpt fsyncs its archive before answering (it streams write-back with sync_file_range while hashing). containerd and\n")
	w("Podman are timed as they are (they do not fsync their exports). The freeze time is CRIU's `frozen_time` from\n")
	w("`stats-dump`. RSS is the peak RSS (VmHWM, reset before each request) of the `ckpt serve` process that handled it.\n")
	w("Rows a and c both remove what their previous run wrote before they write again, so both write into memory just\n")
	w("freed: memory the VM took back is slow on first touch, and a row that wrote first and freed after ran on cold\n")
	w("pages, which was part of the freeze variance of earlier runs.\n\n")
	w("Rows: ")
	for i, r := range rowInfo {
		if i > 0 {
			w(", ")
		}
		w("**%s** %s", r.id, r.name)
	}
	w(".\n\n## Results (medians)\n\n")
	w("| MiB | row | time (s) | × a | frozen (s) | × a frozen | archive (MiB) | agent RSS (MiB) | runs |\n")
	w("|---:|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, s := range sums {
		rss := ""
		if s.RSS > 0 {
			rss = fmt.Sprintf("%.0f", s.RSS/(1<<20))
		}
		frz := ""
		if s.Freeze > 0 {
			frz = fmt.Sprintf("%.3f", s.Freeze)
		}
		size := ""
		if s.Size > 0 {
			size = fmt.Sprintf("%.0f", s.Size/(1<<20))
		}
		w("| %d | %s %s | %.3f | %s | %s | %s | %s | %s | %d |\n", s.MiB, s.Row, rowName(s.Row), s.Latency, ratio(s.LatencyRatio), frz, ratio(s.FreezeRatio), size, rss, s.N)
	}
	if par != nil && len(par.Parallel) > 0 {
		sq, pl := median(par.Sequential), median(par.Parallel)
		w("\n## Parallel checkpoints\n\n%d containers of %d MiB through the embedded agent: one after another %.3f s, all at once %.3f s (%.2f × sequential).\n",
			par.N, par.MiB, sq, pl, pl/sq)
	}
	w("\n## Targets\n\n")
	w("| target | measured | met |\n|---|---|---|\n")
	get := func(row string, mib int) (summary, bool) {
		for _, s := range sums {
			if s.Row == row && s.MiB == mib {
				return s, true
			}
		}
		return summary{}, false
	}
	for _, mib := range []int{1024, 4096} {
		if c, ok := get("c", mib); ok && c.LatencyRatio > 0 {
			w("| (c) ≤ 1.15 × (a) at %d MiB | %.2f × | %s |\n", mib, c.LatencyRatio, met(c.LatencyRatio <= 1.15))
		}
		if c, ok := get("c", mib); ok && c.FreezeRatio > 0 {
			w("| freeze ≤ 1.05 × raw CRIU's at %d MiB | %.2f × | %s |\n", mib, c.FreezeRatio, met(c.FreezeRatio <= 1.05))
		}
	}
	if c, ok := get("c", 1024); ok {
		if f, ok := get("f", 1024); ok && f.Latency > 0 {
			r := c.Latency / f.Latency
			w("| (c) ≤ 0.5 × Podman at 1024 MiB | %.2f × | %s |\n", r, met(r <= 0.5))
		}
	}
	for _, mib := range o.sizes {
		d, ok1 := get("d", mib)
		ee, ok2 := get("e", mib)
		if ok1 && ok2 && ee.Latency > 0 {
			r := d.Latency / ee.Latency
			w("| (d) ≤ 1.05 × (e) at %d MiB | %.2f × | %s |\n", mib, r, met(r <= 1.05))
		}
	}
	if c, ok := get("c", 4096); ok && c.RSS > 0 {
		w("| agent RSS < 64 MiB checkpointing 4096 MiB | %.0f MiB | %s |\n", c.RSS/(1<<20), met(c.RSS < 64<<20))
	}
	for _, mib := range []int{1024, 4096} {
		rc, ok1 := get("rc", mib)
		ra, ok2 := get("ra", mib)
		if ok1 && ok2 && ra.Latency > 0 {
			r := rc.Latency / ra.Latency
			w("| full restore (rc) ≤ 1.2 × runc restore of a dir (ra) at %d MiB | %.2f × | %s |\n", mib, r, met(r <= 1.2))
		}
	}
	for _, mib := range []int{1024, 4096} {
		rc, ok1 := get("rc", mib)
		rr, ok2 := get("rr", mib)
		if ok1 && ok2 && rr.Latency > 0 {
			r := rc.Latency / rr.Latency
			w("| full restore (rc) ≤ 1.2 × raw criu restore (rr) at %d MiB | %.2f × | %s |\n", mib, r, met(r <= 1.2))
		}
	}
	if ml, ok := get("ml", 4096); ok {
		w("| live migration downtime (ml) ≤ 1 s at 4096 MiB | %.3f s | %s |\n", ml.Latency, met(ml.Latency <= 1))
	}
	if rl, ok := get("rl", 4096); ok {
		w("| lazy restore running (rl) ≤ 0.5 s at 4096 MiB | %.3f s | %s |\n", rl.Latency, met(rl.Latency <= 0.5))
	}
	for _, row := range []string{"rc", "rl"} {
		if s, ok := get(row, 4096); ok && s.RSS > 0 {
			w("| agent RSS < 64 MiB restoring 4096 MiB (%s) | %.0f MiB | %s |\n", row, s.RSS/(1<<20), met(s.RSS < 64<<20))
		}
	}
	if par != nil && len(par.Parallel) > 0 {
		r := median(par.Parallel) / median(par.Sequential)
		w("| %d × %d MiB in parallel ≤ 0.6 × sequential | %.2f × | %s |\n", par.N, par.MiB, r, met(r <= 0.6))
	}
	if len(e.failures) > 0 {
		w("\n## Rows that failed\n\n")
		for _, f := range e.failures {
			w("- %s\n", strings.ReplaceAll(f, "\n", " "))
		}
	}
	w("\n%s", analysisMarker)
	b.WriteString(analysisText(sums, samples, par, e.versions))
	return b.String()
}

func met(ok bool) string {
	if ok {
		return "yes"
	}
	return "**no**"
}

const analysisMarker = "## Analysis\n\n"

// state is what -render needs besides samples.csv to write the report again.
type state struct {
	Started  time.Time
	Versions map[string]string
	Failures []string
	Parallel *parallelResult
	Runs     int
	Sizes    []int
}

func writeState(dir string, e *env, par *parallelResult, started time.Time) error {
	b, err := json.MarshalIndent(state{started, e.versions, e.failures, par, e.o.runs, e.o.sizes}, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "run.json"), append(b, '\n'), 0o644)
}

// render writes the chart and the Markdown again from a finished run's
// samples.csv and run.json, e.g. after the analysis text changed.
func render(o options) error {
	b, err := os.ReadFile(filepath.Join(o.out, "run.json"))
	if err != nil {
		return err
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		return err
	}
	f, err := os.Open(filepath.Join(o.out, "samples.csv"))
	if err != nil {
		return err
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		return err
	}
	var samples []sample
	for _, r := range recs[1:] {
		if len(r) < 8 {
			return fmt.Errorf("samples.csv: short record %q", r)
		}
		mib, _ := strconv.Atoi(r[2])
		run, _ := strconv.Atoi(r[3])
		lat, _ := strconv.ParseFloat(r[4], 64)
		frz, _ := strconv.ParseFloat(r[5], 64)
		size, _ := strconv.ParseInt(r[6], 10, 64)
		rss, _ := strconv.ParseInt(r[7], 10, 64)
		var ph freezePhases
		if len(r) >= 11 { // written before the phases were measured: none
			pg, _ := strconv.ParseFloat(r[8], 64)
			ak, _ := strconv.ParseFloat(r[9], 64)
			sc, _ := strconv.ParseFloat(r[10], 64)
			ph = freezePhases{Frozen: seconds(frz), Pages: seconds(pg), Acks: seconds(ak), Scripts: seconds(sc)}
		}
		var criu float64
		if len(r) >= 12 {
			criu, _ = strconv.ParseFloat(r[11], 64)
		}
		samples = append(samples, sample{Row: r[0], MiB: mib, Run: run, Latency: seconds(lat), Freeze: seconds(frz), Size: size, RSS: rss, Phases: ph, CRIURestore: seconds(criu)})
	}
	e := &env{o: o, versions: st.Versions, failures: st.Failures}
	e.o.runs, e.o.sizes = st.Runs, st.Sizes
	return writeResults(e.o, e, samples, st.Parallel, st.Started)
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// groupList names the row groups, for the report.
func groupList(e *env) string {
	var parts []string
	for _, g := range e.groups() {
		var ids []string
		for _, r := range g.rows {
			ids = append(ids, r.id)
		}
		parts = append(parts, g.name+" ("+strings.Join(ids, " ")+")")
	}
	return strings.Join(parts, "; ")
}
