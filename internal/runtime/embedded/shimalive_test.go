package embedded

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// TestShimAlive: a container's shim is alive while its process runs, and
// not once it is a zombie, gone, or its PID names another process.
func TestShimAlive(t *testing.T) {
	r := &Runtime{cfg: Config{StateDir: t.TempDir()}}
	const id = "0123456789abcdef"
	dir := r.containerDir(id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if r.shimAlive(id) {
		t.Fatal("alive without a shim.pid")
	}
	shim := exec.Command("sh", "-c", "sleep 60", "ckpt-shim-"+id) // the ID in its command line, as a shim's
	if err := shim.Start(); err != nil {
		t.Fatal(err)
	}
	defer shim.Process.Kill()
	writePid := func(pid int) {
		if err := os.WriteFile(filepath.Join(dir, fileShimPid), []byte(strconv.Itoa(pid)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writePid(shim.Process.Pid)
	if !r.shimAlive(id) {
		t.Fatal("a running shim is not alive")
	}
	writePid(os.Getpid()) // a live process that is not the shim
	if r.shimAlive(id) {
		t.Fatal("another process taken for the shim")
	}
	writePid(shim.Process.Pid)
	shim.Process.Signal(syscall.SIGKILL)
	for deadline := time.Now().Add(5 * time.Second); !processGone(shim.Process.Pid); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the killed shim never exited")
		}
	}
	if r.shimAlive(id) {
		t.Fatal("a zombie shim is alive")
	}
	shim.Wait()
	if r.shimAlive(id) {
		t.Fatal("a reaped shim is alive")
	}
}
