package archive

import (
	"io"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkWriterAddFile measures streaming a large page image into an
// archive file on disk, hashing included (compare BenchmarkPlainCopy).
func BenchmarkWriterAddFile(b *testing.B) {
	src, dst := benchFiles(b)
	b.SetBytes(benchSize)
	for b.Loop() {
		out, err := os.Create(dst)
		if err != nil {
			b.Fatal(err)
		}
		w := NewWriter(out)
		if err := w.AddFile("checkpoint/pages-1.img", src); err != nil {
			b.Fatal(err)
		}
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
		out.Close()
	}
}

// BenchmarkPlainCopy is the floor: the same bytes copied without tar or hash.
func BenchmarkPlainCopy(b *testing.B) {
	src, dst := benchFiles(b)
	b.SetBytes(benchSize)
	for b.Loop() {
		in, _ := os.Open(src)
		out, _ := os.Create(dst)
		if _, err := io.Copy(out, in); err != nil {
			b.Fatal(err)
		}
		in.Close()
		out.Close()
	}
}

const benchSize = 256 << 20

func benchFiles(b *testing.B) (src, dst string) {
	dir := b.TempDir()
	src = filepath.Join(dir, "pages.img")
	f, err := os.Create(src)
	if err != nil {
		b.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	for i := range chunk {
		chunk[i] = byte(i * 7)
	}
	for range benchSize / len(chunk) {
		f.Write(chunk)
	}
	f.Close()
	return src, filepath.Join(dir, "out.tar")
}
