package server

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ListenUnix listens on a unix socket at path, mode 0600 (so only its
// owner, root on a node, can connect), in a directory created 0700 if
// missing. The socket is bound in a private directory, restricted, and
// only then renamed into place, so that it is never reachable with wider
// permissions. A stale socket at path (nobody listening) is removed; a
// live one, or anything that is not a socket, is an error. Closing the
// listener removes the socket if it is still this one.
func ListenUnix(path string) (net.Listener, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("local socket %s: %w", path, err)
	}
	if err := removeStale(path); err != nil {
		return nil, err
	}
	private, err := os.MkdirTemp(dir, ".ckpt-sock-")
	if err != nil {
		return nil, fmt.Errorf("local socket %s: %w", path, err)
	}
	defer os.RemoveAll(private)
	tmp := filepath.Join(private, "s")
	// sun_path holds 107 bytes and a NUL; the private name is the longer.
	if len(tmp) > 107 {
		return nil, fmt.Errorf("local socket %s: path too long for a unix socket (%d bytes in its private directory, limit 107): use a shorter --root-dir", path, len(tmp))
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("local socket %s: %w", path, err)
	}
	l.SetUnlinkOnClose(false) // it is unlinked at its final path, below
	fail := func(err error) (net.Listener, error) {
		l.Close()
		return nil, fmt.Errorf("local socket %s: %w", path, err)
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return fail(err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(tmp, &st); err != nil {
		return fail(err)
	}
	// RENAME_NOREPLACE: an agent that started meanwhile keeps its socket.
	if err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, path, unix.RENAME_NOREPLACE); err != nil {
		return fail(err)
	}
	return &unixListener{UnixListener: l, path: path, dev: st.Dev, ino: st.Ino}, nil
}

// removeStale removes a socket at path that nobody listens on.
func removeStale(path string) error {
	st, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("local socket %s: %w", path, err)
	}
	if st.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("local socket %s: exists and is not a socket (%s); not removing it", path, st.Mode().Type())
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("local socket %s: another agent is listening on it", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("local socket %s: probe: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("local socket %s: remove stale socket: %w", path, err)
	}
	return nil
}

type unixListener struct {
	*net.UnixListener
	path     string
	dev, ino uint64
}

// Close stops listening and removes the socket file if it is still ours.
func (l *unixListener) Close() error {
	err := l.UnixListener.Close()
	var st unix.Stat_t
	if unix.Lstat(l.path, &st) == nil && st.Dev == l.dev && st.Ino == l.ino {
		os.Remove(l.path)
	}
	return err
}
