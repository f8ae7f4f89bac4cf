package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"filippo.io/age"
)

const inspectMarker = "e2e-marker-5d2b9a"

// checkpointMarkedCounter runs the counter with a marker in its memory in
// a fresh agent and returns the archive of one checkpoint.
func checkpointMarkedCounter(t *testing.T, opts ...agentOption) (*agent, string) {
	t.Helper()
	a := newAgent(t, opts...)
	a.addPod("marked", counterManifest("marked", map[string]string{"COUNTER_MARKER": inspectMarker}))
	a.waitRunning("marked-n1", "counter")
	path, resp := a.checkpoint("default/marked-n1/counter", "")
	if path == "" {
		t.Fatalf("checkpoint: %d %s", resp.status, resp.body)
	}
	return a, path
}

// TestInspectRealCheckpoint is the inspect issue's acceptance test on a
// real checkpoint taken over the kubelet API.
func TestInspectRealCheckpoint(t *testing.T) {
	a, path := checkpointMarkedCounter(t)

	out := a.ckpt("inspect", "--ps-tree-cmd", path)
	if !regexp.MustCompile(`\[\d+\] counter\n\s*.*Command line: /counter\n`).MatchString(out) {
		t.Errorf("inspect --ps-tree-cmd does not show the counter and its command line:\n%s", out)
	}
	for _, want := range []string{"counter", "Engine: ckpt", "Checkpointed:", "Frozen time:", "Pages written:", "Root FS diff size:"} {
		if !strings.Contains(out, want) {
			t.Errorf("inspect lacks %q:\n%s", want, out)
		}
	}
	out = a.ckpt("inspect", "--files", path)
	if !regexp.MustCompile(`\[REG \d+\]\s+/counter\.log`).MatchString(out) {
		t.Errorf("inspect --files does not show /counter.log:\n%s", out)
	}
	out = a.ckpt("memsearch", path, "--search", inspectMarker, "--context", "8")
	if !regexp.MustCompile(`(?m)^\d+\s+counter\s+0x[0-9a-f]+\s+.{8}\[` + inspectMarker + `\]`).MatchString(out) {
		t.Errorf("memsearch does not show the marker, its address and context:\n%s", out)
	}
	for _, flag := range []string{"--ps-tree", "--ps-tree-env", "--sockets", "--mounts", "--stats", "--memory", "--all"} {
		for _, format := range []string{"tree", "json", "table"} {
			a.ckpt("inspect", flag, "--format", format, path)
		}
	}
	sameAsCheckpointctl(t, a, path)
}

// sameAsCheckpointctl compares the process tree and the counts of files,
// sockets and mounts with the real checkpointctl.
func sameAsCheckpointctl(t *testing.T, a *agent, path string) {
	t.Helper()
	type node struct {
		PID      uint32 `json:"pid"`
		Command  string `json:"command"`
		Children []node `json:"children"`
	}
	ctlOut, err := exec.Command("checkpointctl", "inspect", "--all", "--format", "json", path).Output()
	if err != nil {
		t.Fatalf("checkpointctl inspect: %v", err)
	}
	var ctl []struct {
		ProcessTree node `json:"process_tree"`
		Files       []struct {
			OpenFiles []json.RawMessage `json:"open_files"`
		} `json:"file_descriptors"`
		Sockets []struct {
			OpenSockets []json.RawMessage `json:"open_sockets"`
		} `json:"sockets"`
		Mounts []json.RawMessage `json:"mounts"`
	}
	if err := json.Unmarshal(ctlOut, &ctl); err != nil || len(ctl) != 1 {
		t.Fatalf("checkpointctl json: %v\n%s", err, ctlOut)
	}
	type proc struct {
		PID      uint32            `json:"pid"`
		Command  string            `json:"command"`
		Files    []json.RawMessage `json:"files"`
		Sockets  []json.RawMessage `json:"sockets"`
		Children []proc            `json:"children"`
	}
	var mine []struct {
		Processes []proc            `json:"processes"`
		Mounts    []json.RawMessage `json:"mounts"`
	}
	if err := json.Unmarshal([]byte(a.ckpt("inspect", "--all", "--format", "json", path)), &mine); err != nil || len(mine) != 1 || len(mine[0].Processes) != 1 {
		t.Fatalf("ckpt inspect json: %v", err)
	}
	var files, sockets int
	var tree func(p proc) node
	tree = func(p proc) node {
		files += len(p.Files)
		sockets += len(p.Sockets)
		n := node{PID: p.PID, Command: p.Command}
		for _, c := range p.Children {
			n.Children = append(n.Children, tree(c))
		}
		return n
	}
	got, _ := json.Marshal(tree(mine[0].Processes[0]))
	want, _ := json.Marshal(ctl[0].ProcessTree)
	if string(got) != string(want) {
		t.Errorf("process tree: ckpt %s, checkpointctl %s", got, want)
	}
	var ctlFiles, ctlSockets int
	for _, f := range ctl[0].Files {
		ctlFiles += len(f.OpenFiles)
	}
	for _, s := range ctl[0].Sockets {
		ctlSockets += len(s.OpenSockets)
	}
	if files != ctlFiles || sockets != ctlSockets || len(mine[0].Mounts) != len(ctl[0].Mounts) {
		t.Errorf("files/sockets/mounts: ckpt %d/%d/%d, checkpointctl %d/%d/%d", files, sockets, len(mine[0].Mounts), ctlFiles, ctlSockets, len(ctl[0].Mounts))
	}
}

// TestInspectEncryptedCompressed reads a .tar.zst.age archive written by
// the agent, with and without the identity.
func TestInspectEncryptedCompressed(t *testing.T) {
	needE2E(t)
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	recipients, identity := filepath.Join(dir, "recipients"), filepath.Join(dir, "identity")
	os.WriteFile(recipients, []byte(id.Recipient().String()+"\n"), 0o600)
	os.WriteFile(identity, []byte(id.String()+"\n"), 0o600)
	a, path := checkpointMarkedCounter(t, withArgs("--checkpoint-compress", "--checkpoint-encryption-recipients-file", recipients))
	if !strings.HasSuffix(path, ".tar.zst.age") {
		t.Fatalf("archive %s is not .tar.zst.age", path)
	}
	if out, err := a.ckptErr("inspect", path); err == nil || !strings.Contains(out, "encrypted") {
		t.Errorf("inspect without identity: %v\n%s", err, out)
	}
	out := a.ckpt("memsearch", "--identity", identity, path, "--search", inspectMarker)
	if !strings.Contains(out, "["+inspectMarker+"]") {
		t.Errorf("memsearch of the encrypted archive:\n%s", out)
	}
	out = a.ckpt("inspect", "--identity", identity, "--files", path)
	if !strings.Contains(out, "/counter.log") {
		t.Errorf("inspect of the encrypted archive:\n%s", out)
	}
}

// TestDiffTwoCheckpoints: two checkpoints of the same counter differ at
// most in the processes the counter starts (none), so the diff is empty
// apart from what changed, and the command works on real archives.
func TestDiffTwoCheckpoints(t *testing.T) {
	a, first := checkpointMarkedCounter(t)
	second, resp := a.checkpoint("default/marked-n1/counter", "")
	if second == "" {
		t.Fatalf("checkpoint: %d %s", resp.status, resp.body)
	}
	out := a.ckpt("diff", "--json", first, second)
	var d struct {
		Changes []struct{ Kind, Op string }
	}
	if err := json.Unmarshal([]byte(out), &d); err != nil {
		t.Fatalf("diff json: %v\n%s", err, out)
	}
	for _, c := range d.Changes {
		if c.Kind == "process" && c.Op != "changed" {
			t.Errorf("the counter's processes %s between two checkpoints: %s", c.Op, out)
		}
	}
}
