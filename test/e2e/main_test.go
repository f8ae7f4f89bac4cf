// Package e2e runs ckpt end to end against real runc and CRIU: a real
// `ckpt serve` with static pods, checkpointed over its HTTP API.
package e2e

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

var (
	ckptBin   string // the ckpt binary under test
	imagesDir string // counter.tar and pause.tar
	skipWhy   string
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	flag.Parse()
	if testing.Short() {
		skipWhy = "end-to-end tests start agents and containers; not with -short (make unit)"
		return m.Run()
	}
	if os.Getuid() != 0 {
		skipWhy = "end-to-end tests need root (they run containers with runc and CRIU)"
		return m.Run()
	}
	for _, b := range []string{"runc", "criu", "checkpointctl"} {
		if _, err := exec.LookPath(b); err != nil {
			// make test installs them: a missing one is a failure, not a skip.
			fmt.Fprintf(os.Stderr, "%s not found: run hack/install-deps.sh (make deps)\n", b)
			return 1
		}
	}
	tmp, err := os.MkdirTemp("", "ckpt-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)
	ckptBin = os.Getenv("CKPT_BIN")
	if ckptBin == "" {
		ckptBin = filepath.Join(tmp, "ckpt")
		if out, err := exec.Command("go", "build", "-o", ckptBin, "../../cmd/ckpt").CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build ckpt: %v\n%s", err, out)
			return 1
		}
	}
	imagesDir = os.Getenv("CKPT_IMAGES")
	if imagesDir == "" {
		imagesDir = filepath.Join(tmp, "images")
		if out, err := exec.Command("../../hack/build-images.sh", imagesDir).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build images: %v\n%s", err, out)
			return 1
		}
	}
	return m.Run()
}

func needE2E(t *testing.T) {
	t.Helper()
	if skipWhy != "" {
		t.Skip(skipWhy)
	}
}
