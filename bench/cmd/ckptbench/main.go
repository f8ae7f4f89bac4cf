// Command ckptbench measures checkpoint and restore of containers holding M
// MiB of touched memory (the counter example, COUNTER_MEM_MIB) with ckpt and
// with the field's tools, side by side, and writes a CSV, a Markdown table
// and a PNG chart.
//
// Checkpoint rows, on the same image and memory:
//
//	a  runc checkpoint --leave-running into a directory, then fsync: the floor
//	b  a followed by tar of the directory, then fsync of the tar (CRI-O, containerd, Podman)
//	c  ckpt's API end to end on the embedded runtime (the archive is fsynced)
//	d  ckpt through CRI on containerd 2.4 (ckpt serve --container-runtime-endpoint)
//	e  crictl checkpoint --export on containerd 2.4
//	f  podman container checkpoint -R --export --compress none
//
// Restore rows: runc restore from a's directory, CRIU's own time in it,
// ckpt restore (API, archive on the server, extracted), ckpt's lazy
// restore (time until the container runs, and until its memory is
// complete), podman container restore --import.
//
// Migration rows (migrate.go), between two agents in two network
// namespaces: copy-first and live downtime (the source's last tick to the
// destination's first), and the live migration's total.
//
// Every row gets one discarded warm-up run per memory size, then the rows
// take turns (a b c ... a b c ...) so that slow first-touch memory and
// background load fall on all of them alike. Figures are medians.
//
// Run as root; see `make bench` and hack/install-bench-deps.sh.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type options struct {
	repo     string // fields are set from flags in main
	ckpt     string
	images   string
	work     string
	out      string
	doc      string
	sizes    []int
	runs     int
	rows     map[string]bool
	parallel int
	parMiB   int
}

func main() {
	var o options
	var sizes, rows string
	flag.StringVar(&o.repo, "repo", ".", "repository root (for hack/ scripts)")
	flag.StringVar(&o.ckpt, "ckpt", "bin/ckpt", "ckpt binary")
	flag.StringVar(&o.images, "images", "_output/images", "directory with counter.tar and pause.tar")
	flag.StringVar(&o.work, "work", "/var/tmp/ckptbench", "scratch directory (removed and recreated)")
	flag.StringVar(&o.out, "out", "bench/results", "directory for the CSV and the chart")
	flag.StringVar(&o.doc, "doc", "docs/benchmarks.md", "Markdown report to write")
	flag.StringVar(&sizes, "sizes", "64,256,1024,4096", "container memory sizes in MiB")
	flag.IntVar(&o.runs, "runs", 3, "measured runs per row and size (after one warm-up)")
	flag.StringVar(&rows, "rows", "a,b,c,cf,d,e,f,ra,rr,rc,rl,rm,rf,mc,ml,mlt", "rows to run")
	flag.IntVar(&o.parallel, "parallel", 4, "containers checkpointed at once in the parallel run (0: skip)")
	flag.IntVar(&o.parMiB, "parallel-mib", 256, "memory of each container in the parallel run")
	renderOnly := flag.Bool("render", false, "only write the chart and the Markdown again from the results in -out")
	flag.Parse()
	for _, s := range strings.Split(sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= 0 {
			log.Fatalf("bad size %q", s)
		}
		o.sizes = append(o.sizes, n)
	}
	o.rows = map[string]bool{}
	for _, r := range strings.Split(rows, ",") {
		o.rows[strings.TrimSpace(r)] = true
	}
	for _, p := range []*string{&o.repo, &o.ckpt, &o.images, &o.work, &o.out, &o.doc} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			log.Fatal(err)
		}
		*p = abs
	}
	if *renderOnly {
		if err := render(o); err != nil {
			log.Fatal(err)
		}
		return
	}
	if os.Geteuid() != 0 {
		log.Fatal("ckptbench must run as root (runc, CRIU, containerd, podman)")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, o options) error {
	os.RemoveAll(o.work)
	if err := os.MkdirAll(o.work, 0o700); err != nil {
		return err
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	started := time.Now()
	env := newEnv(o)
	defer env.close()
	if err := env.start(ctx); err != nil {
		return err
	}
	var all []sample
	for _, mib := range o.sizes {
		s, err := env.measureSize(ctx, mib)
		all = append(all, s...)
		if err != nil {
			return fmt.Errorf("%d MiB: %w", mib, err)
		}
		// Write what we have after every size: a long run stays useful.
		if err := writeResults(o, env, all, nil, started); err != nil {
			return err
		}
	}
	var par *parallelResult
	if o.parallel > 0 && o.rows["c"] {
		p, err := env.measureParallel(ctx, o.parallel, o.parMiB)
		if err != nil {
			return fmt.Errorf("parallel run: %w", err)
		}
		par = &p
	}
	if err := writeResults(o, env, all, par, started); err != nil {
		return err
	}
	log.Printf("done in %s", time.Since(started).Round(time.Second))
	return nil
}

// sample is one measured run of one row.
type sample struct {
	Row     string
	MiB     int
	Run     int
	Latency time.Duration // end to end
	Freeze  time.Duration // CRIU's frozen time (0: not known)
	Size    int64         // archive (or image directory) bytes
	RSS     int64         // agent's peak RSS during the request, bytes (0: not measured)
	Phases  freezePhases  // where the frozen time went (rows a and c; zero: not known)
	// CRIURestore is CRIU's restore_time (stats-restore) in rows ra and rc:
	// for an in-place rc, the restore of everything but the memory pages.
	CRIURestore time.Duration
}

// rowInfo describes the rows in report order.
var rowInfo = []struct{ id, name string }{
	{"a", "runc checkpoint into a dir (floor)"},
	{"b", "runc checkpoint + tar (CRI-O, containerd, Podman)"},
	{"c", "ckpt API, embedded runtime"},
	{"cf", "ckpt API, embedded runtime, 64 MiB of changed files"},
	{"d", "ckpt API via CRI, containerd 2.4"},
	{"e", "crictl checkpoint, containerd 2.4"},
	{"f", "podman checkpoint --export"},
	{"ra", "runc restore (from a's dir)"},
	{"rr", "criu restore of a's dir (CRIU's restore_time in ra)"},
	{"rc", "ckpt restore (API)"},
	{"rl", "ckpt lazy restore: running"},
	{"rm", "ckpt lazy restore: memory complete"},
	{"rf", "podman restore --import"},
	{"mc", "ckpt migrate (copy-first): downtime"},
	{"ml", "ckpt migrate --live: downtime"},
	{"mlt", "ckpt migrate --live: until every page moved"},
}

func rowName(id string) string {
	for _, r := range rowInfo {
		if r.id == id {
			return r.name
		}
	}
	return id
}

func median(d []float64) float64 {
	if len(d) == 0 {
		return 0
	}
	s := append([]float64(nil), d...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
