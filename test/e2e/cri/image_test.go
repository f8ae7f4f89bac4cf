package crie2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/ckpt-dev/ckpt/internal/runtime"
	"github.com/ckpt-dev/ckpt/internal/runtime/cri"
)

// ctrBin is the ctr of the containerd that hack/start-containerd.sh runs.
func ctrBin(rt *criRuntime) string {
	bin := "/opt/ckpt/containerd/bin"
	for _, e := range append(os.Environ(), rt.env...) {
		if v, ok := strings.CutPrefix(e, "CKPT_CONTAINERD_BIN="); ok {
			bin = v
		}
	}
	return filepath.Join(bin, "ctr")
}

// TestRestoreFromCheckpointImageThroughCRI: a runtime's checkpoint becomes
// a ckpt checkpoint image, and the runtime restores the container through
// CRI CreateContainer from the image's name, counting on. containerd 2.1 to
// 2.3 (CKPT_CRI_RUNTIMES=containerd-2.3) get it as an OCI archive imported
// with `ctr -n k8s.io images import`; CRI-O pulls it from the private
// registry that `ckpt image push` put it in, and restores by the image's
// io.kubernetes.cri-o.annotations.checkpoint.name annotation.
func TestRestoreFromCheckpointImageThroughCRI(t *testing.T) {
	forEachRuntime(t, restoreFromCheckpointImageThroughCRI)
}

func restoreFromCheckpointImageThroughCRI(t *testing.T, rt *criRuntime) {
	if ckptErr != nil {
		t.Fatal(ckptErr)
	}
	c := criClient(t, rt)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	v, err := c.Version(ctx, &runtimeapi.VersionRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if !restoresThroughCRI(v.GetRuntimeName(), v.GetRuntimeVersion()) {
		// Nothing to restore with; TestRestoreThroughCRI checks the refusal.
		t.Logf("%s %s does not restore through CRI", v.GetRuntimeName(), v.GetRuntimeVersion())
		return
	}
	p := startCounterPod(t, rt, c, "cri-image-src")
	r, err := cri.New(ctx, rt.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctr, err := r.Lookup(ctx, runtime.Ref{Namespace: p.ns, Pod: p.name, Container: "counter"})
	if err != nil {
		t.Fatal(err)
	}
	waitCount(t, p.logPath, 10)
	archive := filepath.Join(tmpRoot, "image-src-"+rt.name+".tar")
	if _, err := r.Checkpoint(ctx, ctr, archive, runtime.CheckpointOptions{}); err != nil {
		t.Fatalf("Checkpoint: %v", err)
	}
	k := archivedCount(t, archive)

	root := filepath.Join(tmpRoot, "ckpt-image-root-"+rt.name)
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
	if rt.engine == "containerd" {
		saved := filepath.Join(tmpRoot, "cri-counter-image-"+rt.name+".tar")
		run(ckptBin, "--root-dir", root, "image", "save", ref, "-o", saved)
		out := run(ctrBin(rt), "-a", rt.socket, "-n", "k8s.io", "images", "import", saved)
		t.Logf("ctr import: %s", out)
		if out := run(ctrBin(rt), "-a", rt.socket, "-n", "k8s.io", "images", "ls", "-q"); !strings.Contains(out, ref) {
			t.Fatalf("ctr images ls after import:\n%s", out)
		}
	} else {
		// CRI-O maps localhost/ to its private registry (hack/start-crio.sh).
		reg, err := os.ReadFile(filepath.Join(rt.dir, "registry.addr"))
		if err != nil {
			t.Fatal(err)
		}
		run(ckptBin, "--root-dir", root, "image", "push", "-q", ref, strings.TrimSpace(string(reg))+"/ckpt/cri-counter:v1")
		conn, err := grpc.NewClient("unix://"+rt.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := runtimeapi.NewImageServiceClient(conn).PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}}); err != nil {
			t.Fatalf("pull %s through CRI: %v", ref, err)
		}
	}

	target := startPod(t, rt, c, "cri-image-target")
	if err := os.MkdirAll(filepath.Join(target.sbConfig.GetLogDirectory(), "counter"), 0o755); err != nil {
		t.Fatal(err)
	}
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
	resumesAt(t, rt, st.GetStatus().GetLogPath(), restoreStart, k)
	if a := st.GetStatus().GetAnnotations(); a["checkpointImage"] != "" && a["checkpointImage"] != ref {
		t.Errorf("containerd recorded checkpoint image %q, want %q", a["checkpointImage"], ref)
	}
}
