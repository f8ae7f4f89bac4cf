package embedded

import (
	"archive/tar"
	"bytes"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"sync"
	"testing"

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

// readTar returns every regular member's content, in archive order.
func readTar(t *testing.T, path string) (names []string, bodies map[string][]byte) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	bodies = map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return names, bodies
		}
		if err != nil {
			t.Fatalf("read %s: %v", path, err)
		}
		names = append(names, hdr.Name)
		if hdr.Typeflag == tar.TypeReg {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			bodies[hdr.Name] = b
		}
	}
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
	c, err := startCapture(images, spool, "checkpoint", 3, sa)
	if err != nil {
		t.Fatal(err)
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
	_, bodies := readTar(t, f.Name())
	for name, b := range data {
		if !bytes.Equal(bodies["checkpoint/"+name], b) {
			t.Errorf("%s: archived %d bytes, want the %d written", name, len(bodies["checkpoint/"+name]), len(b))
		}
	}
	if _, ok := bodies["checkpoint/pages-3.img"]; ok {
		t.Errorf("the unused FIFO was archived")
	}
	if string(bodies["checkpoint/inventory.img"]) != "inv" {
		t.Errorf("inventory.img missing")
	}
	if m, _ := filepath.Glob(filepath.Join(images, "pages-*")); len(m) != 0 {
		t.Errorf("FIFOs left behind: %v", m)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if _, err := archive.Extract(f, t.TempDir(), archive.DefaultLimits(), nil); err != nil {
		t.Fatalf("archive.Extract: %v", err)
	}
}
