package image

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ckpt-dev/ckpt/internal/safepath"
)

// OCI whiteout markers.
const (
	whiteoutPrefix = ".wh."
	whiteoutMeta   = ".wh..wh."
	whiteoutOpaque = ".wh..wh..opq"
)

// Limits bound what one image may unpack to.
type Limits struct {
	// MaxSize caps the uncompressed bytes of all layers of one image,
	// tar headers included.
	MaxSize int64
	// MaxEntries caps the tar entries of all layers of one image.
	MaxEntries int
}

// DefaultLimits are used by Open.
var DefaultLimits = Limits{MaxSize: 16 << 30, MaxEntries: 2 << 20}

// unpacker applies layers, in order, to a rootfs opened as an os.Root.
// Paths never leave the root, and symlinks already in the rootfs are never
// followed: every parent of an entry must be a real directory.
type unpacker struct {
	root    *os.Root
	limits  Limits
	read    int64 // uncompressed bytes read over all layers
	entries int
	size    int64 // bytes of regular file content written
	asRoot  bool

	// per layer
	seen    map[string]bool // paths this layer wrote
	parents map[string]bool // ancestors of paths this layer wrote
	dirs    map[string]*tar.Header
}

func newUnpacker(root *os.Root, l Limits) *unpacker {
	return &unpacker{root: root, limits: l, asRoot: os.Geteuid() == 0}
}

// countingReader fails once more than max bytes were read through it.
type countingReader struct {
	r   io.Reader
	n   *int64
	max int64
}

func (c countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	*c.n += int64(n)
	if *c.n > c.max {
		return n, fmt.Errorf("image is larger than the limit of %d bytes", c.max)
	}
	return n, err
}

// applyLayer unpacks one uncompressed layer tar stream. It reads the
// stream to its end so that a caller hashing it sees every byte.
func (u *unpacker) applyLayer(ctx context.Context, r io.Reader) error {
	u.seen = map[string]bool{}
	u.parents = map[string]bool{}
	u.dirs = map[string]*tar.Header{}
	cr := countingReader{r: r, n: &u.read, max: u.limits.MaxSize}
	tr := tar.NewReader(cr)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read layer: %w", err)
		}
		u.entries++
		if u.entries > u.limits.MaxEntries {
			return fmt.Errorf("image has more than %d entries", u.limits.MaxEntries)
		}
		if u.entries%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if err := u.apply(hdr, tr); err != nil {
			return fmt.Errorf("layer entry %q: %w", hdr.Name, err)
		}
	}
	if _, err := io.Copy(io.Discard, cr); err != nil {
		return fmt.Errorf("read layer: %w", err)
	}
	return u.finishDirs()
}

func (u *unpacker) apply(hdr *tar.Header, tr io.Reader) error {
	p, err := safepath.Rel(hdr.Name)
	if err != nil {
		return err
	}
	dir, base := path.Split(p)
	dir = path.Clean("/" + dir)[1:]
	if dir == "" {
		dir = "."
	}
	if strings.HasPrefix(base, whiteoutPrefix) {
		return u.whiteout(dir, base)
	}
	if p == "." {
		if hdr.Typeflag != tar.TypeDir {
			return errors.New("entry would replace the rootfs")
		}
		u.dirs[p] = hdr
		return nil
	}
	if err := safepath.Dir(u.root, dir, true, 0o755); err != nil {
		return err
	}

	switch hdr.Typeflag {
	case tar.TypeDir:
		fi, err := u.root.Lstat(p)
		if err == nil && !fi.IsDir() {
			if err := u.root.RemoveAll(p); err != nil {
				return err
			}
		}
		if err != nil || !fi.IsDir() {
			if err := u.root.Mkdir(p, 0o700); err != nil {
				return err
			}
		}
		u.dirs[p] = hdr
	case tar.TypeReg, tar.TypeRegA, tar.TypeGNUSparse:
		if err := safepath.Clear(u.root, p); err != nil {
			return err
		}
		if err := u.writeFile(p, hdr, tr); err != nil {
			return err
		}
	case tar.TypeSymlink:
		if hdr.Linkname == "" || len(hdr.Linkname) > safepath.MaxLen || strings.IndexByte(hdr.Linkname, 0) >= 0 {
			return errors.New("bad symlink target")
		}
		if err := safepath.Clear(u.root, p); err != nil {
			return err
		}
		if err := u.root.Symlink(hdr.Linkname, p); err != nil {
			return err
		}
		if err := u.chown(p, hdr); err != nil {
			return err
		}
	case tar.TypeLink:
		target, err := safepath.Rel(hdr.Linkname)
		if err != nil {
			return fmt.Errorf("hardlink target: %w", err)
		}
		if target == p {
			return nil
		}
		if target == "." {
			return errors.New("hardlink to the rootfs")
		}
		if err := safepath.Dir(u.root, path.Dir(target), false, 0); err != nil {
			return fmt.Errorf("hardlink target: %w", err)
		}
		fi, err := u.root.Lstat(target)
		if err != nil {
			return fmt.Errorf("hardlink target: %w", err)
		}
		if fi.IsDir() {
			return errors.New("hardlink to a directory")
		}
		if err := safepath.Clear(u.root, p); err != nil {
			return err
		}
		if err := u.root.Link(target, p); err != nil {
			return err
		}
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		if err := safepath.Clear(u.root, p); err != nil {
			return err
		}
		if err := u.mknod(dir, base, hdr); err != nil {
			if errors.Is(err, fs.ErrPermission) && !u.asRoot {
				return nil // unprivileged: skip device nodes
			}
			return err
		}
		if err := u.setMeta(p, hdr); err != nil {
			return err
		}
	case tar.TypeXGlobalHeader:
		return nil
	default:
		return fmt.Errorf("unsupported tar entry type %q", hdr.Typeflag)
	}
	u.markSeen(p)
	return nil
}

func (u *unpacker) markSeen(p string) {
	u.seen[p] = true
	for d := path.Dir(p); d != "." && !u.parents[d]; d = path.Dir(d) {
		u.parents[d] = true
	}
}

func (u *unpacker) writeFile(p string, hdr *tar.Header, r io.Reader) error {
	// Sparse files expand holes without reading input, so the counting
	// reader alone does not bound what is written.
	if hdr.Size < 0 || hdr.Size > u.limits.MaxSize-u.size {
		return fmt.Errorf("file of %d bytes makes the image larger than the limit of %d bytes", hdr.Size, u.limits.MaxSize)
	}
	f, err := u.root.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	n, err := io.CopyN(f, r, hdr.Size)
	u.size += n
	if err == nil {
		// File capabilities, and nothing else: other xattrs (trusted.overlay.*
		// among them) could change what the rootfs means as a lowerdir.
		if v, ok := hdr.PAXRecords["SCHILY.xattr.security.capability"]; ok && u.asRoot {
			_ = unix.Fsetxattr(int(f.Fd()), "security.capability", []byte(v), 0)
		}
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return u.setMeta(p, hdr)
}

func (u *unpacker) mknod(dir, base string, hdr *tar.Header) error {
	d, err := u.root.OpenFile(dir, os.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer d.Close()
	mode := uint32(hdr.Mode & 0o7777)
	switch hdr.Typeflag {
	case tar.TypeChar:
		mode |= unix.S_IFCHR
	case tar.TypeBlock:
		mode |= unix.S_IFBLK
	case tar.TypeFifo:
		mode |= unix.S_IFIFO
	}
	dev := unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
	if err := unix.Mknodat(int(d.Fd()), base, mode, int(dev)); err != nil {
		return &fs.PathError{Op: "mknod", Path: path.Join(dir, base), Err: err}
	}
	return nil
}

func (u *unpacker) chown(p string, hdr *tar.Header) error {
	if !u.asRoot {
		return nil
	}
	return u.root.Lchown(p, hdr.Uid, hdr.Gid)
}

// setMeta sets owner, mode and times of p, which is not a symlink.
func (u *unpacker) setMeta(p string, hdr *tar.Header) error {
	if err := u.chown(p, hdr); err != nil {
		return err
	}
	// chown clears set-id bits, so chmod comes after it.
	mode := hdr.FileInfo().Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
	if err := u.root.Chmod(p, mode); err != nil {
		return err
	}
	mt := hdr.ModTime
	if mt.IsZero() {
		mt = time.Unix(0, 0)
	}
	at := hdr.AccessTime
	if at.IsZero() {
		at = mt
	}
	return u.root.Chtimes(p, at, mt)
}

// finishDirs sets directory metadata once the layer's children are in,
// deepest first, so that creating children does not undo it.
func (u *unpacker) finishDirs() error {
	paths := make([]string, 0, len(u.dirs))
	for p := range u.dirs {
		paths = append(paths, p)
	}
	sort.Sort(sort.Reverse(sort.StringSlice(paths)))
	for _, p := range paths {
		if p != "." {
			if err := safepath.Dir(u.root, path.Dir(p), false, 0); err != nil {
				continue // replaced later in the layer
			}
		}
		fi, err := u.root.Lstat(p)
		if err != nil || !fi.IsDir() {
			continue
		}
		if err := u.setMeta(p, u.dirs[p]); err != nil {
			return fmt.Errorf("directory %q: %w", p, err)
		}
	}
	return nil
}

// whiteout applies ".wh.NAME" (delete NAME from lower layers) and
// ".wh..wh..opq" (hide everything lower layers put in dir).
func (u *unpacker) whiteout(dir, base string) error {
	if err := safepath.Dir(u.root, dir, false, 0); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil // nothing below to hide
		}
		return err
	}
	if base == whiteoutOpaque {
		return u.opaque(dir)
	}
	if strings.HasPrefix(base, whiteoutMeta) {
		return nil // other AUFS metadata
	}
	name := base[len(whiteoutPrefix):]
	if name == "" || name == "." || name == ".." {
		return errors.New("bad whiteout name")
	}
	p := path.Join(dir, name)
	if u.seen[p] || u.parents[p] {
		return nil // whiteouts hide lower layers only
	}
	err := u.root.RemoveAll(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// opaque removes everything under dir that this layer did not write.
func (u *unpacker) opaque(dir string) error {
	if dir != "." {
		fi, err := u.root.Lstat(dir)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if !fi.IsDir() {
			return fmt.Errorf("opaque whiteout in %q, which is not a directory", dir)
		}
	}
	d, err := u.root.OpenFile(dir, os.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	ents, err := d.ReadDir(-1)
	d.Close()
	if err != nil {
		return err
	}
	for _, e := range ents {
		p := path.Join(dir, e.Name())
		if !u.seen[p] && !u.parents[p] {
			if err := u.root.RemoveAll(p); err != nil {
				return err
			}
			continue
		}
		if e.IsDir() {
			if err := u.opaque(p); err != nil {
				return err
			}
		}
	}
	return nil
}
