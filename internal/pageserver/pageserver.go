// Package pageserver serves memory pages to `criu lazy-pages` with CRIU's
// page-server protocol (criu/page-xfer.c), straight from the page images of
// a checkpoint archive: nothing is copied out of the archive first.
//
// The protocol, as CRIU 4.x speaks it: the client sends fixed 32-byte
// requests {u32 cmd; u64 nr_pages; u64 vaddr; u64 dst_id} (native byte
// order, cmd padded to 8 bytes). PS_IOV_GET asks for nr_pages pages at
// vaddr of the process dst_id (its pid in the images); the answer is the
// same header with cmd PS_IOV_ADD_F|PE_PRESENT<<16 and the number of pages
// sent (at most those asked for, and only up to the end of the pagemap
// entry holding vaddr), then the pages. PS_IOV_CLOSE and
// PS_IOV_FORCE_CLOSE end the session; the server answers a 32-bit 0.
package pageserver

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"sync/atomic"

	"github.com/checkpoint-restore/go-criu/v8/crit"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pagemap"
)

// Protocol constants from criu/page-xfer.c and criu/include/pagemap.h.
const (
	cmdAddF       = 6
	cmdGet        = 7
	cmdClose      = 0x1023
	cmdForceClose = 0x1024
	cmdBits       = 16

	peLazy    = 1 << 1
	pePresent = 1 << 2

	headerSize = 32
	// maxPagemapBytes bounds one pagemap image.
	maxPagemapBytes = 64 << 20
)

// PageSize is the size of one page.
var PageSize = uint64(os.Getpagesize())

// extent is one pagemap entry whose pages are in the page image.
type extent struct {
	vaddr, nr uint64
	off       int64 // offset of its first page in the page image
	lazy      bool  // restored by lazy-pages, not by the restore itself
}

// Span is a byte range of a page image.
type Span struct{ Off, Len int64 }

// Process is one process's pages: where they are and how to read them.
type Process struct {
	extents []extent
	pages   io.ReaderAt
	size    int64 // bytes of the page image
}

// Index maps a pid (as in the images) to its pages.
type Index map[uint64]*Process

// Pagemap is a decoded pagemap-<pid>.img: which page image holds the pages,
// and the entries in order.
type Pagemap struct {
	PagesID uint32
	extents []extent
	Bytes   int64 // bytes of pages present in the page image
	// Remote is the bytes of pages a lazy dump left in the process (marked
	// lazy and not present): a live migration's destination pulls them.
	Remote int64
}

// ReadPagemap decodes a pagemap image and checks that its entries are
// aligned, sorted and bounded (the images are untrusted).
func ReadPagemap(path string) (*Pagemap, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() || st.Size() > maxPagemapBytes {
		return nil, fmt.Errorf("pagemap %s: not a regular file of at most %d bytes", path, maxPagemapBytes)
	}
	pm, err := decodePagemap(f)
	if err != nil {
		return nil, fmt.Errorf("pagemap %s: %w", path, err)
	}
	return pm, nil
}

func decodePagemap(f *os.File) (pm *Pagemap, err error) {
	defer func() {
		if r := recover(); r != nil {
			pm, err = nil, fmt.Errorf("decoder panic: %v", r)
		}
	}()
	img, err := crit.New(f, nil, "", false, false).Decode(&pagemap.PagemapHead{})
	if err != nil {
		return nil, err
	}
	if len(img.Entries) == 0 {
		return nil, errors.New("no head")
	}
	head, ok := img.Entries[0].Message.(*pagemap.PagemapHead)
	if !ok {
		return nil, errors.New("no head")
	}
	pm = &Pagemap{PagesID: head.GetPagesId()}
	var next uint64
	for i, m := range img.Entries[1:] {
		e, ok := m.Message.(*pagemap.PagemapEntry)
		if !ok {
			return nil, fmt.Errorf("entry %d is not a pagemap entry", i)
		}
		nr := e.GetNrPages()
		if e.NrPages == nil {
			nr = uint64(e.GetCompatNrPages())
		}
		present, lazy := !e.GetInParent(), false
		if e.Flags != nil {
			present = e.GetFlags()&pePresent != 0
			lazy = e.GetFlags()&peLazy != 0
		}
		vaddr := e.GetVaddr()
		if nr == 0 {
			continue
		}
		if vaddr%PageSize != 0 || vaddr < next || nr > (1<<40)/PageSize || vaddr+nr*PageSize < vaddr {
			return nil, fmt.Errorf("entry %d (vaddr 0x%x, %d pages) is unaligned, unsorted or too large", i, vaddr, nr)
		}
		next = vaddr + nr*PageSize
		if !present {
			if lazy {
				pm.Remote += int64(nr * PageSize)
			}
			continue
		}
		pm.extents = append(pm.extents, extent{vaddr: vaddr, nr: nr, off: pm.Bytes, lazy: lazy})
		pm.Bytes += int64(nr * PageSize)
		if pm.Bytes > 1<<46 {
			return nil, errors.New("too many pages")
		}
	}
	return pm, nil
}

// Eager returns the ranges of the page image that the restore itself reads
// (pages not marked lazy), merged where adjacent.
func (pm *Pagemap) Eager() []Span {
	var out []Span
	for _, e := range pm.extents {
		if e.lazy {
			continue
		}
		n := int64(e.nr * PageSize)
		if k := len(out); k > 0 && out[k-1].Off+out[k-1].Len == e.off {
			out[k-1].Len += n
			continue
		}
		out = append(out, Span{Off: e.off, Len: n})
	}
	return out
}

// PageSource opens the page image pages-<id>.img.
type PageSource func(pagesID uint32) (r io.ReaderAt, size int64, err error)

// LoadIndex reads every pagemap-<pid>.img of an images directory and binds
// it to its page image. A page image smaller than its pagemap says is an
// error.
func LoadIndex(imagesDir string, open PageSource) (Index, error) {
	matches, err := filepath.Glob(filepath.Join(imagesDir, "pagemap-*.img"))
	if err != nil {
		return nil, err
	}
	idx := Index{}
	for _, m := range matches {
		var pid uint64
		if _, err := fmt.Sscanf(filepath.Base(m), "pagemap-%d.img", &pid); err != nil {
			continue // pagemap-shmem-*.img: shared memory is not lazy
		}
		pm, err := ReadPagemap(m)
		if err != nil {
			return nil, err
		}
		r, size, err := open(pm.PagesID)
		if err != nil {
			return nil, fmt.Errorf("pages of pid %d: %w", pid, err)
		}
		if size < pm.Bytes {
			return nil, fmt.Errorf("pages-%d.img holds %d bytes, pagemap-%d.img needs %d", pm.PagesID, size, pid, pm.Bytes)
		}
		idx[pid] = &Process{extents: pm.extents, pages: r, size: size}
	}
	return idx, nil
}

// find returns the extent holding vaddr.
func (p *Process) find(vaddr uint64) (extent, bool) {
	i := sort.Search(len(p.extents), func(i int) bool {
		e := p.extents[i]
		return e.vaddr+e.nr*PageSize > vaddr
	})
	if i == len(p.extents) || p.extents[i].vaddr > vaddr {
		return extent{}, false
	}
	return p.extents[i], true
}

// Server answers one lazy-pages client from an Index.
type Server struct {
	Index Index
	// Served counts the bytes of pages sent.
	Served atomic.Int64
}

// header is the wire form of struct page_server_iov.
type header struct {
	cmd            uint32
	nr, vaddr, dst uint64
}

func (h *header) decode(b []byte) {
	h.cmd = binary.NativeEndian.Uint32(b[0:])
	h.nr = binary.NativeEndian.Uint64(b[8:])
	h.vaddr = binary.NativeEndian.Uint64(b[16:])
	h.dst = binary.NativeEndian.Uint64(b[24:])
}

func (h *header) encode(b []byte) {
	clear(b[:headerSize])
	binary.NativeEndian.PutUint32(b[0:], h.cmd)
	binary.NativeEndian.PutUint64(b[8:], h.nr)
	binary.NativeEndian.PutUint64(b[16:], h.vaddr)
	binary.NativeEndian.PutUint64(b[24:], h.dst)
}

// maxReply bounds one answer (CRIU asks for at most 4 MiB at once).
const maxReply = 16 << 20

// Serve answers requests on conn until the client closes the session (nil)
// or something fails. A request for pages the index does not hold, or a
// page image that cannot be read, is an error: the caller must stop the
// restored process before conn is closed, because `criu lazy-pages` gives
// up and the kernel then fills missing pages with zeros.
func (s *Server) Serve(conn io.ReadWriter) error {
	in := make([]byte, headerSize)
	var buf []byte // pages read through user space, when they cannot be spliced
	zc := newSplicer(conn)
	defer zc.close()
	for {
		if _, err := io.ReadFull(conn, in); err != nil {
			if err == io.EOF {
				return errors.New("lazy-pages closed the connection without closing the session")
			}
			return fmt.Errorf("read request: %w", err)
		}
		var h header
		h.decode(in)
		switch h.cmd & (1<<cmdBits - 1) {
		case cmdClose, cmdForceClose:
			var status [4]byte
			_, err := conn.Write(status[:])
			return err
		case cmdGet:
		default:
			return fmt.Errorf("unexpected page-server command %#x", h.cmd)
		}
		p := s.Index[h.dst]
		if p == nil {
			return fmt.Errorf("pages of pid %d requested: not in the images", h.dst)
		}
		e, ok := p.find(h.vaddr)
		if !ok || h.vaddr%PageSize != 0 || h.nr == 0 {
			return fmt.Errorf("pid %d: %d pages at 0x%x requested: not in the images", h.dst, h.nr, h.vaddr)
		}
		first := (h.vaddr - e.vaddr) / PageSize
		n := min(h.nr, e.nr-first, uint64(maxReply)/PageSize)
		size := int(n * PageSize)
		off := e.off + int64(first*PageSize)
		reply := header{cmd: cmdAddF | pePresent<<cmdBits, nr: n, vaddr: h.vaddr, dst: h.dst}
		if fs, ok := p.pages.(FileSection); ok && zc != nil && off+int64(size) <= fs.Size {
			var hb [headerSize]byte
			reply.encode(hb[:])
			if _, err := conn.Write(hb[:]); err != nil {
				return fmt.Errorf("send pages: %w", err)
			}
			if err := zc.send(fs.File, fs.Off+off, size); err != nil {
				return fmt.Errorf("pid %d: send %d pages at 0x%x from the page image: %w", h.dst, n, h.vaddr, err)
			}
			s.Served.Add(int64(size))
			continue
		}
		if buf == nil {
			buf = make([]byte, headerSize+maxReply)
		}
		if _, err := p.pages.ReadAt(buf[headerSize:headerSize+size], off); err != nil {
			return fmt.Errorf("pid %d: read %d pages at 0x%x from the page image: %w", h.dst, n, h.vaddr, err)
		}
		reply.encode(buf)
		if _, err := conn.Write(buf[:headerSize+size]); err != nil {
			return fmt.Errorf("send pages: %w", err)
		}
		s.Served.Add(int64(size))
	}
}
