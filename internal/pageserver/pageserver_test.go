package pageserver

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// image builds a page image whose every page is filled with its index.
func image(pages int) []byte {
	b := make([]byte, pages*int(PageSize))
	for i := 0; i < pages; i++ {
		for j := 0; j < int(PageSize); j++ {
			b[i*int(PageSize)+j] = byte(i + 1)
		}
	}
	return b
}

func request(t *testing.T, c net.Conn, cmd uint32, nr, vaddr, dst uint64) {
	t.Helper()
	var b [headerSize]byte
	h := header{cmd: cmd, nr: nr, vaddr: vaddr, dst: dst}
	h.encode(b[:])
	if _, err := c.Write(b[:]); err != nil {
		t.Fatal(err)
	}
}

// socketPair is a connected pair of Unix stream sockets, as the shim gives
// the daemon.
func socketPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	var conns [2]net.Conn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socket")
		if conns[i], err = net.FileConn(f); err != nil {
			t.Fatal(err)
		}
		f.Close()
		t.Cleanup(func() { conns[i].Close() })
	}
	return conns[0], conns[1]
}

// inFile writes data into a file behind junk bytes (as a tar member sits
// behind its header) and returns it as a FileSection.
func inFile(t *testing.T, data []byte) FileSection {
	t.Helper()
	path := filepath.Join(t.TempDir(), "archive")
	junk := bytes.Repeat([]byte{0xee}, 512)
	if err := os.WriteFile(path, append(junk, data...), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return FileSection{File: f, Off: int64(len(junk)), Size: int64(len(data))}
}

func TestServe(t *testing.T) {
	ps := PageSize
	data := image(5)
	// Two entries: 2 pages at 0x10000 (offset 0), 3 pages at 0x40000.
	extents := []extent{{vaddr: 0x10000, nr: 2, off: 0}, {vaddr: 0x40000, nr: 3, off: int64(2 * ps)}}
	transports := []struct {
		name  string
		pages func(t *testing.T) io.ReaderAt
		conn  func(t *testing.T) (net.Conn, net.Conn)
	}{
		{"read through user space", func(*testing.T) io.ReaderAt { return bytes.NewReader(data) },
			func(*testing.T) (net.Conn, net.Conn) { return net.Pipe() }},
		{"spliced from a file", func(t *testing.T) io.ReaderAt { return inFile(t, data) }, socketPair},
	}
	cases := []struct {
		name        string
		nr, vaddr   uint64
		wantNr      uint64
		wantFirstPg byte
	}{
		{"whole first entry", 2, 0x10000, 2, 1},
		{"second page of an entry", 1, 0x10000 + ps, 1, 2},
		{"cut at the end of its entry", 8, 0x40000 + ps, 2, 4},
		{"second entry", 3, 0x40000, 3, 3},
	}
	for _, tr := range transports {
		for _, tc := range cases {
			t.Run(tr.name+"/"+tc.name, func(t *testing.T) {
				idx := Index{7: {extents: extents, pages: tr.pages(t), size: int64(len(data))}}
				srv := &Server{Index: idx}
				a, b := tr.conn(t)
				done := make(chan error, 1)
				go func() { err := srv.Serve(a); a.Close(); done <- err }()
				request(t, b, cmdGet, tc.nr, tc.vaddr, 7)
				var hb [headerSize]byte
				if _, err := io.ReadFull(b, hb[:]); err != nil {
					t.Fatal(err)
				}
				var h header
				h.decode(hb[:])
				if h.cmd != cmdAddF|pePresent<<cmdBits || h.nr != tc.wantNr || h.vaddr != tc.vaddr || h.dst != 7 {
					t.Fatalf("answer %+v, want %d pages at %#x", h, tc.wantNr, tc.vaddr)
				}
				got := make([]byte, h.nr*ps)
				if _, err := io.ReadFull(b, got); err != nil {
					t.Fatal(err)
				}
				for i := uint64(0); i < h.nr; i++ {
					if got[i*ps] != tc.wantFirstPg+byte(i) || got[(i+1)*ps-1] != tc.wantFirstPg+byte(i) {
						t.Fatalf("page %d holds %d, want %d", i, got[i*ps], tc.wantFirstPg+byte(i))
					}
				}
				request(t, b, cmdClose, 0, 0, 0)
				var status [4]byte
				if _, err := io.ReadFull(b, status[:]); err != nil || binary.NativeEndian.Uint32(status[:]) != 0 {
					t.Fatalf("close answer %v %v", status, err)
				}
				if err := <-done; err != nil {
					t.Fatalf("Serve after close: %v", err)
				}
				if srv.Served.Load() != int64(tc.wantNr*ps) {
					t.Fatalf("served %d bytes, want %d", srv.Served.Load(), tc.wantNr*ps)
				}
			})
		}
	}
}

// TestServeSplicedFileTruncated: an archive file cut short under the
// server ends Serve with an error (the shim then stops the container).
func TestServeSplicedFileTruncated(t *testing.T) {
	data := image(4)
	fs := inFile(t, data)
	if err := os.Truncate(fs.File.Name(), fs.Off+int64(PageSize)); err != nil {
		t.Fatal(err)
	}
	srv := &Server{Index: Index{1: {extents: []extent{{vaddr: 0x10000, nr: 4}}, pages: fs, size: int64(len(data))}}}
	a, b := socketPair(t)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(a) }()
	request(t, b, cmdGet, 4, 0x10000, 1)
	go io.Copy(io.Discard, b)
	if err := <-done; err == nil || !strings.Contains(err.Error(), "page image") {
		t.Fatalf("Serve on a truncated file: %v, want an error naming the page image", err)
	}
}

// TestServeRefuses: requests for pages the images do not hold, a short
// page image and a vanished client end Serve with an error, which is the
// shim's signal to stop the container.
func TestServeRefuses(t *testing.T) {
	ps := PageSize
	data := image(2)
	good := &Process{extents: []extent{{vaddr: 0x10000, nr: 2}}, pages: bytes.NewReader(data), size: int64(len(data))}
	short := &Process{extents: []extent{{vaddr: 0x10000, nr: 4}}, pages: bytes.NewReader(data), size: int64(len(data))}
	cases := []struct {
		name string
		idx  Index
		req  func(t *testing.T, c net.Conn)
		want string
	}{
		{"unknown pid", Index{1: good}, func(t *testing.T, c net.Conn) { request(t, c, cmdGet, 1, 0x10000, 2) }, "not in the images"},
		{"address in no entry", Index{1: good}, func(t *testing.T, c net.Conn) { request(t, c, cmdGet, 1, 0x30000, 1) }, "not in the images"},
		{"unaligned address", Index{1: good}, func(t *testing.T, c net.Conn) { request(t, c, cmdGet, 1, 0x10001, 1) }, "not in the images"},
		{"page image too short", Index{1: short}, func(t *testing.T, c net.Conn) { request(t, c, cmdGet, 4, 0x10000, 1) }, "read 4 pages"},
		{"unknown command", Index{1: good}, func(t *testing.T, c net.Conn) { request(t, c, 99, 1, 0x10000, 1) }, "unexpected"},
		{"client gone", Index{1: good}, func(t *testing.T, c net.Conn) { c.Close() }, "without closing"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, b := net.Pipe()
			defer b.Close()
			done := make(chan error, 1)
			go func() { done <- (&Server{Index: tc.idx}).Serve(a) }()
			tc.req(t, b)
			err := <-done
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Serve: %v, want an error with %q", err, tc.want)
			}
		})
	}
	_ = ps
}

func FuzzReadPagemap(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte("\x00\x00\x00\x00\x00\x00\x00\x00"))
	// Magic of a pagemap image (img-common + PAGEMAP), then a 2-byte head.
	f.Add([]byte("\x11\x52\x54\x54\xb0\x20\x1e\x56\x02\x00\x00\x00\x08\x01"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(t.TempDir(), "pagemap-1.img")
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		pm, err := ReadPagemap(p)
		if err != nil {
			return
		}
		var next uint64
		for _, e := range pm.extents {
			if e.vaddr%PageSize != 0 || e.vaddr < next {
				t.Fatalf("accepted an unaligned or unsorted entry: %+v", e)
			}
			next = e.vaddr + e.nr*PageSize
		}
		for _, s := range pm.Eager() {
			if s.Off < 0 || s.Off+s.Len > pm.Bytes {
				t.Fatalf("eager span %+v outside the %d bytes of pages", s, pm.Bytes)
			}
		}
	})
}

// TestReadPagemapReal reads the pagemap of a real CRIU 4.2 dump of the
// counter example holding 64 MiB (its page image was 68595712 bytes).
func TestReadPagemapReal(t *testing.T) {
	pm, err := ReadPagemap("testdata/pagemap-1.img")
	if err != nil {
		t.Fatal(err)
	}
	if pm.PagesID != 1 || pm.Bytes != 68595712 {
		t.Fatalf("pages id %d, %d bytes; want 1 and 68595712", pm.PagesID, pm.Bytes)
	}
	var eager int64
	for _, s := range pm.Eager() {
		eager += s.Len
	}
	if eager == 0 || eager > 8<<20 {
		t.Fatalf("%d eager bytes; want some (stacks, file mappings) but far fewer than the 64 MiB of ballast", eager)
	}
	t.Logf("%d extents, %d bytes of pages, %d eager", len(pm.extents), pm.Bytes, eager)
}

// TestSpliceFallsBackToCopy: a file system that does not splice (EINVAL),
// or a kernel short of memory for the pipe (ENOMEM), still gets every byte
// through user space; a file cut short there is an error, never a short
// answer.
func TestSpliceFallsBackToCopy(t *testing.T) {
	data := image(3)
	for _, tc := range []struct {
		name     string
		errno    error
		truncate bool
	}{
		{"no splice", unix.EINVAL, false},
		{"no memory", unix.ENOMEM, false},
		{"no splice, file cut short", unix.EINVAL, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := inFile(t, data)
			if tc.truncate {
				if err := os.Truncate(fs.File.Name(), fs.Off+int64(PageSize)); err != nil {
					t.Fatal(err)
				}
			}
			a, b := socketPair(t)
			zc := newSplicer(a)
			if zc == nil {
				t.Fatal("no splicer for a socket")
			}
			defer zc.close()
			zc.fromFile = func(int, *int64, int, int) (int64, error) { return 0, tc.errno }
			got := make(chan []byte, 1)
			go func() { b, _ := io.ReadAll(b); got <- b }()
			err := zc.send(fs.File, fs.Off, len(data))
			a.Close()
			if tc.truncate {
				if err == nil {
					t.Fatal("send of a file cut short succeeded")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if g := <-got; !bytes.Equal(g, data) {
				t.Fatalf("got %d bytes, want the %d of the page image", len(g), len(data))
			}
		})
	}
}
