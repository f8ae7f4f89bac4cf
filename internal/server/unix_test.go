package server

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestListenUnixPermissionsAndCleanup(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "root")
	path := filepath.Join(dir, "ckpt.sock")
	l, err := ListenUnix(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Type() != os.ModeSocket || st.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, want a socket 0600", st.Mode())
	}
	if sys := st.Sys().(*syscall.Stat_t); int(sys.Uid) != os.Geteuid() {
		t.Fatalf("socket owned by %d", sys.Uid)
	}
	if dst, _ := os.Stat(dir); dst.Mode().Perm() != 0o700 {
		t.Fatalf("directory mode %v, want 0700", dst.Mode().Perm())
	}
	// Nothing but the socket is left in the directory.
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("directory holds %v", entries)
	}
	go func() {
		if c, err := l.Accept(); err == nil {
			c.Close()
		}
	}()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()

	// A live socket is not taken over.
	if _, err := ListenUnix(path); err == nil || !strings.Contains(err.Error(), "another agent") {
		t.Fatalf("second listener: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Fatalf("socket left after Close: %v", err)
	}
}

func TestListenUnixStaleAndForeign(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ckpt.sock")
	// A stale socket: bound, then its listener gone without unlinking.
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()
	l, err := ListenUnix(path)
	if err != nil {
		t.Fatalf("over a stale socket: %v", err)
	}
	l.Close()

	// Anything else at the path is never removed.
	for _, make := range []func() error{
		func() error { return os.WriteFile(path, []byte("keep"), 0o600) },
		func() error { return os.Symlink("/etc/passwd", path) },
		func() error { return os.Mkdir(path, 0o700) },
	} {
		if err := make(); err != nil {
			t.Fatal(err)
		}
		if _, err := ListenUnix(path); err == nil || !strings.Contains(err.Error(), "not a socket") {
			t.Fatalf("over a non-socket: %v", err)
		}
		if _, err := os.Lstat(path); err != nil {
			t.Fatalf("the non-socket was removed: %v", err)
		}
		os.Remove(path)
	}
}

// Close leaves a socket that replaced ours alone.
func TestListenUnixCloseKeepsForeignSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ckpt.sock")
	l, err := ListenUnix(path)
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(path)
	other, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	l.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("another agent's socket was removed: %v", err)
	}
}

func TestListenUnixPathTooLong(t *testing.T) {
	dir := filepath.Join(t.TempDir(), strings.Repeat("d", 100))
	if _, err := ListenUnix(filepath.Join(dir, "ckpt.sock")); err == nil || !strings.Contains(err.Error(), "use a shorter --root-dir") {
		t.Fatalf("long path: %v", err)
	}
}
