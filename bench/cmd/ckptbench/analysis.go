package main

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

**Results against the targets.** At 1 GiB and 4 GiB, ckpt's API end to end is as
fast as the bare ` + "`runc checkpoint`" + ` into a directory (0.95 × and 1.00 ×), with
the same freeze (0.87 × and 0.99 ×), and 0.39 × Podman at 1 GiB. The floor (a)
fsyncs its image files, as ckpt fsyncs its archive. Dump-then-tar (b) costs
2.0–2.5 × the floor, as DESIGN.md predicts. At 64 and 256 MiB fixed costs show
(HTTP, rootfs diff, fsync of the archive, a FIFO per process): 0.96 × and 1.20 ×.
The agent's peak RSS stays under 64 MiB at every size (44 MiB at 4 GiB): nothing
of the pages passes through user space except the 1 MiB hashing buffer.

Missed:
- **(d) ≤ 1.05 × (e)**: 1.11 × at 256 MiB and 1.10 × at 1 GiB (met at 64 MiB,
  1.03 ×, and at 4 GiB, 0.83 ×). Row d is containerd's own checkpoint (ckpt's CRI
  backend only calls CheckpointContainer with the archive path) plus ckpt's
  service, which fsyncs the archive before it answers: about 0.3 s per GiB here.
  crictl's export (e) is not fsynced, so e is not durable and d is. The 4 GiB rows
  of containerd and Podman vary by ±20 % from run to run (containerd builds its tar
  in a second pass, and other engineers share the 2 CPUs), which is also why d
  beats e there.
- **4 × 256 MiB in parallel ≤ 0.6 × sequential**: 0.64 ×, 7 % over. The machine has
  2 vCPUs, shared with other work; one checkpoint keeps CRIU, the splice and the hash
  busy, so 4 at once are CPU-bound, and the best possible on 2 CPUs is near 0.5 ×.

**Restore.** ckpt restore (rc) takes 1.2–3.3 × runc's restore of a directory (ra):
it extracts and verifies the archive (every byte hashed) before runc restores. At
4 GiB it is still faster than Podman's import (9.8 s against 12.4 s). Serving the
pages to CRIU straight from the archive (FIFOs again, for ` + "`pages-*.img`" + `) would
remove the extraction copy; that is the next step.

**Which code.** This run is of ckpt 0d7b4ca. Later commits keep a read end of
every FIFO open from before the dump, run a small watchdog shell, and (the lead's)
a ` + "`ckpt dump-guard`" + ` process, so that a dying agent never leaves CRIU blocked
on a FIFO. A 2-run spot check at 1 GiB after them gave (c) 1.12 × (a) and a
freeze of 1.3 × (a), within this machine's noise but above the full run's; run
` + "`make bench`" + ` again to refresh this page.

**Noise.** The 2 vCPUs are shared with other engineers' builds and tests during the
run, and memory handed back by the VM is slow on first touch (DESIGN.md), so the
floor itself is 2 × slower than DESIGN.md's numbers at 1 and 4 GiB. The rows take
turns within each size after a discarded warm-up, so load falls on all of them alike.
`
