package inspect

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"

	"filippo.io/age"
	"golang.org/x/sys/unix"

	"github.com/ckpt-dev/ckpt/internal/archive"
	"github.com/ckpt-dev/ckpt/internal/trust"
)

const (
	checkpointDir = "checkpoint"
	// maxMetaBytes bounds the JSON metadata files that are extracted.
	maxMetaBytes = 16 << 20
	// maxExtractBytes bounds everything extracted from one archive.
	maxExtractBytes = 1 << 30
	// chunkSize is how much of a page image is handled at once.
	chunkSize = 1 << 20
)

// metaFiles are the top-level members inspect needs.
var metaFiles = map[string]bool{
	"config.dump":    true,
	"spec.dump":      true,
	"stats-dump":     true,
	"status":         true, // containerd
	"status.dump":    true, // containerd
	"network.status": true, // Podman
}

// Options says how to read an archive.
type Options struct {
	// Identities decrypt age-encrypted archives.
	Identities []age.Identity
	// Limits bound what the tar reader accepts; zero fields take defaults.
	Limits archive.Limits
	// TempDir is where the private temporary root is made ("" = os.TempDir()).
	TempDir string
	// Cmdline and Env read each process's arguments and environment from
	// its memory pages.
	Cmdline, Env bool
	// Progress, if set, is called with the bytes of page images read so far
	// and the total declared by the headers seen so far.
	Progress func(read, total int64)
	// TrustedKeys, if set, says whether the signing key is trusted.
	TrustedKeys *trust.Keyring
}

// Open reads the archive at path in one pass and returns what it holds.
func Open(path string, opts Options) (*Checkpoint, error) {
	return read(path, opts, nil)
}

// pageSink consumes memory pages as they stream by. chunk gets contiguous
// bytes of one process's memory starting at vaddr; end is called after the
// last page of a process.
type pageSink interface {
	chunk(pid uint32, vaddr uint64, data []byte) error
	end(pid uint32) error
}

// pass is the state of one streaming read.
type pass struct {
	opts      Options
	tmp       string // the private temporary root's path
	root      *os.Root
	dir       *imageDir
	sinks     []pageSink
	sizes     Sizes
	extracted int64
	sums      map[string]string // member read in full -> sha256
	manifest  *archive.Manifest
	layout    *layout  // decoded when the first page image arrives
	spooled   []string // page images that came before their pagemap
	pagesRead int64
	h         hash.Hash
	buf       []byte
}

func read(path string, opts Options, sinks []pageSink) (_ *Checkpoint, err error) {
	rc, format, err := archive.Open(path, opts.Identities)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	tmp, err := os.MkdirTemp(opts.TempDir, "ckpt-inspect-")
	if err != nil {
		return nil, fmt.Errorf("inspect %s: %w", path, err)
	}
	defer os.RemoveAll(tmp)
	root, err := os.OpenRoot(tmp)
	if err != nil {
		return nil, fmt.Errorf("inspect %s: %w", path, err)
	}
	defer root.Close()
	if err := root.Mkdir(checkpointDir, 0o700); err != nil {
		return nil, fmt.Errorf("inspect %s: %w", path, err)
	}
	p := &pass{
		opts: opts, tmp: tmp, root: root, dir: &imageDir{root: root}, sinks: sinks,
		sums: make(map[string]string), h: sha256.New(),
	}
	if opts.Cmdline || opts.Env {
		p.sinks = append(p.sinks, newArgSink(p, opts.Cmdline, opts.Env))
	}
	if err := archive.Walk(rc, opts.Limits, p.member); err != nil {
		return nil, fmt.Errorf("inspect %s: %w", path, err)
	}
	if err := p.finish(); err != nil {
		return nil, fmt.Errorf("inspect %s: %w", path, err)
	}
	c, err := build(p)
	if err != nil {
		return nil, fmt.Errorf("inspect %s: %w", path, err)
	}
	c.Archive = path
	c.Format = string(format)
	c.Signature = signature(p.manifest, opts.TrustedKeys)
	for _, s := range p.sinks {
		if a, ok := s.(*argSink); ok {
			a.apply(c)
		}
	}
	return c, nil
}

// maxSignatureBytes bounds checksums.sha256.sig.
const maxSignatureBytes = 64 << 10

// signature describes the archive's signature; it is checked over the
// manifest that the members read were checked against.
func signature(m *archive.Manifest, keys *trust.Keyring) Signature {
	s := trust.Examine(m)
	out := Signature{Signed: s.Signed, Valid: s.Signed && s.Err == nil}
	if s.Key != nil {
		out.Key, out.KeyType = s.Fingerprint(), s.Key.Type()
		if keys != nil {
			trusted := keys.Trusted(s.Key)
			out.Trusted = &trusted
		}
	}
	if s.Err != nil {
		out.Error = s.Err.Error()
	}
	return out
}

// pagesID returns N for "checkpoint/pages-N.img".
func pagesID(name string) (uint32, bool) {
	base, ok := strings.CutPrefix(name, checkpointDir+"/pages-")
	if !ok {
		return 0, false
	}
	num, ok := strings.CutSuffix(base, ".img")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseUint(num, 10, 32)
	return uint32(n), err == nil
}

// wanted reports whether a member is extracted, and its size limit.
func wanted(name string) (int64, bool) {
	if metaFiles[name] {
		return maxMetaBytes, true
	}
	dir, base := path.Split(name)
	if dir != checkpointDir+"/" || !strings.HasSuffix(base, ".img") {
		return 0, false
	}
	if strings.HasPrefix(base, "pages-") || strings.HasPrefix(base, "tmpfs-") {
		return 0, false
	}
	return maxImageBytes, true
}

func (p *pass) member(hdr *tar.Header, body io.Reader) error {
	switch hdr.Typeflag {
	case tar.TypeDir:
		return nil
	case tar.TypeReg:
	default:
		return fmt.Errorf("archive member %q: %w: only directories and regular files belong in a checkpoint", hdr.Name, archive.ErrType)
	}
	name := hdr.Name
	p.sizes.Content += hdr.Size
	if strings.HasPrefix(name, checkpointDir+"/") {
		p.sizes.Checkpoint += hdr.Size
	}
	if name == "rootfs-diff.tar" {
		p.sizes.RootfsDiff = hdr.Size
		return p.checkRootfsDiff(name, hdr.Size, body)
	}
	if name == "deleted.files" {
		return p.checkDeletedFiles(name, hdr.Size, body)
	}
	if name == archive.ManifestFile {
		if p.manifest != nil {
			return fmt.Errorf("archive member %q: %w", name, archive.ErrDuplicate)
		}
		if hdr.Size > maxMetaBytes {
			return fmt.Errorf("archive member %q: %w", name, archive.ErrTooLarge)
		}
		data, err := io.ReadAll(io.LimitReader(body, maxMetaBytes))
		if err != nil {
			return err
		}
		m, err := archive.ParseManifest(data)
		if err != nil {
			return fmt.Errorf("archive member %q: %w", name, err)
		}
		p.manifest = m
		return nil
	}
	if name == archive.SignatureFile {
		if p.manifest == nil || p.manifest.Signature != nil {
			return fmt.Errorf("archive member %q: %w: must follow %s once", name, archive.ErrMisplaced, archive.ManifestFile)
		}
		if hdr.Size > maxSignatureBytes {
			return fmt.Errorf("archive member %q: %w", name, archive.ErrTooLarge)
		}
		sig, err := io.ReadAll(io.LimitReader(body, maxSignatureBytes))
		if err != nil {
			return err
		}
		p.manifest.Signature = sig
		return nil
	}
	if id, ok := pagesID(name); ok {
		p.sizes.MemoryPages += hdr.Size
		return p.pages(name, id, hdr.Size, body)
	}
	limit, ok := wanted(name)
	if !ok {
		return nil
	}
	if hdr.Size > limit {
		return fmt.Errorf("archive member %q: %w: %d bytes, limit %d", name, archive.ErrTooLarge, hdr.Size, limit)
	}
	p.extracted += hdr.Size
	if p.extracted > maxExtractBytes {
		return fmt.Errorf("archive member %q: %w: more than %d bytes of metadata and images", name, archive.ErrTooLarge, int64(maxExtractBytes))
	}
	return p.extract(name, hdr.Size, body)
}

// checkRootfsDiff refuses a rootfs-diff.tar that restore would refuse, by
// applying it with restore's rules inside the private root, then dropping it.
func (p *pass) checkRootfsDiff(name string, size int64, body io.Reader) error {
	dir, err := os.MkdirTemp(p.tmp, "rootfs-check-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	p.h.Reset()
	tee := io.TeeReader(io.LimitReader(body, size), p.h)
	if err := archive.ApplyRootfsDiff(dir, tee, p.opts.Limits); err != nil {
		return fmt.Errorf("archive member %q: %w", name, err)
	}
	if _, err := io.Copy(io.Discard, tee); err != nil {
		return fmt.Errorf("archive member %q: %w", name, err)
	}
	p.sums[name] = hex.EncodeToString(p.h.Sum(nil))
	return nil
}

// checkDeletedFiles refuses a deleted.files that restore would refuse.
func (p *pass) checkDeletedFiles(name string, size int64, body io.Reader) error {
	if size > maxMetaBytes {
		return fmt.Errorf("archive member %q: %w: %d bytes, limit %d", name, archive.ErrTooLarge, size, maxMetaBytes)
	}
	data, err := io.ReadAll(io.LimitReader(body, size))
	if err != nil {
		return fmt.Errorf("archive member %q: %w", name, err)
	}
	dir, err := os.MkdirTemp(p.tmp, "deleted-check-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := archive.RemoveDeleted(dir, data); err != nil {
		return fmt.Errorf("archive member %q: %w", name, err)
	}
	sum := sha256.Sum256(data)
	p.sums[name] = hex.EncodeToString(sum[:])
	return nil
}

// extract writes one member into the private root, hashing it. Sizes are
// bounded by the caller.
func (p *pass) extract(name string, size int64, body io.Reader) error {
	f, err := p.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("archive member %q: %w", name, archive.ErrDuplicate)
	}
	if err != nil {
		return fmt.Errorf("archive member %q: %w", name, err)
	}
	p.h.Reset()
	_, err = io.Copy(io.MultiWriter(f, p.h), io.LimitReader(body, size))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("archive member %q: %w", name, err)
	}
	p.sums[name] = hex.EncodeToString(p.h.Sum(nil))
	return nil
}

// pages streams one page image to the sinks, or spools it to the private
// root when its pagemap has not been seen yet.
func (p *pass) pages(name string, id uint32, size int64, body io.Reader) error {
	if len(p.sinks) == 0 {
		return nil
	}
	if p.layout == nil {
		l, err := loadLayout(p.dir)
		if err != nil {
			return err
		}
		p.layout = l
	}
	pm, ok := p.layout.byPagesID[id]
	if !ok {
		p.spooled = append(p.spooled, name)
		return p.extract(name, size, body)
	}
	p.h.Reset()
	if err := p.feed(pm, io.TeeReader(body, p.h), size); err != nil {
		return fmt.Errorf("archive member %q: %w", name, err)
	}
	p.sums[name] = hex.EncodeToString(p.h.Sum(nil))
	return nil
}

// feed hands a page image to the sinks region by region, in chunks.
func (p *pass) feed(pm *pagemapInfo, r io.Reader, size int64) error {
	if pm.present != size {
		return fmt.Errorf("%w: pagemap of pid %d lists %d bytes of pages, the image holds %d", ErrCorrupt, pm.pid, pm.present, size)
	}
	if p.buf == nil {
		p.buf = make([]byte, chunkSize)
	}
	for _, reg := range pm.regions {
		vaddr, left := reg.vaddr, reg.size
		for left > 0 {
			n := int64(len(p.buf))
			if left < n {
				n = left
			}
			b := p.buf[:n]
			if _, err := io.ReadFull(r, b); err != nil {
				return fmt.Errorf("%w: page image of pid %d ends early: %v", ErrCorrupt, pm.pid, err)
			}
			for _, s := range p.sinks {
				if err := s.chunk(pm.pid, vaddr, b); err != nil {
					return err
				}
			}
			vaddr += uint64(n)
			left -= n
			p.pagesRead += n
			if p.opts.Progress != nil {
				p.opts.Progress(p.pagesRead, p.sizes.MemoryPages)
			}
		}
	}
	for _, s := range p.sinks {
		if err := s.end(pm.pid); err != nil {
			return err
		}
	}
	return nil
}

// finish handles spooled page images and checks the manifest.
func (p *pass) finish() error {
	if len(p.spooled) > 0 {
		l, err := loadLayout(p.dir)
		if err != nil {
			return err
		}
		p.layout = l
		for _, name := range p.spooled {
			id, _ := pagesID(name)
			pm, ok := l.byPagesID[id]
			if !ok {
				continue // no process owns it: nothing to search
			}
			f, err := p.root.Open(name)
			if err != nil {
				return err
			}
			st, err := f.Stat()
			if err == nil {
				err = p.feed(pm, f, st.Size())
			}
			f.Close()
			if err != nil {
				return fmt.Errorf("archive member %q: %w", name, err)
			}
		}
	}
	if p.manifest == nil {
		return nil
	}
	names := make([]string, 0, len(p.sums))
	for n := range p.sums {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		want, ok := p.manifest.Sums[n]
		if !ok {
			return fmt.Errorf("archive member %q: %w", n, archive.ErrUnlisted)
		}
		if want != p.sums[n] {
			return fmt.Errorf("archive member %q: %w", n, archive.ErrChecksum)
		}
	}
	return nil
}
