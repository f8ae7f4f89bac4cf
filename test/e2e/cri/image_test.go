package crie2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/ckpt-dev/ckpt/internal/runtime"
	"github.com/ckpt-dev/ckpt/internal/runtime/cri"
)

// ctrBin is the ctr of the containerd that hack/start-containerd.sh runs.
func ctrBin() string {
	bin := os.Getenv("CKPT_CONTAINERD_BIN")
	if bin == "" {
		bin = "/opt/ckpt/containerd/bin"
	}
	return filepath.Join(bin, "ctr")
}

// TestRestoreFromCheckpointImageThroughCRI: a containerd checkpoint becomes
// a ckpt checkpoint image, saved as an OCI archive, imported with
// `ctr -n k8s.io images import`, and containerd restores the container
// through CRI CreateContainer from the image's name, counting on. Only
// containerd 2.1 to 2.3 restore through CRI (CONTAINERD_VERSION=v2.3.7
// CKPT_CONTAINERD_BIN=/opt/ckpt/containerd-2.3/bin).
func TestRestoreFromCheckpointImageThroughCRI(t *testing.T) {
	needContainerd(t)
	if ckptErr != nil {
		t.Fatal(ckptErr)
	}
	c := criClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	v, err := c.Version(ctx, &runtimeapi.VersionRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if !restoresThroughCRI(v.GetRuntimeVersion()) {
		t.Skipf("containerd %s does not restore through CRI (2.1-2.3 do: run with CONTAINERD_VERSION=v2.3.7)", v.GetRuntimeVersion())
	}
	p := startCounterPod(t, c, "cri-image-src")
	rt, err := cri.New(ctx, socket)
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	ctr, err := rt.Lookup(ctx, runtime.Ref{Namespace: p.ns, Pod: p.name, Container: "counter"})
	if err != nil {
		t.Fatal(err)
	}
	waitCount(t, p.logPath, 10)
	cpCount := lastCount(p.logPath)
	archive := filepath.Join(tmpRoot, "image-src.tar")
	if _, err := rt.Checkpoint(ctx, ctr, archive, runtime.CheckpointOptions{}); err != nil {
		t.Fatalf("Checkpoint: %v", err)
	}

	root := filepath.Join(tmpRoot, "ckpt-image-root")
	ref := "localhost/ckpt/cri-counter:v1"
	run := func(name string, args ...string) string {
		t.Helper()
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	run(ckptBin, "--root-dir", root, "image", "from-checkpoint", archive, ref)
	saved := filepath.Join(tmpRoot, "cri-counter-image.tar")
	run(ckptBin, "--root-dir", root, "image", "save", ref, "-o", saved)
	out := run(ctrBin(), "-a", socket, "-n", "k8s.io", "images", "import", saved)
	t.Logf("ctr import: %s", out)
	if out := run(ctrBin(), "-a", socket, "-n", "k8s.io", "images", "ls", "-q"); !strings.Contains(out, ref) {
		t.Fatalf("ctr images ls after import:\n%s", out)
	}

	target := startPod(t, c, "cri-image-target")
	restoreStart := time.Now()
	created, err := c.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{
		PodSandboxId: target.sandboxID,
		Config: &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: "counter"},
			Image:    &runtimeapi.ImageSpec{Image: ref, UserSpecifiedImage: ref},
			Labels: map[string]string{
				"io.kubernetes.container.name": "counter",
				"io.kubernetes.pod.name":       target.name, "io.kubernetes.pod.namespace": target.ns, "io.kubernetes.pod.uid": target.uid,
			},
			LogPath: "counter/0.log",
			Linux: &runtimeapi.LinuxContainerConfig{
				SecurityContext: &runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: kubeletNamespaces},
			},
		},
		SandboxConfig: target.sbConfig,
	})
	if err != nil {
		t.Fatalf("CreateContainer from checkpoint image %s: %v", ref, err)
	}
	if _, err := c.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: created.GetContainerId()}); err != nil {
		t.Fatalf("StartContainer (restore): %v", err)
	}
	defer c.StopContainer(context.Background(), &runtimeapi.StopContainerRequest{ContainerId: created.GetContainerId(), Timeout: 5})
	st, err := c.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: created.GetContainerId()})
	if err != nil {
		t.Fatal(err)
	}
	if st.GetStatus().GetState() != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Fatalf("restored container is %s", st.GetStatus().GetState())
	}
	logPath := st.GetStatus().GetLogPath()
	waitCount(t, logPath, cpCount+2)
	first, ok := firstCountSince(t, logPath, restoreStart)
	if !ok || first < cpCount {
		t.Errorf("restored counter printed %d first (found: %v), want at least %d, the count before the checkpoint", first, ok, cpCount)
	}
	if a := st.GetStatus().GetAnnotations(); a["checkpointImage"] != "" && a["checkpointImage"] != ref {
		t.Errorf("containerd recorded checkpoint image %q, want %q", a["checkpointImage"], ref)
	}
}
