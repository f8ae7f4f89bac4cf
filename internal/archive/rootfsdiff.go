package archive

import (
	"archive/tar"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const (
	whiteoutPrefix = ".wh."
	opaqueMarker   = ".wh..wh..opq"
)

// WriteRootfsDiff writes a tar of an overlayfs upper directory to w, the
// way CRI-O's rootfs-diff.tar looks: relative names without a leading "/",
// parents before children, uid/gid/mode/mtime kept, hard links within the
// upper directory written as TypeLink.
//
// Whiteouts are not written; they are returned as deleted paths in the
// absolute in-container form that deleted.files uses ("/etc/motd"):
//   - character devices 0/0 (the kernel's whiteouts),
//   - empty regular files with the overlay.whiteout xattr (xwhiteouts),
//   - ".wh.<name>" files (aufs and fuse-overlayfs style).
//
// Opaque directories (xattr overlay.opaque=y, or a ".wh..wh..opq" marker)
// are written as ordinary directories with what the upper layer holds in
// them. The entries of the lower layers they hid are not known here, so they
// are not listed as deleted: after a restore onto the image, those lower
// entries reappear. Listing the directory itself as deleted would be wrong,
// because CRI-O applies rootfs-diff.tar before it removes deleted.files.
//
// Sockets, FIFOs and device nodes other than whiteouts cannot be restored
// safely (ApplyRootfsDiff refuses them) and are skipped. Extended
// attributes are not kept.
func WriteRootfsDiff(w io.Writer, upperDir string) (deleted []string, err error) {
	tw := tar.NewWriter(w)
	links := make(map[[2]uint64]string) // dev, ino -> first name
	buf := make([]byte, copyBufSize)
	err = filepath.WalkDir(upperDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == upperDir {
			return nil
		}
		rel, err := filepath.Rel(upperDir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return fmt.Errorf("%s: no stat data", p)
		}
		base := d.Name()
		switch {
		case base == opaqueMarker:
			return nil
		case strings.HasPrefix(base, whiteoutPrefix):
			deleted = append(deleted, "/"+joinName(dirName(rel), base[len(whiteoutPrefix):]))
			return nil
		case fi.Mode()&fs.ModeCharDevice != 0 && st.Rdev == 0:
			deleted = append(deleted, "/"+rel)
			return nil
		case fi.Mode().IsRegular() && fi.Size() == 0 && isXWhiteout(p):
			deleted = append(deleted, "/"+rel)
			return nil
		}
		hdr := &tar.Header{
			Name:    rel,
			Mode:    tarMode(fi.Mode()),
			Uid:     int(st.Uid),
			Gid:     int(st.Gid),
			ModTime: fi.ModTime().Truncate(time.Second),
			Format:  tar.FormatPAX,
		}
		switch {
		case fi.IsDir():
			hdr.Typeflag = tar.TypeDir
			hdr.Name += "/"
			return tw.WriteHeader(hdr)
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			hdr.Typeflag = tar.TypeSymlink
			hdr.Linkname = target
			return tw.WriteHeader(hdr)
		case fi.Mode().IsRegular():
			key := [2]uint64{uint64(st.Dev), st.Ino}
			if first, ok := links[key]; ok && st.Nlink > 1 {
				hdr.Typeflag = tar.TypeLink
				hdr.Linkname = first
				return tw.WriteHeader(hdr)
			}
			if st.Nlink > 1 {
				links[key] = rel
			}
			hdr.Typeflag = tar.TypeReg
			hdr.Size = fi.Size()
			return copyFileInto(tw, hdr, p, buf)
		default:
			return nil // socket, FIFO, device: see the doc comment
		}
	})
	if err != nil {
		return nil, fmt.Errorf("write rootfs diff of %s: %w", upperDir, err)
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("write rootfs diff of %s: %w", upperDir, err)
	}
	return deleted, nil
}

// MarshalDeletedFiles encodes deleted paths as deleted.files (a JSON list).
func MarshalDeletedFiles(deleted []string) []byte {
	if deleted == nil {
		deleted = []string{}
	}
	b, _ := json.Marshal(deleted) // a []string always encodes
	return b
}

func copyFileInto(tw *tar.Writer, hdr *tar.Header, p string, buf []byte) error {
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	n, err := io.CopyBuffer(tw, struct{ io.Reader }{io.LimitReader(f, hdr.Size)}, buf)
	if err != nil {
		return err
	}
	if n != hdr.Size {
		return fmt.Errorf("%s: shrank from %d to %d bytes while archiving", p, hdr.Size, n)
	}
	return nil
}

// isXWhiteout reports an overlayfs xattr whiteout (Linux 6.7+).
func isXWhiteout(p string) bool {
	for _, attr := range []string{"trusted.overlay.whiteout", "user.overlay.whiteout"} {
		if _, err := unix.Lgetxattr(p, attr, nil); err == nil {
			return true
		}
	}
	return false
}

// tarMode converts permission and special bits to tar's mode field.
func tarMode(m fs.FileMode) int64 {
	mode := int64(m.Perm())
	if m&fs.ModeSetuid != 0 {
		mode |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		mode |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		mode |= 0o1000
	}
	return mode
}

func dirName(rel string) string {
	if i := strings.LastIndexByte(rel, '/'); i >= 0 {
		return rel[:i]
	}
	return ""
}
