package crie2e

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/ckpt-dev/ckpt/internal/runtime"
	"github.com/ckpt-dev/ckpt/internal/runtime/cri"
)

// TestRestoreIntoSandboxFromBeforeCRIORestart pins down a CRI-O 1.34 bug: a
// sandbox created before CRI-O restarted cannot be a restore target (CRIU
// finds no mapping for the sandbox's /run/.containerenv mount). ckpt says so
// and what to do; a sandbox made after the restart works. It runs last: it
// restarts the suite's CRI-O.
func TestRestoreIntoSandboxFromBeforeCRIORestart(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rt *criRuntime) {
		if rt.name != "crio" {
			return // a CRI-O bug; containerd 2.4 does not restore through CRI
		}
		c := criClient(t, rt)
		p := startCounterPod(t, rt, c, "cri-restart-src")
		old := startPod(t, rt, c, "cri-restart-old")
		r, err := cri.New(context.Background(), rt.socket)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		ctr, err := r.Lookup(ctx, runtime.Ref{Namespace: p.ns, Pod: p.name, Container: "counter"})
		if err != nil {
			t.Fatal(err)
		}
		waitCount(t, p.logPath, 5)
		archive := filepath.Join(tmpRoot, "restart-src.tar")
		if _, err := r.Checkpoint(ctx, ctr, archive, runtime.CheckpointOptions{}); err != nil {
			t.Fatalf("Checkpoint: %v", err)
		}
		k := archivedCount(t, archive)

		if out, err := exec.Command(filepath.Join(repoRoot, "hack/restart-crio.sh"), rt.dir).CombinedOutput(); err != nil {
			t.Fatalf("hack/restart-crio.sh: %v\n%s", err, out)
		}
		_, err = r.Restore(ctx, archive, runtime.Ref{Namespace: old.ns, Pod: old.name, Container: "counter"})
		if err == nil {
			t.Fatal("restore into a sandbox from before the CRI-O restart worked: CRI-O fixed the bug; update docs/kubernetes.md and restoreHint in internal/runtime/cri")
		}
		t.Logf("restore into the sandbox from before the restart: %v", err)
		for _, want := range []string{"criu failed", "sandboxes created before CRI-O restarted", "restore into a new sandbox", "crictl runp"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error lacks %q:\n%v", want, err)
			}
		}
		if errors.Is(err, runtime.ErrPodNotFound) {
			t.Errorf("error is ErrPodNotFound; the sandbox exists: %v", err)
		}

		fresh := startPod(t, rt, c, "cri-restart-new")
		since := time.Now()
		restored, err := r.Restore(ctx, archive, runtime.Ref{Namespace: fresh.ns, Pod: fresh.name, Container: "counter"})
		if err != nil {
			t.Fatalf("restore into a sandbox made after the restart: %v", err)
		}
		st, err := c.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: restored.ID})
		if err != nil {
			t.Fatal(err)
		}
		resumesAt(t, rt, st.GetStatus().GetLogPath(), since, k)
	})
}
