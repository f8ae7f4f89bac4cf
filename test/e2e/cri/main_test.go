// Package crie2e runs the CRI backend against a real containerd 2.4 (runc
// shim, CRIU), started privately by hack/start-containerd.sh.
package crie2e

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

var (
	socket    string // the private containerd's CRI socket
	ckptBin   string // the ckpt binary under test
	tmpRoot   string // everything the tests write
	skipWhy   string // set when the machine cannot run these tests
	setupErr  error  // set when it should but setup failed
	ckptErr   error  // set when the ckpt binary could not be built
	repoRoot  = "../../.."
	imagesDir string
)

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	switch {
	case testing.Short():
		skipWhy = "end-to-end test: skipped in -short mode"
	case os.Getuid() != 0:
		skipWhy = "needs root: it runs containerd, runc and CRIU"
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

	if setupErr = prepare(); setupErr != nil {
		return m.Run()
	}
	ctrdDir := filepath.Join(tmpRoot, "ctrd")
	var stdout, stderr bytes.Buffer
	start := exec.Command(filepath.Join(repoRoot, "hack/start-containerd.sh"), ctrdDir)
	start.Env = append(os.Environ(), "CKPT_IMAGES="+imagesDir)
	start.Stdout, start.Stderr = &stdout, &stderr
	if err := start.Run(); err != nil {
		setupErr = fmt.Errorf("hack/start-containerd.sh: %v\n%s", err, stderr.String())
	} else {
		socket = strings.TrimSpace(stdout.String())
	}
	// Stop it whatever happened: the script may have got as far as starting it.
	defer func() {
		if _, err := os.Stat(filepath.Join(ctrdDir, "config.toml")); err != nil {
			return // the script stopped before writing anything
		}
		stop := exec.Command(filepath.Join(repoRoot, "hack/stop-containerd.sh"), ctrdDir)
		if out, err := stop.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "hack/stop-containerd.sh: %v\n%s", err, out)
		}
	}()
	code := m.Run()
	if code != 0 {
		if log, err := os.ReadFile(filepath.Join(ctrdDir, "containerd.log")); err == nil {
			fmt.Fprintf(os.Stderr, "--- containerd.log (last 4 KiB)\n%s\n", tail(log, 4096))
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

// needContainerd skips or fails t unless the private containerd runs.
func needContainerd(t *testing.T) {
	t.Helper()
	if skipWhy != "" {
		t.Skip(skipWhy)
	}
	if setupErr != nil {
		t.Fatal(setupErr)
	}
}
