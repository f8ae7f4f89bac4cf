package main

import (
	"fmt"
	"strings"
)

// analysis is appended to docs/benchmarks.md: why the numbers are what they
// are, and by how much and why a target is missed. Update it with the run.
const analysis = `**One pass.** ckpt (row c) writes the memory pages once. Before the dump,
the embedded runtime creates ` + "`checkpoint/pages-<n>.img`" + ` as FIFOs in the images
directory (one per process in the container's cgroup, plus 8). CRIU opens them like
files and splices the pages in; ckpt splices them on into the archive file behind a
512-byte tar header slot that it fills in once the size is known, and hashes them
(for ` + "`checksums.sha256`" + `) from the page cache on a nice-19 thread, starting
write-back with sync_file_range as it goes, so that the final fsync is short. The
FIFOs are grown to fs.pipe-max-size (1 MiB): at the default 64 KiB, CRIU waited for
ckpt every 16 pages and the freeze grew by half. The other images are small and are
appended after the dump. See internal/runtime/embedded/stream.go.

**Why not CRIU's stream mode.** CRIU 4.1.1 has ` + "`--stream`" + ` (the
criu-image-streamer protocol over ` + "`streamer-capture.sock`" + `), and runc does pass
CRIU the ` + "`org.criu.config`" + ` file, so ` + "`stream`" + ` in that file reaches
CRIU. But runc always runs CRIU as ` + "`criu swrk`" + `, and there CRIU aborts before it
connects (checked here with strace: SIGABRT right after socket()): the images
directory is opened with the swrk mode, for which ` + "`socket_name_for_mode()`" + ` has
no socket name and hits BUG(). The FIFO route needs nothing from CRIU or runc and
gives the same single copy.

**Results against the targets.** The tables above are the latest full run; the
Targets table says which targets it met. In the first full run (ckpt 0d7b4ca, before
the FIFO watchdog) ckpt's API end to end was as fast as the bare
` + "`runc checkpoint`" + ` into a directory at 1 and 4 GiB (0.95 × and 1.00 ×) with the
same freeze (0.87 × and 0.99 ×). The latest run keeps the end-to-end target (1.05 ×
and 1.15 ×) and 0.38 × Podman at 1 GiB, but misses the freeze target (1.51 × and
1.21 ×). The floor (a) fsyncs its image files, as ckpt fsyncs its archive.
Dump-then-tar (b) costs 1.7–3 × the floor from 256 MiB up, as DESIGN.md predicts.
The agent's peak RSS stays under 64 MiB at every size: nothing of the pages passes
through user space except the 1 MiB hashing buffer.

Missed, and why:
- **Freeze ≤ 1.05 × raw CRIU's.** ckpt's freeze varies far more than the floor's
  on this machine. A separate run of rows a and c alone at 4 GiB gave c frozen
  4–13 s against a's 2–2.7 s; the same run with the two-pass writer of then (dump into a
  directory, then tar) gave c 2.4–8.2 s, and without write-back during the dump
  c stayed at 4–13 s. So the extra freeze is not the one-pass copy itself; it comes
  with the container ckpt runs (same image and memory as a's, started by the
  embedded runtime) and with memory pressure: a full run holds six 4 GiB containers
  and writes 4 GiB of page cache per row on a 23 GiB machine. The cause is not
  found yet; this page says so rather than quoting the better first run.
- **(d) ≤ 1.05 × (e)** where missed: row d is containerd's own checkpoint (ckpt's
  CRI backend only calls CheckpointContainer with the archive path) plus ckpt's
  service, which fsyncs the archive before it answers: about 0.3 s per GiB here.
  crictl's export (e) is not fsynced, so e is not durable and d is. The 4 GiB rows
  of containerd and Podman vary by ±20 % from run to run.
- **4 × 256 MiB in parallel ≤ 0.6 × sequential**: the machine has 2 vCPUs; one
  checkpoint keeps CRIU, the splice and the hash busy, so 4 at once are CPU-bound,
  and the best possible on 2 CPUs is near 0.5 ×.

**Restore.** See the restore table at the top of this section, made from this run's
medians. ` + "`ckpt serve --restore-in-place`" + ` restores without the extraction copy
(the lazy path, with the tasks held until memory is complete), but a measured run at
1 GiB took 4.0 s against runc's 1.1 s: the pages cross a socket and userfaultfd in
chunks of at most 4 MiB, each a round trip, so it is off by default. Live migration
rows (post-copy) are not measured yet.

**Noise.** The 2 vCPUs are shared with other engineers' builds and tests during the
run, and memory handed back by the VM is slow on first touch (DESIGN.md), so the
floor itself is 2 × slower than DESIGN.md's numbers at 1 and 4 GiB. The rows take
turns within each size after a discarded warm-up, so load falls on all of them alike.
`

// restoreAnalysis describes the restore rows from the measured medians.
func restoreAnalysis(sums []summary) string {
	get := func(row string, mib int) (summary, bool) {
		for _, s := range sums {
			if s.Row == row && s.MiB == mib {
				return s, true
			}
		}
		return summary{}, false
	}
	var sizes []int
	seen := map[int]bool{}
	for _, s := range sums {
		if !seen[s.MiB] {
			seen[s.MiB] = true
			sizes = append(sizes, s.MiB)
		}
	}
	var b strings.Builder
	b.WriteString("**Restore (from this run).** ckpt restore (rc) extracts the archive (decoded, hashed and\n" +
		"written in one pass), then runc restores from the directory. The lazy restore (rl) extracts only the\n" +
		"small CRIU images and the few pages CRIU restores itself, and serves every other page straight from\n" +
		"the archive file to `criu lazy-pages` (CRIU's page-server protocol over a socket pair); it answers as\n" +
		"soon as the non-memory state is restored. rm is when its memory was complete: every page moved and\n" +
		"the page images' digests checked.\n\n")
	b.WriteString("| MiB | runc restore (ra) | ckpt restore (rc) | rc / ra | lazy: running (rl) | lazy: memory complete (rm) | podman (rf) |\n|---:|---:|---:|---:|---:|---:|---:|\n")
	cell := func(row string, mib int) string {
		if s, ok := get(row, mib); ok {
			return fmt.Sprintf("%.3f s", s.Latency)
		}
		return "–"
	}
	for _, mib := range sizes {
		r := "–"
		rc, ok1 := get("rc", mib)
		ra, ok2 := get("ra", mib)
		if ok1 && ok2 && ra.Latency > 0 {
			r = fmt.Sprintf("%.2f ×", rc.Latency/ra.Latency)
		}
		fmt.Fprintf(&b, "| %d | %s | %s | %s | %s | %s | %s |\n", mib, cell("ra", mib), cell("rc", mib), r, cell("rl", mib), cell("rm", mib), cell("rf", mib))
	}
	b.WriteString("\n")
	return b.String()
}
