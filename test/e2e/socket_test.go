package e2e

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// localCkpt runs the CLI the way root on the node would: no --server, no
// credentials, no config; only the agent's --root-dir (a temp dir here
// rather than /var/lib/kubelet). cred, if set, runs it as another user.
func (a *agent) localCkpt(cred *syscall.Credential, bin string, args ...string) (stdout, stderr string, err error) {
	cmd := exec.Command(bin, append([]string{"--root-dir", a.rootDir}, args...)...)
	cmd.Env = append(os.Environ(), "CKPT_CONFIG=/nonexistent/ckpt/config.yaml")
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		cmd.Dir = "/"
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	return out.String(), errb.String(), err
}

// TestLocalSocketNoFlags: as root on the node, checkpoint, list and restore
// work with no flags, through <root-dir>/ckpt.sock; another user is refused,
// first by the socket's permissions and, were those loosened, by the agent.
func TestLocalSocketNoFlags(t *testing.T) {
	a := newAgent(t)
	sock := filepath.Join(a.rootDir, "ckpt.sock")
	st, err := os.Lstat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Type() != os.ModeSocket || st.Mode().Perm() != 0o600 || st.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Fatalf("socket %s: mode %v uid %d, want a root-owned socket 0600", sock, st.Mode(), st.Sys().(*syscall.Stat_t).Uid)
	}

	a.addPod("counter", counterManifest("counter", nil))
	orig := a.waitRunning("counter", "counter")

	out, errOut, err := a.localCkpt(nil, ckptBin, "checkpoint", "default/counter/counter")
	if err != nil {
		t.Fatalf("ckpt checkpoint: %v\n%s", err, errOut)
	}
	path := strings.TrimSpace(out)
	if filepath.Dir(path) != filepath.Join(a.rootDir, "checkpoints") {
		t.Fatalf("archive path %q", path)
	}
	k := archivedCount(t, path)
	name := filepath.Base(path)

	out, errOut, err = a.localCkpt(nil, ckptBin, "checkpoints", "ls")
	if err != nil || !strings.Contains(out, name) {
		t.Fatalf("ckpt checkpoints ls: %v\n%s%s", err, out, errOut)
	}
	out, _, err = a.localCkpt(nil, ckptBin, "checkpoints", "ls", "-o", "json")
	var list []struct{ Name, Pod string }
	if err != nil || json.Unmarshal([]byte(out), &list) != nil || len(list) != 1 || list[0].Name != name || list[0].Pod != "counter" {
		t.Fatalf("ckpt checkpoints ls -o json: %v %q", err, out)
	}

	// Restore by name on the server, into a new pod next to the original.
	out, errOut, err = a.localCkpt(nil, ckptBin, "restore", name, "--pod", "default/counter-copy")
	if err != nil || !strings.HasPrefix(out, "restored default/counter-copy/counter (") {
		t.Fatalf("ckpt restore %s: %v\n%s%s", name, err, out, errOut)
	}
	copyID := strings.TrimSuffix(strings.Fields(out)[2], ")")[1:]
	resumesAt(t, a.containerLog(copyID), k)
	keepsCounting(t, a.containerLog(orig))

	// Restore a local file: streamed to the agent over the socket.
	out, errOut, err = a.localCkpt(nil, ckptBin, "restore", path, "--pod", "default/counter-upload")
	if err != nil || !strings.HasPrefix(out, "restored default/counter-upload/counter (") {
		t.Fatalf("ckpt restore %s: %v\n%s%s", path, err, out, errOut)
	}
	upID := strings.TrimSuffix(strings.Fields(out)[2], ")")[1:]
	resumesAt(t, a.containerLog(upID), k)

	// Another user: the binary copied where nobody can run it.
	binDir, err := os.MkdirTemp("", "ckpt-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(binDir)
	nobodyBin := filepath.Join(binDir, "ckpt")
	copyFile(t, ckptBin, nobodyBin, 0o755)
	os.Chmod(binDir, 0o755)
	nobody := &syscall.Credential{Uid: 65534, Gid: 65534}

	_, errOut, err = a.localCkpt(nobody, nobodyBin, "checkpoints", "ls")
	if err == nil || !strings.Contains(errOut, "permission denied") || !strings.Contains(errOut, "is for root on the node") {
		t.Fatalf("nobody through a 0600 socket: %v\n%s", err, errOut)
	}
	// Loosen the permissions: the agent itself refuses by peer credentials.
	for d := a.rootDir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		if st, err := os.Stat(d); err == nil {
			mode := st.Mode().Perm()
			os.Chmod(d, mode|0o055)
			defer os.Chmod(d, mode)
		}
	}
	os.Chmod(sock, 0o666)
	defer os.Chmod(sock, 0o600)
	for _, args := range [][]string{{"checkpoints", "ls"}, {"checkpoint", "default/counter/counter"}, {"restore", name, "--pod", "default/x"}} {
		out, errOut, err = a.localCkpt(nobody, nobodyBin, args...)
		if err == nil || !strings.Contains(errOut, "403 Forbidden") || !strings.Contains(errOut, "user=uid:65534") ||
			!strings.Contains(errOut, "only root (uid 0) on the node may use the local socket") {
			t.Fatalf("nobody ckpt %v through an open socket: %v\n%s%s", args, err, out, errOut)
		}
	}
	if entries, _ := os.ReadDir(filepath.Join(a.rootDir, "checkpoints")); len(entries) != 2 { // the archive and .staging
		t.Fatalf("checkpoints after the refused requests: %v", entries)
	}

	// Over TCP nothing changed: no credentials, 401.
	if resp, err := a.do("GET", "/checkpoints", ""); err != nil || resp.status != 401 {
		t.Fatalf("TCP without a token: %v %+v", err, resp)
	}
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}
