package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// The analysis appended to docs/benchmarks.md. How the parts work is fixed
// text; every number and every claim about one (met, missed, grows, does
// not) comes from the run being reported.

// results answers questions about one run.
type results struct {
	sums    []summary
	samples []sample
	par     *parallelResult
	cpus    int
}

func (r results) get(row string, mib int) (summary, bool) {
	for _, s := range r.sums {
		if s.Row == row && s.MiB == mib {
			return s, true
		}
	}
	return summary{}, false
}

// sizes lists the sizes a row was measured at, ascending.
func (r results) sizes(row string) []int {
	var out []int
	for _, s := range r.sums {
		if s.Row == row {
			out = append(out, s.MiB)
		}
	}
	return out
}

// ratio is the median latency of row a over row b at mib (0: unknown).
func (r results) ratio(a, b string, mib int) float64 {
	x, ok1 := r.get(a, mib)
	y, ok2 := r.get(b, mib)
	if !ok1 || !ok2 || y.Latency <= 0 {
		return 0
	}
	return x.Latency / y.Latency
}

// span is the smallest and largest of one field of a row's runs at mib.
func (r results) span(row string, mib int, field func(sample) time.Duration) (lo, hi float64, n int) {
	lo = math.Inf(1)
	for _, s := range r.samples {
		if s.Row != row || s.MiB != mib {
			continue
		}
		v := field(s).Seconds()
		if v <= 0 {
			continue
		}
		lo, hi, n = math.Min(lo, v), math.Max(hi, v), n+1
	}
	return lo, hi, n
}

// list renders "x at 1024 MiB, y at 4096 MiB" for the sizes f knows.
func list(sizes []int, f func(int) (string, bool)) string {
	var parts []string
	for _, mib := range sizes {
		if v, ok := f(mib); ok {
			parts = append(parts, fmt.Sprintf("%s at %d MiB", v, mib))
		}
	}
	if len(parts) == 0 {
		return "not measured in this run"
	}
	return strings.Join(parts, ", ")
}

func times(x float64) string { return fmt.Sprintf("%.2f ×", x) }

func analysisText(sums []summary, samples []sample, par *parallelResult, versions map[string]string) string {
	r := results{sums: sums, samples: samples, par: par}
	r.cpus, _ = strconv.Atoi(versions["cpus"])
	var b strings.Builder
	b.WriteString(r.restoreSection())
	b.WriteString(r.migrationSection())
	b.WriteString(r.checkpointSection())
	return b.String()
}

// --- restore ----------------------------------------------------------------

func (r results) restoreSection() string {
	var b strings.Builder
	b.WriteString("**Restore (from this run).** ckpt restore (rc) of a published plain archive is in place: CRIU\n" +
		"restores everything but the memory pages and holds the tasks at its pre-resume stage, while the shim\n" +
		"splices the pages from the archive file to `criu lazy-pages`, which places them with userfaultfd; the\n" +
		"tasks resume once every page is in and the page images' SHA-256 match. No page is copied to a staging\n" +
		"directory. rr is CRIU's own restore time inside ra (restore_time in its stats-restore): the images\n" +
		"restored straight from a directory, without runc around CRIU and without ckpt around runc. The lazy\n" +
		"restore (rl) answers as soon as the non-memory state is restored; rm is when its memory was\n" +
		"complete: every page moved and the digests checked.\n\n")
	b.WriteString("| MiB | criu restore (rr) | runc restore (ra) | ckpt restore (rc) | rc / rr | rc / ra | lazy: running (rl) | lazy: memory complete (rm) | podman (rf) |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	cell := func(row string, mib int) string {
		if s, ok := r.get(row, mib); ok {
			return fmt.Sprintf("%.3f s", s.Latency)
		}
		return "–"
	}
	rat := func(a, c string, mib int) string {
		if x := r.ratio(a, c, mib); x > 0 {
			return times(x)
		}
		return "–"
	}
	for _, mib := range r.sizes("rc") {
		fmt.Fprintf(&b, "| %d | %s | %s | %s | %s | %s | %s | %s | %s |\n", mib, cell("rr", mib), cell("ra", mib), cell("rc", mib),
			rat("rc", "rr", mib), rat("rc", "ra", mib), cell("rl", mib), cell("rm", mib), cell("rf", mib))
	}
	b.WriteString("\n")
	// The full restore target (set at 1024 and 4096 MiB), in words.
	sizes := r.sizes("rc")
	var over []string
	for _, mib := range sizes {
		if x := r.ratio("rc", "rr", mib); x > 1.2 {
			over = append(over, fmt.Sprintf("%.2f × at %d MiB", x, mib))
		}
	}
	runcShare := list(sizes, func(mib int) (string, bool) {
		ra, ok1 := r.get("ra", mib)
		rr, ok2 := r.get("rr", mib)
		if !ok1 || !ok2 || ra.Latency <= 0 {
			return "", false
		}
		return fmt.Sprintf("%.0f %%", 100*(ra.Latency-rr.Latency)/ra.Latency), true
	})
	// Where rc's time went: CRIU's restore of the non-memory state, and the
	// rest (the sandbox, and the pages moving while the tasks are held).
	split := list(sizes, func(mib int) (string, bool) {
		rc, ok1 := r.get("rc", mib)
		rr, ok2 := r.get("rr", mib)
		held := r.criuRestoreMedian("rc", mib)
		if !ok1 || !ok2 || held <= 0 || rr.Latency <= 0 || rc.Latency <= held {
			return "", false
		}
		gib := float64(mib) / 1024
		return fmt.Sprintf("%.3f s + %.3f s (%.2f GiB/s moved, against %.2f GiB/s for rr's whole restore)",
			held, rc.Latency-held, gib/(rc.Latency-held), gib/rr.Latency), true
	})
	targetSizes := 0
	for _, mib := range sizes {
		if mib == 1024 || mib == 4096 {
			targetSizes++
		}
	}
	scope := "the target is set at 1024 and 4096 MiB"
	if targetSizes == 0 {
		scope += ", which this run did not measure"
	}
	if len(over) > 0 {
		fmt.Fprintf(&b, "- **Full restore ≤ 1.2 × raw CRIU's** (%s): over it by %s. Of runc restore's time, runc itself\n"+
			"  (not CRIU) takes %s. rc splits into CRIU's restore of everything but the pages and the rest (the pod\n"+
			"  sandbox, and the pages moving into the held tasks): %s. The pages move through one request of at\n"+
			"  most 4 MiB at a time (CRIU's lazy-pages daemon), each copied from the socket and again by\n"+
			"  UFFDIO_COPY, where CRIU's own restore reads a directory with one preadv per mapping.\n", scope, strings.Join(over, ", "), runcShare, split)
		// Cold memory shows as CRIU's own restore slowing per GiB.
		r1, ok1 := r.get("rr", 1024)
		r4, ok4 := r.get("rr", 4096)
		if ok1 && ok4 && r1.Latency > 0 && r4.Latency > 0 {
			g1, g4 := 1/r1.Latency, 4/r4.Latency
			if g1 > 1.5*g4 {
				fmt.Fprintf(&b, "  CRIU's own restore (rr) placed %.2f GiB/s at 1024 MiB and %.2f GiB/s at 4096 MiB: at 4096 MiB the\n"+
					"  restores wrote mostly into memory the VM had taken back (first touch), which every row pays alike.\n", g1, g4)
			}
		}
	} else if len(sizes) > 0 {
		fmt.Fprintf(&b, "- **Full restore ≤ 1.2 × raw CRIU's** (%s): within it, %s.\n", scope, list(sizes, func(mib int) (string, bool) {
			x := r.ratio("rc", "rr", mib)
			return times(x), x > 0
		}))
	}
	if rl := r.sizes("rl"); len(rl) > 0 {
		fmt.Fprintf(&b, "- **Lazy restore, time to running**: %s; memory complete %s.",
			list(rl, func(mib int) (string, bool) { s, ok := r.get("rl", mib); return fmt.Sprintf("%.3f s", s.Latency), ok }),
			list(rl, func(mib int) (string, bool) { s, ok := r.get("rm", mib); return fmt.Sprintf("%.3f s", s.Latency), ok }))
		l4, ok4 := r.get("rl", 4096)
		l1, ok1 := r.get("rl", 1024)
		if ok4 && ok1 && l4.Latency > 0.5 {
			lo, hi, n := r.span("rl", 4096, func(s sample) time.Duration { return s.Latency })
			growth, spread := l4.Latency-l1.Latency, hi-lo
			fmt.Fprintf(&b, " The target (≤ 0.5 s at 4096 MiB) is missed: %.3f s at 4096 MiB, %.3f s more than at 1024 MiB;\n"+
				"  its %d runs at 4096 MiB spread over %.3f–%.3f s. No page moves before it runs: the time is the small images,\n"+
				"  the pod sandbox and CRIU's restore of everything but the memory", l4.Latency, growth, n, lo, hi)
			if n > 1 && spread > growth {
				b.WriteString(", and the runs' spread is larger than the growth from 1024 MiB.")
			} else {
				b.WriteString(", and it grew with memory by more than its runs' spread.")
			}
		}
		b.WriteString("\n")
	}
	b.WriteString("\n")
	return b.String()
}

// --- migration --------------------------------------------------------------

func (r results) migrationSection() string {
	mc, ml := r.sizes("mc"), r.sizes("ml")
	if len(mc) == 0 && len(ml) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("**Migration (from this run).** Two agents, each in a network namespace the harness creates\n" +
		"(a veth pair with link-local addresses), over HTTPS. The counters tick every 10 ms; the downtime is\n" +
		"from the source's last tick that the destination continues from to the destination's first tick.\n" +
		"Copy-first (mc) checkpoints, streams the archive through the CLI and restores it in full; live (ml)\n" +
		"moves only the non-memory images before the destination runs, and the pages follow (mlt: until the\n" +
		"source ended, every page moved).\n\n")
	b.WriteString("| MiB | copy-first downtime (mc) | live downtime (ml) | ml / mc | live, every page moved (mlt) |\n|---:|---:|---:|---:|---:|\n")
	seen := map[int]bool{}
	for _, mib := range append(append([]int{}, mc...), ml...) {
		if seen[mib] {
			continue
		}
		seen[mib] = true
		cell := func(row string) string {
			if s, ok := r.get(row, mib); ok {
				return fmt.Sprintf("%.3f s", s.Latency)
			}
			return "–"
		}
		rat := "–"
		if x := r.ratio("ml", "mc", mib); x > 0 {
			rat = times(x)
		}
		fmt.Fprintf(&b, "| %d | %s | %s | %s | %s |\n", mib, cell("mc"), cell("ml"), rat, cell("mlt"))
	}
	b.WriteString("\n")
	grow := func(row string) (string, bool) {
		s := r.sizes(row)
		if len(s) < 2 {
			return "", false
		}
		lo, _ := r.get(row, s[0])
		hi, _ := r.get(row, s[len(s)-1])
		if lo.Latency <= 0 {
			return "", false
		}
		x := hi.Latency / lo.Latency
		mem := float64(s[len(s)-1]) / float64(s[0])
		how := "grows with memory"
		if x < math.Sqrt(mem) {
			how = "grows far less than memory"
		}
		if x < 1.5 {
			how = "barely grows with memory"
		}
		if x < 1.1 {
			how = "does not grow with memory"
		}
		return fmt.Sprintf("from %d to %d MiB (%.0f × the memory) it goes from %.3f s to %.3f s (%.2f ×): it %s",
			s[0], s[len(s)-1], mem, lo.Latency, hi.Latency, x, how), true
	}
	if g, ok := grow("ml"); ok {
		fmt.Fprintf(&b, "- Live downtime: %s.\n", g)
	}
	if g, ok := grow("mc"); ok {
		fmt.Fprintf(&b, "- Copy-first downtime: %s.\n", g)
	}
	if s, ok := r.get("ml", 4096); ok {
		fmt.Fprintf(&b, "- **Live downtime ≤ 1 s at 4096 MiB**: %.3f s (%s).", s.Latency, map[bool]string{true: "yes", false: "no"}[s.Latency <= 1])
		if g, ok := r.get("ml", 1024); ok && s.Latency > 1 && s.Latency > g.Latency {
			fmt.Fprintf(&b, " From 1024 MiB (%.3f s) it grew by %.3f s per GiB: the part of a live migration that still grows\n"+
				"  with memory comes before the destination runs. CRIU's lazy dump walks the source's memory and vmsplices\n"+
				"  every page into its page pipes while the tasks are frozen (those pipes are what its page server serves\n"+
				"  afterwards); only the pages' transfer waits until after the cut.", g.Latency, (s.Latency-g.Latency)/3)
		}
		b.WriteString("\n")
	} else if len(ml) > 0 {
		fmt.Fprintf(&b, "- **Live downtime ≤ 1 s at 4096 MiB**: not measured in this run (largest: %d MiB).\n", ml[len(ml)-1])
	}
	b.WriteString("\n")
	return b.String()
}

// --- checkpoint -------------------------------------------------------------

// phaseMedian is the median of one frozen-time phase over a row's runs at
// mib (0: none measured).
// criuRestoreMedian is the median of CRIU's restore_time in row's samples
// at mib (0: none).
func (r results) criuRestoreMedian(row string, mib int) float64 {
	var v []float64
	for _, s := range r.samples {
		if s.Row == row && s.MiB == mib && s.CRIURestore > 0 {
			v = append(v, s.CRIURestore.Seconds())
		}
	}
	return median(v)
}

func (r results) phaseMedian(row string, mib int, f func(freezePhases) time.Duration) float64 {
	var v []float64
	for _, s := range r.samples {
		if s.Row == row && s.MiB == mib && s.Phases.Frozen > 0 {
			v = append(v, f(s.Phases).Seconds())
		}
	}
	return median(v)
}

// freezeSplit says where c's frozen time went against a's at mib, from
// the phases CRIU's dump.log shows, and which phase holds most of the
// difference ("" when either row has none).
func (r results) freezeSplit(mib int) string {
	phases := []struct {
		name, why string
		f         func(freezePhases) time.Duration
	}{
		{"page transfers", "CRIU waits whenever a pages FIFO is full, until ckpt's reader has drained it", func(p freezePhases) time.Duration { return p.Pages }},
		{"waits for the parasite", "the parasite runs in the frozen task, on CPUs the run shares with everything else", func(p freezePhases) time.Duration { return p.Acks }},
		{"action scripts", "ckpt's post-dump hook (a shell, then `ckpt capture-frozen`) runs at each of CRIU's actions while frozen", func(p freezePhases) time.Duration { return p.Scripts }},
	}
	if r.phaseMedian("c", mib, func(p freezePhases) time.Duration { return p.Frozen }) == 0 ||
		r.phaseMedian("a", mib, func(p freezePhases) time.Duration { return p.Frozen }) == 0 {
		return ""
	}
	var parts []string
	most, mostExtra := -1, 0.0
	for i, p := range phases {
		c, a := r.phaseMedian("c", mib, p.f), r.phaseMedian("a", mib, p.f)
		parts = append(parts, fmt.Sprintf("%s %.2f s against %.2f s", p.name, c, a))
		if c-a > mostExtra {
			most, mostExtra = i, c-a
		}
	}
	msg := "Where the frozen time went (medians, from CRIU's dump.log, c against a): " + strings.Join(parts, "; ") + "."
	if most >= 0 {
		msg += fmt.Sprintf(" Most of c's extra freeze is in the %s (%.2f s more): %s.", phases[most].name, mostExtra, phases[most].why)
	}
	return msg
}

// designDump is DESIGN.md's `criu dump` medians (CRIU 4.1.1, ext4, 2
// vCPUs), the reference the noise paragraph compares the floor with.
var designDump = map[int]float64{256: 0.17, 1024: 0.49, 4096: 2.4}

// fifoMiB is the size ckpt grows its pages FIFOs to
// (internal/runtime/embedded fifoPipeSize).
const fifoMiB = 16

func (r results) checkpointSection() string {
	var b strings.Builder
	fmt.Fprintf(&b, `**One pass.** ckpt (row c) writes the memory pages once. Before the dump,
the embedded runtime creates `+"`checkpoint/pages-<n>.img`"+` as FIFOs in the images
directory (one per process in the container's cgroup, plus 8). CRIU opens them like
files and splices the pages in; ckpt splices them on into the archive file behind a
512-byte tar header slot that it fills in once the size is known, and hashes them
(for `+"`checksums.sha256`"+`) from the page cache on a nice-19 thread, starting
write-back with sync_file_range as it goes, so that the final fsync is short. The
FIFOs are grown to %d MiB before the dump (raising fs.pipe-max-size for those few
calls where the agent lacks CAP_SYS_RESOURCE): CRIU waits for ckpt each time a FIFO
is full, 16 pages at the default 64 KiB. The other images are small and are appended
after the dump. See internal/runtime/embedded/stream.go.

**Why not CRIU's stream mode.** CRIU has `+"`--stream`"+` (the criu-image-streamer
protocol over `+"`streamer-capture.sock`"+`), and runc does pass CRIU the
`+"`org.criu.config`"+` file, so `+"`stream`"+` in that file reaches CRIU. But runc always
runs CRIU as `+"`criu swrk`"+`, and there CRIU aborts before it connects: the images
directory is opened with the swrk mode, for which `+"`socket_name_for_mode()`"+` has no
socket name and hits BUG(). The FIFO route needs nothing from CRIU or runc and gives
the same single copy.

`, fifoMiB)
	cs := r.sizes("c")
	b.WriteString("**Checkpoint against the targets (from this run).** ")
	fmt.Fprintf(&b, "ckpt's API end to end (c) against the bare `runc checkpoint` into a directory (a): %s. ",
		list(cs, func(mib int) (string, bool) {
			s, ok := r.get("c", mib)
			return times(s.LatencyRatio), ok && s.LatencyRatio > 0
		}))
	fmt.Fprintf(&b, "Freeze against a's: %s. ",
		list(cs, func(mib int) (string, bool) {
			s, ok := r.get("c", mib)
			return times(s.FreezeRatio), ok && s.FreezeRatio > 0
		}))
	if x := r.ratio("c", "f", 1024); x > 0 {
		fmt.Fprintf(&b, "Against Podman at 1024 MiB: %s. ", times(x))
	}
	bs := r.sizes("b")
	lo, hi := math.Inf(1), 0.0
	for _, mib := range bs {
		if mib < 256 {
			continue
		}
		if s, ok := r.get("b", mib); ok && s.LatencyRatio > 0 {
			lo, hi = math.Min(lo, s.LatencyRatio), math.Max(hi, s.LatencyRatio)
		}
	}
	if hi > 0 {
		fmt.Fprintf(&b, "Dump-then-tar (b) costs %.1f–%.1f × the floor from 256 MiB up. ", lo, hi)
	}
	maxRSS, at := 0.0, 0
	for _, s := range r.sums {
		if s.Row == "c" && s.RSS > maxRSS {
			maxRSS, at = s.RSS, s.MiB
		}
	}
	if maxRSS > 0 {
		fmt.Fprintf(&b, "The agent's peak RSS while checkpointing was at most %.0f MiB (at %d MiB)", maxRSS/(1<<20), at)
		if maxRSS < 64<<20 {
			b.WriteString(", under 64 MiB: nothing of the pages passes through user space but the 1 MiB hashing buffer")
		}
		b.WriteString(". ")
	}
	b.WriteString("\n\n")

	// Missed targets, each with this run's numbers.
	var missed []string
	for _, mib := range []int{1024, 4096} {
		c, ok1 := r.get("c", mib)
		a, ok2 := r.get("a", mib)
		if !ok1 || !ok2 || c.LatencyRatio <= 1.15 {
			continue
		}
		lo, hi, n := r.span("c", mib, func(s sample) time.Duration { return s.Latency })
		missed = append(missed, fmt.Sprintf("- **(c) ≤ 1.15 × (a) at %d MiB: missed** (%s, %.3f s more; c took %.2f–%.2f s over %d runs): %.3f s of the\n"+
			"  difference is in the freeze (below), the rest after the thaw (the small images appended, the archive's fsync\n"+
			"  and its signature).", mib, times(c.LatencyRatio), c.Latency-a.Latency, lo, hi, n, c.Freeze-a.Freeze))
	}
	for _, mib := range []int{1024, 4096} {
		c, ok := r.get("c", mib)
		if !ok || c.FreezeRatio == 0 || c.FreezeRatio <= 1.05 {
			continue
		}
		clo, chi, cn := r.span("c", mib, func(s sample) time.Duration { return s.Freeze })
		alo, ahi, an := r.span("a", mib, func(s sample) time.Duration { return s.Freeze })
		msg := fmt.Sprintf("- **Freeze ≤ 1.05 × raw CRIU's at %d MiB: missed** (%s). ", mib, times(c.FreezeRatio))
		if cn > 0 && an > 0 {
			msg += fmt.Sprintf("c was frozen %.2f–%.2f s over %d runs, a %.2f–%.2f s over %d", clo, chi, cn, alo, ahi, an)
			if (chi-clo)/math.Max(clo, 1e-9) > 2*(ahi-alo)/math.Max(alo, 1e-9) {
				msg += ": ckpt's freeze varies far more than the floor's"
			}
			msg += ". "
		}
		if split := r.freezeSplit(mib); split != "" {
			msg += split
		} else {
			msg += "This run has no dump.log phases to tell the cause."
		}
		missed = append(missed, msg)
	}
	for _, mib := range r.sizes("d") {
		x := r.ratio("d", "e", mib)
		if x == 0 || x <= 1.05 {
			continue
		}
		d, _ := r.get("d", mib)
		e, _ := r.get("e", mib)
		missed = append(missed, fmt.Sprintf("- **(d) ≤ 1.05 × (e) at %d MiB: missed** (%s, %.2f s more, %.2f s per GiB): row d is containerd's own\n"+
			"  checkpoint plus ckpt's service, which fsyncs the archive before it answers; crictl's export (e) is not\n"+
			"  fsynced, so e is not durable and d is.", mib, times(x), d.Latency-e.Latency, (d.Latency-e.Latency)/(float64(mib)/1024)))
	}
	if r.par != nil && len(r.par.Parallel) > 0 {
		x := median(r.par.Parallel) / median(r.par.Sequential)
		if x > 0.6 {
			floor := "unknown"
			if r.cpus > 0 {
				floor = fmt.Sprintf("%.2f ×", 1/math.Min(float64(r.cpus), float64(r.par.N)))
			}
			missed = append(missed, fmt.Sprintf("- **%d × %d MiB in parallel ≤ 0.6 × sequential: missed** (%s): one checkpoint keeps CRIU, the splice\n"+
				"  and the hash busy, so %d at once are CPU-bound; with %d CPUs the best possible is about %s.", r.par.N, r.par.MiB, times(x), r.par.N, r.cpus, floor))
		}
	}
	if len(missed) > 0 {
		b.WriteString("Missed, with this run's numbers:\n")
		b.WriteString(strings.Join(missed, "\n"))
		b.WriteString("\n\n")
	}

	// Noise: the floor against DESIGN.md's reference numbers.
	var vs []string
	for _, mib := range []int{256, 1024, 4096} {
		if a, ok := r.get("a", mib); ok && designDump[mib] > 0 && a.Latency > 0 {
			vs = append(vs, fmt.Sprintf("%.1f × at %d MiB", a.Latency/designDump[mib], mib))
		}
	}
	b.WriteString("**Noise.** The CPUs are shared with other work during the run, and memory handed back by the VM\n" +
		"is slow on first touch (DESIGN.md). The rows of a group take turns after a discarded warm-up,\n" +
		"so load falls on them alike; rows of different groups (c against Podman's f, say) ran minutes apart\n" +
		"under whatever load the machine had then.")
	if len(vs) > 0 {
		fmt.Fprintf(&b, " The floor (a, with its fsync) took %s DESIGN.md's `criu dump` medians.", strings.Join(vs, ", "))
	}
	b.WriteString("\n")
	return b.String()
}
