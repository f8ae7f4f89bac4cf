package embedded

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ckpt-dev/ckpt/internal/runtime"
)

// dirImages serves images from rootfs directories.
type dirImages map[string]Image

func (d dirImages) Resolve(ref string) (Image, error) {
	img, ok := d[ref]
	if !ok {
		return Image{}, runtime.ErrInvalid
	}
	return img, nil
}

func needRoot(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts containers; not with -short (make unit)")
	}
	if os.Getuid() != 0 {
		t.Skip("needs root to run containers")
	}
	for _, b := range []string{"runc", "criu"} {
		if _, err := lookBinary("", b); err != nil {
			t.Skipf("needs %s: %v", b, err)
		}
	}
}

// counterRootfs builds examples/counter into a fresh rootfs directory.
func counterRootfs(t *testing.T) string { return exampleRootfs(t, "counter") }

// exampleRootfs builds examples/<name> into a fresh rootfs directory.
func exampleRootfs(t *testing.T, name string) string {
	t.Helper()
	rootfs := t.TempDir()
	out := filepath.Join(rootfs, name)
	src := "../../../examples/" + name
	cmd := exec.Command("go", "build", "-o", out, src)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if c := filepath.Join(src, name+".c"); fileExists(c) {
		cmd = exec.Command("cc", "-static", "-Os", "-o", out, c) // examples/pause
	}
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", name, err, b)
	}
	for _, d := range []string{"tmp", "proc", "dev", "sys"} {
		os.Mkdir(filepath.Join(rootfs, d), 0o755)
	}
	return rootfs
}

func newTestRuntime(t *testing.T) *Runtime {
	t.Helper()
	shim := filepath.Join(t.TempDir(), "ckpt")
	if b, err := exec.Command("go", "build", "-o", shim, "../../../cmd/ckpt").CombinedOutput(); err != nil {
		t.Fatalf("build ckpt: %v\n%s", err, b)
	}
	imgs := dirImages{
		"localhost/counter:latest": {ID: "sha256:test", Name: "localhost/counter:latest", RootFS: counterRootfs(t), Entrypoint: []string{"/counter"}},
		DefaultPauseImage:          {ID: "sha256:pause", Name: DefaultPauseImage, RootFS: exampleRootfs(t, "pause"), Entrypoint: []string{"/pause"}},
	}
	rt, err := New(Config{StateDir: t.TempDir(), Shim: shim, StopTimeout: 2 * time.Second}, imgs)
	if err != nil {
		t.Fatal(err)
	}
	return rt
}

func counterPod(name string, env ...corev1.EnvVar) *corev1.Pod {
	env = append(env, corev1.EnvVar{Name: "COUNTER_INTERVAL", Value: "100ms"})
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "counter", Image: "localhost/counter:latest", Env: env,
		}}},
	}
}

func waitForLog(t *testing.T, path, substr string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(path)
		if strings.Contains(string(b), substr) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	b, _ := os.ReadFile(path)
	t.Fatalf("log %s never showed %q; it has:\n%s", path, substr, b)
}

func TestRunAndCheckpointCounter(t *testing.T) {
	needRoot(t)
	rt := newTestRuntime(t)
	ctx := context.Background()
	pod := counterPod("counter")
	if errs := rt.SyncPods(ctx, []*corev1.Pod{pod}); len(errs) > 0 {
		t.Fatal(errs)
	}
	c, err := rt.Lookup(ctx, runtime.Ref{Namespace: "default", Pod: "counter", Container: "counter"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Remove(context.Background(), c.ID) })
	waitForLog(t, rt.Log(c.ID), "stdout F count 3")

	archivePath := filepath.Join(t.TempDir(), "a.tar")
	res, err := rt.Checkpoint(ctx, c, archivePath, runtime.CheckpointOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.PagesWritten == 0 {
		t.Errorf("CRIU reported no pages written")
	}
	members := tarMembers(t, archivePath)
	for _, want := range []string{"config.dump", "spec.dump", "checkpoint/pstree.img", "rootfs-diff.tar", "deleted.files", "stats-dump", "dump.log", "container.log", "checksums.sha256"} {
		if !members[want] {
			t.Errorf("archive lacks %s; has %v", want, members)
		}
	}
	if rt.Frozen(c.ID) {
		t.Error("container left frozen")
	}
	before := countLines(rt.Log(c.ID))
	time.Sleep(500 * time.Millisecond)
	if after := countLines(rt.Log(c.ID)); after <= before {
		t.Errorf("counter stopped counting after the checkpoint: %d lines, then %d", before, after)
	}
}

func TestCheckpointTimeoutLeavesContainerRunning(t *testing.T) {
	needRoot(t)
	rt := newTestRuntime(t)
	ctx := context.Background()
	pod := counterPod("big", corev1.EnvVar{Name: "COUNTER_MEM_MIB", Value: "1024"})
	if errs := rt.SyncPods(ctx, []*corev1.Pod{pod}); len(errs) > 0 {
		t.Fatal(errs)
	}
	c, err := rt.Lookup(ctx, runtime.Ref{Namespace: "default", Pod: "big", Container: "counter"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Remove(context.Background(), c.ID) })
	waitForLog(t, rt.Log(c.ID), "stdout F count 1")
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	_, err = rt.Checkpoint(short, c, filepath.Join(t.TempDir(), "a.tar"), runtime.CheckpointOptions{})
	if err == nil {
		t.Fatal("checkpoint of 1 GiB finished within 50ms; the timeout path was not exercised")
	}
	if !strings.Contains(err.Error(), "deadline") {
		t.Errorf("error does not name the deadline: %v", err)
	}
	if rt.Frozen(c.ID) {
		t.Fatal("container left frozen after a timed-out dump")
	}
	before := countLines(rt.Log(c.ID))
	time.Sleep(500 * time.Millisecond)
	if after := countLines(rt.Log(c.ID)); after <= before {
		t.Errorf("counter stopped after a timed-out dump: %d lines, then %d", before, after)
	}
}

func tarMembers(t *testing.T, path string) map[string]bool {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]bool{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out[strings.TrimSuffix(h.Name, "/")] = true
	}
}

func countLines(path string) int {
	b, _ := os.ReadFile(path)
	return strings.Count(string(b), "\n")
}

// lastCount returns the last "count N" value in a CRI log, or -1.
func lastCount(t *testing.T, path string) int {
	t.Helper()
	counts := logCounts(t, path)
	if len(counts) == 0 {
		return -1
	}
	return counts[len(counts)-1]
}

func logCounts(t *testing.T, path string) []int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, line := range strings.Split(string(b), "\n") {
		_, msg, ok := strings.Cut(line, " stdout F count ")
		if !ok {
			continue
		}
		var n int
		if _, err := fmt.Sscan(msg, &n); err == nil {
			out = append(out, n)
		}
	}
	return out
}

func TestRestoreResumesAtCheckpoint(t *testing.T) {
	needRoot(t)
	rt := newTestRuntime(t)
	ctx := context.Background()
	if errs := rt.SyncPods(ctx, []*corev1.Pod{counterPod("counter")}); len(errs) > 0 {
		t.Fatal(errs)
	}
	c, err := rt.Lookup(ctx, runtime.Ref{Namespace: "default", Pod: "counter", Container: "counter"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Remove(context.Background(), c.ID) })
	waitForLog(t, rt.Log(c.ID), "stdout F count 3")
	archivePath := filepath.Join(t.TempDir(), "a.tar")
	if _, err := rt.Checkpoint(ctx, c, archivePath, runtime.CheckpointOptions{}); err != nil {
		t.Fatal(err)
	}
	// The last count in the archived log is where the process was dumped.
	k := lastCount(t, extractMember(t, archivePath, "container.log"))

	f, err := os.Open(archivePath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	restored, err := rt.Restore(ctx, f, RestoreOptions{Pod: "counter-restored", Source: archivePath})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Remove(context.Background(), restored.ID) })
	if restored.State != runtime.StateRunning {
		t.Fatalf("restored container is %s", restored.State)
	}
	waitForLog(t, rt.Log(restored.ID), fmt.Sprintf("stdout F count %d", k+2))
	counts := logCounts(t, rt.Log(restored.ID))
	if counts[0] != k+1 {
		t.Fatalf("checkpoint at %d, restored container printed %v first; want %d", k, counts[:3], k+1)
	}
}

func extractMember(t *testing.T, archivePath, name string) string {
	t.Helper()
	f, err := os.Open(archivePath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("%s not in %s: %v", name, archivePath, err)
		}
		if h.Name == name {
			out := filepath.Join(t.TempDir(), filepath.Base(name))
			data, _ := io.ReadAll(tr)
			os.WriteFile(out, data, 0o600)
			return out
		}
	}
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
