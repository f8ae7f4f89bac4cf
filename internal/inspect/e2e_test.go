package inspect

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ckpt-dev/ckpt/internal/runtime"
	"github.com/ckpt-dev/ckpt/internal/runtime/embedded"
)

// A real checkpoint of examples/counter, made once with runc and CRIU by
// the embedded runtime, shared by the end-to-end tests of this package.
var (
	realOnce    sync.Once
	realArchive string
	realBin     string
	realSkip    string
	realErr     error
	realDir     string
)

const realMarker = "ckpt-inspect-e2e-7c1f"

// images resolves the test's images by name: the counter and the pause
// image that holds the pod's sandbox.
type images map[string]embedded.Image

func (m images) Resolve(ref string) (embedded.Image, error) {
	img, ok := m[ref]
	if !ok {
		return embedded.Image{}, runtime.ErrInvalid
	}
	return img, nil
}

// realCheckpoint returns the archive and the ckpt binary, or skips.
func realCheckpoint(t *testing.T) (archivePath, bin string) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end: skipped with -short")
	}
	realOnce.Do(makeRealCheckpoint)
	if realSkip != "" {
		t.Skip(realSkip)
	}
	if realErr != nil {
		t.Fatal(realErr)
	}
	return realArchive, realBin
}

func makeRealCheckpoint() {
	if os.Getuid() != 0 {
		realSkip = "end-to-end: needs root to run containers with runc and CRIU"
		return
	}
	for _, b := range []string{"runc", "criu"} {
		if _, err := exec.LookPath(b); err != nil {
			realSkip = fmt.Sprintf("end-to-end: %s not found (hack/install-deps.sh)", b)
			return
		}
	}
	dir, err := os.MkdirTemp("", "ckpt-inspect-e2e-")
	if err != nil {
		realErr = err
		return
	}
	realDir = dir
	realErr = func() error {
		realBin = filepath.Join(dir, "ckpt")
		if out, err := exec.Command("go", "build", "-o", realBin, "../../cmd/ckpt").CombinedOutput(); err != nil {
			return fmt.Errorf("build ckpt: %v\n%s", err, out)
		}
		rootfs := filepath.Join(dir, "rootfs")
		build := exec.Command("go", "build", "-o", filepath.Join(rootfs, "counter"), "../../examples/counter")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			return fmt.Errorf("build counter: %v\n%s", err, out)
		}
		pauseRootfs := filepath.Join(dir, "pause-rootfs")
		if err := os.MkdirAll(pauseRootfs, 0o755); err != nil {
			return err
		}
		build = exec.Command("cc", "-static", "-Os", "-o", filepath.Join(pauseRootfs, "pause"), "../../examples/pause/pause.c")
		if out, err := build.CombinedOutput(); err != nil {
			return fmt.Errorf("build pause: %v\n%s", err, out)
		}
		for _, r := range []string{rootfs, pauseRootfs} {
			for _, d := range []string{"tmp", "proc", "dev", "sys", "etc"} {
				os.Mkdir(filepath.Join(r, d), 0o755)
			}
		}
		img := embedded.Image{ID: "sha256:inspect", Name: "localhost/counter:latest", RootFS: rootfs, Entrypoint: []string{"/counter"}}
		pause := embedded.Image{ID: "sha256:pause", Name: embedded.DefaultPauseImage, RootFS: pauseRootfs, Entrypoint: []string{"/pause"}}
		rt, err := embedded.New(embedded.Config{StateDir: filepath.Join(dir, "state"), Shim: realBin, StopTimeout: 2 * time.Second},
			images{img.Name: img, pause.Name: pause})
		if err != nil {
			return err
		}
		ctx := context.Background()
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "inspect", Namespace: "default"},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{
				Name: "counter", Image: img.Name, Env: []corev1.EnvVar{
					{Name: "COUNTER_MARKER", Value: realMarker}, {Name: "COUNTER_INTERVAL", Value: "100ms"},
				},
			}}},
		}
		if errs := rt.SyncPods(ctx, []*corev1.Pod{pod}); len(errs) > 0 {
			return fmt.Errorf("start counter: %v", errs)
		}
		c, err := rt.Lookup(ctx, runtime.Ref{Namespace: "default", Pod: "inspect", Container: "counter"})
		if err != nil {
			return err
		}
		defer rt.Remove(context.Background(), c.ID)
		deadline := time.Now().Add(30 * time.Second)
		for {
			b, _ := os.ReadFile(rt.Log(c.ID))
			if strings.Contains(string(b), "count 3") {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("counter never counted to 3; log:\n%s", b)
			}
			time.Sleep(50 * time.Millisecond)
		}
		realArchive = filepath.Join(dir, "counter.tar")
		_, err = rt.Checkpoint(ctx, c, realArchive, runtime.CheckpointOptions{})
		return err
	}()
}

func TestMain(m *testing.M) {
	code := m.Run()
	if realDir != "" {
		os.RemoveAll(realDir)
	}
	os.Exit(code)
}

func ckptRun(t *testing.T, bin string, args ...string) string {
	t.Helper()
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ckpt %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestRealPsTreeCmd(t *testing.T) {
	path, bin := realCheckpoint(t)
	out := ckptRun(t, bin, "inspect", "--ps-tree-cmd", path)
	if !regexp.MustCompile(`\[\d+\] counter\n\s*.*Command line: /counter\n`).MatchString(out) {
		t.Errorf("inspect --ps-tree-cmd does not show the counter and its command line:\n%s", out)
	}
	for _, want := range []string{"Engine: ckpt", "Image: localhost/counter:latest", "Frozen time:", "Pages written:", "Checkpoint size:", "Root FS diff size:"} {
		if !strings.Contains(out, want) {
			t.Errorf("inspect output lacks %q:\n%s", want, out)
		}
	}
}

func TestRealFiles(t *testing.T) {
	path, bin := realCheckpoint(t)
	out := ckptRun(t, bin, "inspect", "--files", path)
	if !regexp.MustCompile(`\[REG \d+\]\s+/counter\.log`).MatchString(out) {
		t.Errorf("inspect --files does not show /counter.log:\n%s", out)
	}
	env := ckptRun(t, bin, "inspect", "--ps-tree-env", "--format", "json", path)
	if !strings.Contains(env, "COUNTER_MARKER="+realMarker) {
		t.Errorf("inspect --ps-tree-env lacks the marker variable:\n%s", env)
	}
}

func TestRealMemsearch(t *testing.T) {
	path, bin := realCheckpoint(t)
	out := ckptRun(t, bin, "memsearch", path, "--search", "marker:"+realMarker, "--context", "8")
	if !regexp.MustCompile(`(?m)^\d+\s+counter\s+0x[0-9a-f]+\s+.{8}\[marker:` + realMarker + `\].{8}$`).MatchString(out) {
		t.Errorf("memsearch does not show the marker with its address and context:\n%s", out)
	}
	// Memory dump of that process holds it too.
	c, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	pid := c.Processes[0].PID
	dump := filepath.Join(t.TempDir(), "mem")
	ckptRun(t, bin, "memdump", path, "--pid", fmt.Sprint(pid), "--format", "raw", "-o", dump)
	b, err := os.ReadFile(dump)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "marker:"+realMarker) {
		t.Error("memdump output lacks the marker")
	}
	if st, _ := os.Stat(dump); st.Mode().Perm() != 0o600 {
		t.Errorf("memdump output mode %v, want 0600", st.Mode().Perm())
	}
}

func TestRealMatchesCheckpointctl(t *testing.T) {
	path, _ := realCheckpoint(t)
	ctl, err := exec.LookPath("checkpointctl")
	if err != nil {
		t.Skip("checkpointctl not installed (hack/install-deps.sh installs v1.6.0)")
	}
	compareWithCheckpointctl(t, ctl, path)
}
