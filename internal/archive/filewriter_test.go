package archive

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
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

func randomBytes(n int, seed int64) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

// feedPipe returns a pipe's read end that data is written into; it is
// closed when the test ends.
func feedPipe(t *testing.T, data []byte) *os.File {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	go func() {
		w.Write(data)
		w.Close()
	}()
	return r
}

// streamPipe feeds data through a pipe into sa.Stream.
func streamPipe(t *testing.T, sa *FileWriter, name string, data []byte) error {
	t.Helper()
	return sa.Stream(name, feedPipe(t, data))
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

func TestFileWriterSizes(t *testing.T) {
	for _, size := range []int{0, 1, 511, 512, 513, 64 << 10, 3<<20 + 7} {
		t.Run(strconv.Itoa(size), func(t *testing.T) {
			f := newArchiveFile(t)
			sa := NewFileWriter(f)
			if err := sa.AddDirEntry("checkpoint", 0o700); err != nil {
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
			want := []string{"checkpoint/", "checkpoint/pages-1.img", "config.dump", ManifestFile}
			if strings.Join(names, ",") != strings.Join(want, ",") {
				t.Fatalf("members %q, want %q", names, want)
			}
			if !bytes.Equal(bodies["checkpoint/pages-1.img"], pages) {
				t.Fatalf("pages member differs from what was streamed")
			}
			manifest := string(bodies[ManifestFile])
			wantManifest := sum(pages) + "  checkpoint/pages-1.img\n" + sum([]byte(`{"id":"x"}`)) + "  config.dump\n"
			if manifest != wantManifest {
				t.Fatalf("manifest:\n%s\nwant:\n%s", manifest, wantManifest)
			}
			// The archive package's reader verifies the manifest.
			if _, err := f.Seek(0, io.SeekStart); err != nil {
				t.Fatal(err)
			}
			if _, err := Extract(f, t.TempDir(), DefaultLimits(), nil); err != nil {
				t.Fatalf("Extract: %v", err)
			}
			if tarBin, err := exec.LookPath("tar"); err == nil {
				if out, err := exec.Command(tarBin, "-tf", f.Name()).CombinedOutput(); err != nil {
					t.Fatalf("tar -tf: %v\n%s", err, out)
				}
			}
		})
	}
}

func TestFileWriterHeaderSlotBeyondUstar(t *testing.T) {
	sa := NewFileWriter(nil)
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

func TestFileWriterRefusals(t *testing.T) {
	f := newArchiveFile(t)
	sa := NewFileWriter(f)
	if err := sa.AddBytes("a", []byte("1")); err != nil {
		t.Fatal(err)
	}
	if err := sa.AddBytes("a", []byte("2")); !errors.Is(err, ErrDuplicate) {
		t.Errorf("duplicate member: got %v", err)
	}
	if err := sa.AddBytes(ManifestFile, nil); !errors.Is(err, ErrBadName) {
		t.Errorf("manifest name: got %v", err)
	}
	// While a member streams, the tail is taken.
	if _, ok := sa.tryClaim("b"); !ok {
		t.Fatal("could not claim the tail")
	}
	if err := streamPipe(t, sa, "c", []byte("x")); !errors.Is(err, ErrTailTaken) {
		t.Errorf("second stream: got %v, want ErrTailTaken", err)
	}
}

// TestSpliceAllFallsBackToCopy: where splice into the archive is refused
// (a file system without it, EINVAL; no kernel memory for a large pipe's
// buffers, ENOMEM), at once or after a first chunk, every byte still lands
// at its offset through user space, and the total is published.
func TestSpliceAllFallsBackToCopy(t *testing.T) {
	data := randomBytes(3*spliceLen+1234, 7)
	realSplice := pipeToFile
	defer func() { pipeToFile = realSplice }()
	for _, tc := range []struct {
		name      string
		errno     error
		afterCall int // splice calls that succeed first
	}{
		{"splices", nil, 0},
		{"no splice", unix.EINVAL, 0},
		{"no memory", unix.ENOMEM, 0},
		{"no memory after a chunk", unix.ENOMEM, 1},
		{"no splice after two chunks", unix.ENOSYS, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			calls := 0
			pipeToFile = func(pipe, file int, off *int64, n int) (int64, error) {
				calls++
				if tc.errno != nil && calls > tc.afterCall {
					return 0, tc.errno
				}
				return realSplice(pipe, file, off, n)
			}
			f := newArchiveFile(t)
			r := feedPipe(t, data)
			const off = 512
			var written atomic.Int64
			n, err := spliceAll(r, f, off, &written, make(chan struct{}, 1))
			if err != nil || n != int64(len(data)) || written.Load() != n {
				t.Fatalf("spliceAll: %d bytes (published %d), %v; want %d", n, written.Load(), err, len(data))
			}
			got := make([]byte, len(data))
			if _, err := f.ReadAt(got, off); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("the file does not hold the data at its offset (%v)", err)
			}
			if tc.errno != nil && calls != tc.afterCall+1 {
				t.Errorf("%d splice calls, want %d: a refused splice is not tried again", calls, tc.afterCall+1)
			}
		})
	}
}
