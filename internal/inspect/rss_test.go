package inspect

import (
	"archive/tar"
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
)

// bigArchive writes the containerd fixture with pid 12's memory replaced by
// one region of size bytes (a repeating pattern, a marker at the end),
// streamed to disk.
func bigArchive(t *testing.T, size int64, marker string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "big.tar")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	bw := bufio.NewWriterSize(f, 1<<20)
	tw := tar.NewWriter(bw)
	for _, m := range readMembers(t, containerdFixture) {
		h := m.hdr
		var body io.Reader = nil
		switch h.Name {
		case "checkpoint/pagemap-12.img":
			m.data = pagemapImage(t, 1, [2]uint64{0x7f0000000000, uint64(size) / pageSize})
		case "checkpoint/pages-1.img":
			body = &patternReader{left: size, marker: marker}
			h.Size = size
		}
		if body == nil {
			if h.Typeflag == tar.TypeReg {
				h.Size = int64(len(m.data))
			}
			body = bytesReader(m.data)
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(tw, body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := bw.Flush(); err != nil {
		t.Fatal(err)
	}
	return path
}

func bytesReader(b []byte) io.Reader { return &patternReader{left: int64(len(b)), fixed: b} }

// patternReader yields left bytes: fixed if set, else a pattern ending in
// marker.
type patternReader struct {
	left   int64
	off    int64
	fixed  []byte
	marker string
}

func (p *patternReader) Read(b []byte) (int, error) {
	if p.left == 0 {
		return 0, io.EOF
	}
	n := int64(len(b))
	if n > p.left {
		n = p.left
	}
	for i := int64(0); i < n; i++ {
		pos := p.off + i
		switch {
		case p.fixed != nil:
			b[i] = p.fixed[pos]
		default:
			end := p.off + p.left // total size
			if k := pos - (end - int64(len(p.marker)) - 64); k >= 0 && k < int64(len(p.marker)) {
				b[i] = p.marker[k]
			} else {
				b[i] = byte(pos*7 + pos>>12)
			}
		}
	}
	p.off += n
	p.left -= n
	return int(n), nil
}

// TestBoundedMemory inspects and searches a large archive in a child
// process and checks the child's peak RSS. CKPT_INSPECT_BIG_GIB sets the
// size (default 1; the figure is 4).
func TestBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("writes a GiB-sized archive; skipped with -short")
	}
	if path := os.Getenv("CKPT_INSPECT_RSS_CHILD"); path != "" {
		_, res, err := Search(path, Options{Cmdline: true, Env: true}, SearchOptions{Literal: "needle-in-memory", Context: 16})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Matches) != 1 {
			t.Fatalf("%d matches", len(res.Matches))
		}
		// VmHWM is this process's own peak (getrusage's ru_maxrss would
		// include the parent's, inherited across fork and exec).
		status, err := os.ReadFile("/proc/self/status")
		if err != nil {
			t.Fatal(err)
		}
		m := regexp.MustCompile(`VmHWM:\s+(\d+) kB`).FindSubmatch(status)
		if m == nil {
			t.Fatalf("no VmHWM in /proc/self/status")
		}
		fmt.Printf("peak-rss-kib %s\n", m[1])
		return
	}
	gib := int64(1)
	if v, err := strconv.ParseInt(os.Getenv("CKPT_INSPECT_BIG_GIB"), 10, 64); err == nil && v > 0 {
		gib = v
	}
	path := bigArchive(t, gib<<30, "needle-in-memory")
	cmd := exec.Command(os.Args[0], "-test.run=^TestBoundedMemory$", "-test.count=1")
	cmd.Env = append(os.Environ(), "CKPT_INSPECT_RSS_CHILD="+path)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("search of %d GiB: %v\n%s", gib, err, out)
	}
	m := regexp.MustCompile(`peak-rss-kib (\d+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("child did not report its peak RSS:\n%s", out)
	}
	rss, _ := strconv.ParseInt(string(m[1]), 10, 64) // KiB
	t.Logf("searched %d GiB with a peak RSS of %d MiB", gib, rss>>10)
	if rss > 100<<10 {
		t.Errorf("peak RSS %d MiB searching %d GiB, want under 100 MiB", rss>>10, gib)
	}
}
