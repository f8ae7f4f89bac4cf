package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ckpt-dev/ckpt/internal/archive"
	"github.com/ckpt-dev/ckpt/pkg/client"
)

// restoreRuns is how many times each restore case runs.
const restoreRuns = 10

// archivedCount is K: the last count in the archive's container log, which
// ckpt cuts where CRIU froze the process.
func archivedCount(t *testing.T, archive string) int {
	t.Helper()
	out, err := exec.Command("tar", "xOf", archive, "container.log").Output()
	if err != nil {
		t.Fatalf("read container.log of %s: %v", archive, err)
	}
	k := -1
	for _, line := range strings.Split(string(out), "\n") {
		if _, msg, ok := strings.Cut(line, " stdout F count "); ok {
			if n, err := strconv.Atoi(strings.TrimSpace(msg)); err == nil {
				k = n
			}
		}
	}
	if k < 0 {
		t.Fatalf("archive %s has no count in its log", archive)
	}
	return k
}

// restored is the API's answer to a restore.
type restored = client.Restored

// restoreArchive restores a published archive; "_" keeps a recorded name.
func (a *agent) restoreArchive(name, ns, pod, ctr string) restored {
	a.t.Helper()
	keep := func(s string) string {
		if s == "_" {
			return ""
		}
		return s
	}
	r, err := a.api(testToken, nil).Restore(context.Background(), client.Ref{Namespace: keep(ns), Pod: keep(pod), Container: keep(ctr)},
		client.RestoreSource{Archive: name})
	if err != nil {
		log, _ := os.ReadFile(a.logPath)
		a.t.Fatalf("restore %s: %v\nagent log:\n%s", name, err, log)
	}
	return r
}

// resumesAt waits for a restored container's first counts and checks that
// it continued at k+1 with no gap and no repeat.
func resumesAt(t *testing.T, logPath string, k int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		counts := countsIn(t, logPath)
		if len(counts) >= 2 {
			if counts[0] != k+1 || counts[1] != k+2 {
				t.Fatalf("checkpoint at %d; restored container printed %v first, want %d %d (log %s)", k, counts, k+1, k+2, logPath)
			}
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("restored container printed nothing (log %s)", logPath)
}

func (a *agent) rmContainer(id string) {
	a.t.Helper()
	a.ckpt("rm", id)
}

// TestRestoreWhileOriginalRuns restores under a new pod name while the
// original keeps counting.
func TestRestoreWhileOriginalRuns(t *testing.T) {
	a := newAgent(t)
	a.addPod("counter", counterManifest("counter", nil))
	orig := a.waitRunning("counter-n1", "counter")
	for i := 0; i < restoreRuns; i++ {
		path, resp := a.checkpoint("default/counter-n1/counter", "")
		if path == "" {
			t.Fatalf("run %d: checkpoint: %d %s", i, resp.status, resp.body)
		}
		k := archivedCount(t, path)
		r := a.restoreArchive(filepath.Base(path), "default", "counter-copy", "counter")
		if r.State != "running" || r.Pod != "counter-copy" {
			t.Fatalf("run %d: restored %+v", i, r)
		}
		resumesAt(t, a.containerLog(r.ID[:12]), k)
		fileContinues(t, a.rootfsFile(r.ID[:12], "counter.log"), k+2)
		keepsCounting(t, a.containerLog(orig))
		a.rmContainer(r.ID)
	}
}

// rootfsFile is a file the container wrote in its root filesystem.
func (a *agent) rootfsFile(shortID, name string) string {
	a.t.Helper()
	matches, _ := filepath.Glob(filepath.Join(a.rootDir, "ckpt", "containers", shortID+"*", "upper", name))
	if len(matches) != 1 {
		a.t.Fatalf("no %s in the root filesystem of container %s", name, shortID)
	}
	return matches[0]
}

// fileContinues checks that the counter's file in a restored root
// filesystem holds "count 0" up to at least "count atLeast", each once and
// in order: the file was captured at the same cut as memory, so the
// restored process neither repeats nor skips a line.
func fileContinues(t *testing.T, path string, atLeast int) {
	t.Helper()
	var got []string
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		got = strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
		if len(got) > atLeast {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for i, line := range got {
		if line != fmt.Sprintf("count %d", i) {
			t.Fatalf("restored %s: line %d is %q, want %q (file and memory are not one cut)", path, i, line, fmt.Sprintf("count %d", i))
		}
	}
	if len(got) <= atLeast {
		t.Fatalf("restored %s has %d lines, want more than %d", path, len(got), atLeast)
	}
}

// TestRestoreAfterOriginalRemoved checkpoints, removes the container and
// restores it under its own name; the restored container is then the one
// checkpointed next, so every run also checkpoints a restored container.
func TestRestoreAfterOriginalRemoved(t *testing.T) {
	a := newAgent(t)
	a.addPod("counter", counterManifest("counter", nil))
	current := a.waitRunning("counter-n1", "counter")
	for i := 0; i < restoreRuns; i++ {
		path, resp := a.checkpoint("default/counter-n1/counter", "")
		if path == "" {
			t.Fatalf("run %d: checkpoint: %d %s", i, resp.status, resp.body)
		}
		k := archivedCount(t, path)
		if i == 0 {
			// Restored containers are not the manifest's: take the pod off
			// the manifests (only now: the agent stops a pod whose file is
			// gone, which would race with the checkpoint) so that the agent
			// does not start a new one. Either the agent or rm stops it.
			os.Remove(filepath.Join(a.manifests, "counter.yaml"))
			a.ckptErr("rm", current)
			a.waitPodGoneCtr("counter-n1", "counter")
		} else {
			a.rmContainer(current)
		}
		if line := a.psLine("counter-n1", "counter"); line != "" {
			t.Fatalf("run %d: container still listed after rm: %s", i, line)
		}
		r := a.restoreArchive(filepath.Base(path), "_", "_", "_")
		if r.Namespace != "default" || r.Pod != "counter-n1" || r.Container != "counter" {
			t.Fatalf("run %d: restored as %s/%s/%s, want the archive's default/counter-n1/counter", i, r.Namespace, r.Pod, r.Container)
		}
		resumesAt(t, a.containerLog(r.ID[:12]), k)
		current = r.ID[:12]
	}
}

// TestMigrateToSecondAgent moves the counter to another agent with its own
// root dir (so its own signing key) and port, ten times. The destination
// trusts the source's key.
func TestMigrateToSecondAgent(t *testing.T) {
	src := newAgent(t)
	dst := newAgent(t, withArgs("--restore-trusted-keys", src.publicKeyFile()))
	src.addPod("counter", counterManifest("counter", nil))
	src.waitRunning("counter-n1", "counter")
	tokenFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tokenFile, []byte(testToken), 0o600)
	for i := 0; i < restoreRuns; i++ {
		out := src.ckpt("migrate", "default/counter-n1/counter", "--from", src.url(""), "--to", dst.url(""),
			"--token-file", tokenFile, "--pod", "default/counter-moved")
		if !strings.Contains(out, "migrated default/counter-n1/counter") {
			t.Fatalf("run %d: migrate said %q", i, out)
		}
		_, rest, _ := strings.Cut(out, "checkpointed on "+src.url("")+": ")
		name, _, _ := strings.Cut(rest, "\n")
		k := archivedCount(t, filepath.Join(src.rootDir, "checkpoints", name))
		id := dst.waitRunning("counter-moved", "counter")
		resumesAt(t, dst.containerLog(id), k)
		dst.rmContainer(id)
	}

	// --stop-source: the copy runs on the destination, the source stops,
	// and the agent does not start it again from its manifest.
	out := src.ckpt("migrate", "default/counter-n1/counter", "--from", src.url(""), "--to", dst.url(""),
		"--token-file", tokenFile, "--stop-source")
	if !strings.Contains(out, "stopped default/counter-n1/counter") {
		t.Fatalf("migrate --stop-source said %q", out)
	}
	dst.waitRunning("counter-n1", "counter")
	if line := src.psLine("counter-n1", "counter"); !strings.Contains(line, " exited ") {
		t.Fatalf("source after --stop-source: %q", line)
	}
	time.Sleep(time.Second) // two manifest re-reads
	if line := src.psLine("counter-n1", "counter"); !strings.Contains(line, " exited ") {
		t.Fatalf("the agent restarted the moved container: %q", line)
	}
	if resp, _ := src.do("POST", "/stop/default/counter-n1/counter", testToken); resp.status != 409 {
		t.Errorf("stopping a stopped container: %d %s, want 409", resp.status, resp.body)
	}
	if resp, _ := src.do("POST", "/stop/default/nopod/counter", testToken); resp.status != 404 {
		t.Errorf("stopping a missing pod: %d %s, want 404", resp.status, resp.body)
	}
}

// TestRestoreRefusesTamperedPages: the page images are hashed while CRIU
// restores them, and the tasks resume only on a good verdict. An archive
// whose pages-1.img was changed after it was written (its signed manifest
// intact) is refused with the member named, and leaves no container, no
// sandbox and no process behind.
func TestRestoreRefusesTamperedPages(t *testing.T) {
	a := newAgent(t)
	path := a.counterCheckpoint("counter")
	dirsBefore := len(a.containerDirs())
	tampered := filepath.Join(t.TempDir(), "tampered.tar")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tampered, data, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(tampered, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	members, _, err := archive.Locate(f, archive.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	pages, ok := members["checkpoint/pages-1.img"]
	if !ok || pages.Size == 0 {
		t.Fatalf("no pages-1.img in %s: %v", path, members)
	}
	b := make([]byte, 1)
	off := pages.Offset + pages.Size/2
	f.ReadAt(b, off)
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
	f.Close()

	_, resp := a.restoreUpload(tampered, "tampered")
	if resp.status != 400 || !strings.Contains(resp.body, "pages-1.img") || !strings.Contains(resp.body, "checksum") {
		t.Fatalf("restore of a tampered pages-1.img: %d %q, want 400 naming the member and the checksum", resp.status, resp.body)
	}
	if line := a.psLine("tampered", "counter"); line != "" {
		t.Errorf("the refused restore left a container: %s", line)
	}
	if n := len(a.containerDirs()); n != dirsBefore {
		t.Errorf("%d container directories after the refused restore, %d before", n, dirsBefore)
	}
	// The intact archive still restores.
	r := a.restoreArchive(filepath.Base(path), "default", "intact", "counter")
	resumesAt(t, a.containerLog(r.ID[:12]), archivedCount(t, path))
}

// counterCheckpoint runs the counter as static pod name and returns the
// path of a checkpoint of it.
func (a *agent) counterCheckpoint(name string) string {
	a.t.Helper()
	a.addPod(name, counterManifest(name, nil))
	a.waitRunning(name+"-n1", "counter")
	path, resp := a.checkpoint("default/"+name+"-n1/counter", "")
	if path == "" {
		a.t.Fatalf("checkpoint: %d %s", resp.status, resp.body)
	}
	return path
}

// TestRestoreCarriesEmptyDir: a container checkpoint captures the emptyDirs
// the container mounts while it is frozen, and the restored copy gets them
// back: a writer appending every 10 ms to a file in an emptyDir continues
// the file with no gap and no repeat.
func TestRestoreCarriesEmptyDir(t *testing.T) {
	a := newAgent(t)
	a.addPod("scratch", `apiVersion: v1
kind: Pod
metadata:
  name: scratch
spec:
  volumes:
  - name: data
    emptyDir: {}
  containers:
  - name: app
    image: localhost/busybox:latest
    command: [/bin/busybox, sh, -c, 'i=0; while :; do i=$((i+1)); echo $i >> /data/log; /bin/busybox usleep 10000; done']
    volumeMounts:
    - name: data
      mountPath: /data
`)
	pid := a.containerPid("scratch-n1", "app")
	a.waitFor(func() bool {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/root/data/log", pid))
		return bytes.Count(b, []byte("\n")) > 50
	}, "the writer fills its emptyDir")
	path := a.mustCheckpoint("scratch-n1", "")
	out, err := exec.Command("tar", "xOf", path, "volumes/data.tar").Output()
	if err != nil {
		t.Fatalf("the archive has no volumes/data.tar: %v", err)
	}
	if len(out) == 0 {
		t.Fatal("volumes/data.tar is empty")
	}
	r, resp := a.restoreAs(path, "scratch-copy")
	if resp.status != 201 {
		t.Fatalf("restore: %d %s", resp.status, resp.body)
	}
	cpid := a.containerPid("scratch-copy", "app")
	var data []byte
	a.waitFor(func() bool {
		data, _ = os.ReadFile(fmt.Sprintf("/proc/%d/root/data/log", cpid))
		return bytes.Count(data, []byte("\n")) > 100
	}, "the copy writes on")
	if n, err := sequence(data); err != nil {
		t.Errorf("the copy's emptyDir file after %d lines: %v", n, err)
	}
	a.rmContainer(r.ID)
}
