// Package crie2e runs the CRI backend against a real containerd 2.4 (runc
// shim, CRIU) and a real CRI-O 1.34 (conmon, runc, CRIU), each started
// privately by its hack/ script (hack/start-containerd.sh, hack/start-crio.sh).
package crie2e

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	ckptBin   string // the ckpt binary under test
	tmpRoot   string // everything the tests write
	skipWhy   string // set when the machine cannot run these tests
	setupErr  error  // set when it should but setup failed
	ckptErr   error  // set when the ckpt binary could not be built
	repoRoot  = "../../.."
	imagesDir string
	runtimes  []*criRuntime // the runtimes every test runs against
)

// criRuntime is a private CRI runtime started by its hack/ script.
type criRuntime struct {
	name    string   // subtest name
	engine  string   // what checkpointctl calls its archives' engine
	start   string   // hack/ script that starts it in dir and prints its socket
	stop    string   // hack/ script that stops it and removes dir
	logFile string   // its log, relative to dir
	env     []string // for its scripts
	dir     string
	socket  string
	err     error // why it did not start
}

// allRuntimes are containerd 2.4 and CRI-O 1.34; CKPT_CRI_RUNTIMES
// ("containerd", "crio", "containerd-2.3", comma-separated) picks others.
func allRuntimes() []*criRuntime {
	all := []*criRuntime{
		{name: "containerd", engine: "containerd", start: "hack/start-containerd.sh", stop: "hack/stop-containerd.sh", logFile: "containerd.log"},
		{name: "crio", engine: "CRI-O", start: "hack/start-crio.sh", stop: "hack/stop-crio.sh", logFile: "crio.log"},
	}
	// Only when asked for: containerd 2.3, the last that restores through CRI.
	c23 := &criRuntime{name: "containerd-2.3", engine: "containerd", start: "hack/start-containerd.sh", stop: "hack/stop-containerd.sh",
		logFile: "containerd.log", env: []string{"CONTAINERD_VERSION=v2.3.7", "CKPT_CONTAINERD_BIN=/opt/ckpt/containerd-2.3/bin"}}
	want := os.Getenv("CKPT_CRI_RUNTIMES")
	if want == "" {
		return all
	}
	var out []*criRuntime
	for _, r := range append(all, c23) {
		for _, w := range strings.Split(want, ",") {
			if strings.TrimSpace(w) == r.name {
				out = append(out, r)
			}
		}
	}
	return out
}

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	switch {
	case testing.Short():
		skipWhy = "end-to-end test: skipped in -short mode"
	case os.Getuid() != 0:
		skipWhy = "needs root: it runs containerd, CRI-O, runc and CRIU"
	}
	for _, b := range []string{"runc", "criu", "checkpointctl", "tar"} {
		if _, err := exec.LookPath(b); err != nil && skipWhy == "" {
			skipWhy = fmt.Sprintf("%s not found: run hack/install-deps.sh (make deps)", b)
		}
	}
	if skipWhy != "" {
		return m.Run()
	}

	var err error
	// Short: unix socket paths under it must fit in 108 bytes.
	tmpRoot, err = os.MkdirTemp("", "ckpt-cri-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmpRoot)

	runtimes = allRuntimes()
	if setupErr = prepare(); setupErr != nil {
		return m.Run()
	}
	// Start them side by side: the first start of each builds or installs it.
	var wg sync.WaitGroup
	for _, r := range runtimes {
		r.dir = filepath.Join(tmpRoot, r.name)
		wg.Add(1)
		go func() {
			defer wg.Done()
			began := time.Now()
			var stdout, stderr bytes.Buffer
			start := exec.Command(filepath.Join(repoRoot, r.start), r.dir)
			start.Env = append(append(os.Environ(), "CKPT_IMAGES="+imagesDir), r.env...)
			start.Stdout, start.Stderr = &stdout, &stderr
			if err := start.Run(); err != nil {
				r.err = fmt.Errorf("%s: %v\n%s", r.start, err, tail(stderr.Bytes(), 8192))
				return
			}
			r.socket = strings.TrimSpace(stdout.String())
			fmt.Fprintf(os.Stderr, "%s: %s ready in %s\n", r.start, r.name, time.Since(began).Round(time.Millisecond))
		}()
	}
	wg.Wait()
	// Stop them whatever happened: a script may have got as far as starting one.
	defer func() {
		for _, r := range runtimes {
			if _, err := os.Stat(r.dir); err != nil {
				continue // the script stopped before making anything
			}
			stop := exec.Command(filepath.Join(repoRoot, r.stop), r.dir)
			stop.Env = append(os.Environ(), r.env...)
			if out, err := stop.CombinedOutput(); err != nil {
				fmt.Fprintf(os.Stderr, "%s: %v\n%s", r.stop, err, out)
			}
		}
	}()
	code := m.Run()
	if code != 0 {
		for _, r := range runtimes {
			if log, err := os.ReadFile(filepath.Join(r.dir, r.logFile)); err == nil {
				fmt.Fprintf(os.Stderr, "--- %s %s (last 4 KiB)\n%s\n", r.name, r.logFile, tail(log, 4096))
			}
		}
	}
	return code
}

// prepare finds or builds the ckpt binary and the example images. Only the
// serve test needs the binary.
func prepare() error {
	ckptBin = os.Getenv("CKPT_BIN")
	if ckptBin == "" {
		ckptBin = filepath.Join(tmpRoot, "ckpt")
		if out, err := exec.Command("go", "build", "-o", ckptBin, filepath.Join(repoRoot, "cmd/ckpt")).CombinedOutput(); err != nil {
			ckptErr = fmt.Errorf("build ckpt: %v\n%s", err, out)
		}
	}
	imagesDir = os.Getenv("CKPT_IMAGES")
	if imagesDir == "" {
		imagesDir = filepath.Join(tmpRoot, "images")
		if out, err := exec.Command(filepath.Join(repoRoot, "hack/build-images.sh"), imagesDir).CombinedOutput(); err != nil {
			return fmt.Errorf("build images: %v\n%s", err, out)
		}
	}
	return nil
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// forEachRuntime runs fn as a subtest against every runtime; it skips or
// fails unless the machine can run them and each started.
func forEachRuntime(t *testing.T, fn func(t *testing.T, rt *criRuntime)) {
	t.Helper()
	if skipWhy != "" {
		t.Skip(skipWhy)
	}
	if setupErr != nil {
		t.Fatal(setupErr)
	}
	if len(runtimes) == 0 {
		t.Fatalf("CKPT_CRI_RUNTIMES=%q names no runtime (want containerd, crio)", os.Getenv("CKPT_CRI_RUNTIMES"))
	}
	for _, rt := range runtimes {
		t.Run(rt.name, func(t *testing.T) {
			if rt.err != nil {
				t.Fatal(rt.err)
			}
			fn(t, rt)
		})
	}
}
