package embedded

import (
	"bytes"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ckpt-dev/ckpt/internal/archive"
)

func randomBytes(n int, seed int64) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

func newArchiveFile(t *testing.T) *os.File {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(t.TempDir(), "a.tar"), os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// TestCaptureFIFOs plays CRIU: it writes two pages images at once through
// the FIFOs (one streams into the archive, the other is spooled) and leaves
// a third unused.
func TestCaptureFIFOs(t *testing.T) {
	images, spool := t.TempDir(), t.TempDir()
	f := newArchiveFile(t)
	sa := archive.NewFileWriter(f)
	if err := sa.AddDirEntry("checkpoint", 0o700); err != nil {
		t.Fatal(err)
	}
	c, err := startCapture(images, spool, "checkpoint", 3, sa, filepath.Join(t.TempDir(), "pipe-max-size.orig"))
	if err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		for _, k := range c.keep {
			if n, err := unix.FcntlInt(k.Fd(), unix.F_GETPIPE_SZ, 0); err != nil || n != fifoPipeSize {
				t.Errorf("FIFO buffer %d (%v), want %d", n, err, fifoPipeSize)
			}
		}
		if b, _ := os.ReadFile(pipeMaxSizePath); strings.TrimSpace(string(b)) == strconv.Itoa(fifoPipeSize) {
			t.Errorf("fs.pipe-max-size left raised")
		}
	}
	data := map[string][]byte{
		"pages-1.img": randomBytes(5<<20+3, 1),
		"pages-2.img": randomBytes(2<<20+9, 2),
	}
	// Both writers stay open until both have written half: the images are
	// in flight together.
	var half, wg sync.WaitGroup
	half.Add(len(data))
	for name, b := range data {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w, err := os.OpenFile(filepath.Join(images, name), os.O_WRONLY, 0)
			if err != nil {
				t.Error(err)
				half.Done()
				return
			}
			defer w.Close()
			w.Write(b[:len(b)/2])
			half.Done()
			half.Wait()
			w.Write(b[len(b)/2:])
		}()
	}
	wg.Wait()
	// CRIU also leaves small images as files in the directory.
	os.WriteFile(filepath.Join(images, "inventory.img"), []byte("inv"), 0o600)
	if err := c.finish(); err != nil {
		t.Fatal(err)
	}
	if err := c.flush(); err != nil {
		t.Fatal(err)
	}
	if err := sa.AddDir("checkpoint", images); err != nil {
		t.Fatalf("AddDir after the FIFOs are gone: %v", err)
	}
	if err := sa.Close(); err != nil {
		t.Fatal(err)
	}
	// The archive package's reader verifies every member against the manifest.
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	if _, err := archive.Extract(f, out, archive.DefaultLimits(), nil); err != nil {
		t.Fatalf("archive.Extract: %v", err)
	}
	member := func(name string) []byte {
		b, _ := os.ReadFile(filepath.Join(out, "checkpoint", name))
		return b
	}
	for name, b := range data {
		if got := member(name); !bytes.Equal(got, b) {
			t.Errorf("%s: archived %d bytes, want the %d written", name, len(got), len(b))
		}
	}
	if _, err := os.Stat(filepath.Join(out, "checkpoint", "pages-3.img")); err == nil {
		t.Errorf("the unused FIFO was archived")
	}
	if string(member("inventory.img")) != "inv" {
		t.Errorf("inventory.img missing")
	}
	if m, _ := filepath.Glob(filepath.Join(images, "pages-*")); len(m) != 0 {
		t.Errorf("FIFOs left behind: %v", m)
	}
}
