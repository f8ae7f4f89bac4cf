package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestThreeCheckpointsOfRunningCounter is issue 2's acceptance test: three
// checkpoints give three distinct archives that tar and checkpointctl read,
// named and protected as the kubelet does, and the counter never stops.
func TestThreeCheckpointsOfRunningCounter(t *testing.T) {
	a := newAgent(t)
	a.addPod("counter", counterManifest("counter", nil))
	id := a.waitRunning("counter-n1", "counter")
	logPath := a.containerLog(id)

	seen := map[string]bool{}
	for i := 0; i < 3; i++ {
		path, resp := a.checkpoint("default/counter-n1/counter", "")
		if path == "" {
			t.Fatalf("checkpoint %d: %d %s", i, resp.status, resp.body)
		}
		if resp.ctype != "application/json" {
			t.Errorf("content type %q", resp.ctype)
		}
		if seen[path] {
			t.Fatalf("archive %s returned twice", path)
		}
		seen[path] = true
		checkArchive(t, a, path)
		keepsCounting(t, logPath)
	}
	entries, _ := os.ReadDir(filepath.Join(a.rootDir, "checkpoints"))
	var archives []string
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), ".") {
			archives = append(archives, e.Name())
		}
	}
	if len(archives) != 3 {
		t.Fatalf("checkpoints directory holds %v, want 3 archives", archives)
	}
}

// checkArchive checks name, place, modes, and that tar and checkpointctl
// read the archive.
func checkArchive(t *testing.T, a *agent, path string) {
	t.Helper()
	dir := filepath.Join(a.rootDir, "checkpoints")
	if filepath.Dir(path) != dir {
		t.Errorf("archive %s is not in %s", path, dir)
	}
	if !strings.HasPrefix(filepath.Base(path), "checkpoint-counter-n1_default-counter-") || !strings.HasSuffix(path, ".tar") {
		t.Errorf("archive name %s does not follow checkpoint-<pod>_<ns>-<ctr>-<time>.tar", filepath.Base(path))
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("archive mode %v, want 0600", st.Mode().Perm())
	}
	if sys := st.Sys().(*syscall.Stat_t); sys.Uid != 0 {
		t.Errorf("archive owned by uid %d", sys.Uid)
	}
	dst, _ := os.Stat(dir)
	if dst.Mode().Perm() != 0o700 {
		t.Errorf("checkpoints dir mode %v, want 0700", dst.Mode().Perm())
	}
	out, err := exec.Command("tar", "tf", path).CombinedOutput()
	if err != nil {
		t.Fatalf("tar tf: %v\n%s", err, out)
	}
	for _, want := range []string{"config.dump", "spec.dump", "checkpoint/", "rootfs-diff.tar", "deleted.files", "stats-dump", "dump.log", "container.log"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("tar tf lacks %s:\n%s", want, out)
		}
	}
	show, err := exec.Command("checkpointctl", "show", path).CombinedOutput()
	if err != nil {
		t.Fatalf("checkpointctl show: %v\n%s", err, show)
	}
	for _, want := range []string{"counter", "default", "localhost/counter:latest", "runc"} {
		if !strings.Contains(string(show), want) {
			t.Errorf("checkpointctl show lacks %q:\n%s", want, show)
		}
	}
	if out, err := exec.Command("checkpointctl", "inspect", path).CombinedOutput(); err != nil {
		t.Fatalf("checkpointctl inspect: %v\n%s", err, out)
	}
}

// TestAgentKilledContainerSurvives: SIGKILL the agent; its containers keep
// running, are adopted by the next agent, and can be checkpointed again.
func TestAgentKilledContainerSurvives(t *testing.T) {
	a := newAgent(t)
	a.addPod("counter", counterManifest("counter", nil))
	id := a.waitRunning("counter-n1", "counter")
	a.stopWith(syscall.SIGKILL)
	keepsCounting(t, a.containerLog(id))
	if line := a.psLine("counter-n1", "counter"); !strings.Contains(line, " running ") {
		t.Fatalf("after the agent died, ps shows %q", line)
	}
	a.start()
	if got := a.waitRunning("counter-n1", "counter"); got != id {
		t.Fatalf("restarted agent runs container %s, want the adopted %s", got, id)
	}
	path, resp := a.checkpoint("default/counter-n1/counter", "")
	if path == "" {
		t.Fatalf("checkpoint after restart: %d %s", resp.status, resp.body)
	}
	checkArchive(t, a, path)
}

// TestBadInputIsReportedAndOthersKeepRunning covers manifests and images
// that ckpt must refuse with a clear error while serving the other pods.
func TestBadInputIsReportedAndOthersKeepRunning(t *testing.T) {
	a := newAgent(t)
	a.addPod("good", counterManifest("good", nil))
	bad := map[string]struct{ manifest, wantLog string }{
		"invalid":     {"apiVersion: v1\nkind: Pod\nmetadata: [not a map\n", "invalid.yaml"},
		"noimage":     {strings.Replace(counterManifest("noimage", nil), "localhost/counter:latest", "localhost/nope:1", 1), `"localhost/nope:1" not found`},
		"unsupported": {strings.Replace(counterManifest("unsupported", nil), "spec:\n", "spec:\n  dnsPolicy: None\n", 1), "unsupported field spec.dnsPolicy"},
		"dup":         {counterManifest("dup", nil) + "  - name: counter\n    image: localhost/counter:latest\n", `duplicate container name "counter"`},
	}
	for name, c := range bad {
		a.addPod(name, c.manifest)
	}
	a.waitRunning("good-n1", "counter")
	for name, c := range bad {
		a.waitFor(func() bool {
			log, _ := os.ReadFile(a.logPath)
			unquoted := strings.ReplaceAll(string(log), `\"`, `"`) // slog quotes values
			return strings.Contains(unquoted, c.wantLog)
		}, fmt.Sprintf("agent log to report %s (%q)", name, c.wantLog))
	}
	if path, resp := a.checkpoint("default/good-n1/counter", ""); path == "" {
		t.Fatalf("good pod not checkpointed: %d %s", resp.status, resp.body)
	}
	// An image file that is not an image.
	notImage := filepath.Join(t.TempDir(), "notimage.tar")
	os.WriteFile(notImage, []byte("hello"), 0o644)
	out, err := a.ckptErr("image", "import", notImage)
	if err == nil || !strings.Contains(out, "notimage.tar") {
		t.Fatalf("import of a non-image: err=%v, output %q should name the file", err, out)
	}
}
