package embedded

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/ckpt-dev/ckpt/internal/archive"
)

func randomBytes(n int, seed int64) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

// streamPipe feeds data through a pipe into sa.stream.
func streamPipe(t *testing.T, sa *streamArchive, name string, data []byte) error {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	go func() {
		w.Write(data)
		w.Close()
	}()
	return sa.stream(name, r)
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

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestStreamArchiveSizes(t *testing.T) {
	for _, size := range []int{0, 1, 511, 512, 513, 64 << 10, 3<<20 + 7} {
		t.Run(strconv.Itoa(size), func(t *testing.T) {
			f := newArchiveFile(t)
			sa := newStreamArchive(f)
			if err := sa.addDirHeader("checkpoint", 0o700); err != nil {
				t.Fatal(err)
			}
			pages := randomBytes(size, int64(size))
			if err := streamPipe(t, sa, "checkpoint/pages-1.img", pages); err != nil {
				t.Fatal(err)
			}
			if err := sa.AddBytes("config.dump", []byte(`{"id":"x"}`)); err != nil {
				t.Fatal(err)
			}
			if err := sa.Close(); err != nil {
				t.Fatal(err)
			}
			names, bodies := readTar(t, f.Name())
			want := []string{"checkpoint/", "checkpoint/pages-1.img", "config.dump", archive.ManifestFile}
			if strings.Join(names, ",") != strings.Join(want, ",") {
				t.Fatalf("members %q, want %q", names, want)
			}
			if !bytes.Equal(bodies["checkpoint/pages-1.img"], pages) {
				t.Fatalf("pages member differs from what was streamed")
			}
			manifest := string(bodies[archive.ManifestFile])
			wantManifest := sum(pages) + "  checkpoint/pages-1.img\n" + sum([]byte(`{"id":"x"}`)) + "  config.dump\n"
			if manifest != wantManifest {
				t.Fatalf("manifest:\n%s\nwant:\n%s", manifest, wantManifest)
			}
			// The archive package's reader verifies the manifest.
			if _, err := f.Seek(0, io.SeekStart); err != nil {
				t.Fatal(err)
			}
			if _, err := archive.Extract(f, t.TempDir(), archive.DefaultLimits(), nil); err != nil {
				t.Fatalf("archive.Extract: %v", err)
			}
			if tarBin, err := exec.LookPath("tar"); err == nil {
				if out, err := exec.Command(tarBin, "-tf", f.Name()).CombinedOutput(); err != nil {
					t.Fatalf("tar -tf: %v\n%s", err, out)
				}
			}
		})
	}
}

func TestStreamArchiveHeaderSlotBeyondUstar(t *testing.T) {
	sa := newStreamArchive(nil)
	for _, size := range []int64{0, 1<<33 - 1, 1 << 33, 1 << 36} {
		hdr, err := sa.header("checkpoint/pages-1.img", tar.TypeReg, 0o600, size, true)
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		if len(hdr) != blockSize {
			t.Fatalf("size %d: header of %d bytes", size, len(hdr))
		}
		h, err := tar.NewReader(bytes.NewReader(append(hdr, make([]byte, 1024)...))).Next()
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		if h.Size != size || h.Name != "checkpoint/pages-1.img" {
			t.Fatalf("size %d: read back %q of %d bytes", size, h.Name, h.Size)
		}
	}
}

func TestStreamArchiveRefusals(t *testing.T) {
	f := newArchiveFile(t)
	sa := newStreamArchive(f)
	if err := sa.AddBytes("a", []byte("1")); err != nil {
		t.Fatal(err)
	}
	if err := sa.AddBytes("a", []byte("2")); !errors.Is(err, archive.ErrDuplicate) {
		t.Errorf("duplicate member: got %v", err)
	}
	if err := sa.AddBytes(archive.ManifestFile, nil); !errors.Is(err, archive.ErrBadName) {
		t.Errorf("manifest name: got %v", err)
	}
	// While a member streams, the tail is taken.
	if _, ok := sa.tryClaim("b"); !ok {
		t.Fatal("could not claim the tail")
	}
	if err := streamPipe(t, sa, "c", []byte("x")); !errors.Is(err, errTailTaken) {
		t.Errorf("second stream: got %v, want errTailTaken", err)
	}
}

// TestCaptureFIFOs plays CRIU: it writes two pages images at once through
// the FIFOs (one streams into the archive, the other is spooled) and leaves
// a third unused.
func TestCaptureFIFOs(t *testing.T) {
	images, spool := t.TempDir(), t.TempDir()
	f := newArchiveFile(t)
	sa := newStreamArchive(f)
	if err := sa.addDirHeader("checkpoint", 0o700); err != nil {
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
