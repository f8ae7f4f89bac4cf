package archive

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"

	"github.com/ckpt-dev/ckpt/internal/safepath"
)

// maxDeletedFilesBytes bounds deleted.files.
const maxDeletedFilesBytes = 16 << 20

func diffErr(name string, err error) error {
	return &Error{What: "rootfs-diff member", Name: name, Err: err}
}

// ApplyRootfsDiff applies a rootfs-diff.tar (plain, or gzip- or
// zstd-compressed as containerd writes it) onto rootfs (a restored
// container's root filesystem) through os.Root. It creates directories,
// regular files, symlinks and hard links, replacing what is in the way, and
// keeps uid/gid (when running as root), permission bits and mtimes.
//
// It refuses, naming the member: device nodes, FIFOs and other types
// (Walk); setuid/setgid bits; relative symlink targets that climb above
// rootfs ("../../etc"); hard links to paths outside rootfs or through a
// symlink; and any member whose parent path goes through a symlink (a
// symlink "etc" -> "/etc" followed by "etc/passwd"), so nothing is ever
// written through a link. Absolute symlink targets are kept: inside the
// container they resolve within its root, and this function never follows
// them.
func ApplyRootfsDiff(rootfs string, diff io.Reader, lim Limits) error {
	root, err := os.OpenRoot(rootfs)
	if err != nil {
		return fmt.Errorf("apply rootfs diff to %s: %w", rootfs, err)
	}
	defer root.Close()
	diff, closeDiff, err := decompressDiff(diff)
	if err != nil {
		return fmt.Errorf("apply rootfs diff to %s: %w", rootfs, err)
	}
	defer closeDiff()
	asRoot := os.Geteuid() == 0
	type dirTime struct {
		name  string
		mtime time.Time
	}
	var dirs []dirTime
	buf := make([]byte, copyBufSize)
	err = Walk(diff, lim, func(hdr *tar.Header, body io.Reader) error {
		name := hdr.Name
		if hdr.Mode&(0o4000|0o2000) != 0 {
			return diffErr(name, fmt.Errorf("%w (mode %#o)", ErrSetuid, hdr.Mode))
		}
		if err := mkdirAllNoFollow(root, dirName(name)); err != nil {
			return diffErr(name, err)
		}
		perm := os.FileMode(hdr.Mode & 0o777)
		if hdr.Mode&0o1000 != 0 {
			perm |= os.ModeSticky
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			fi, err := root.Lstat(name)
			switch {
			case err == nil && fi.IsDir():
			case err == nil || errors.Is(err, os.ErrNotExist):
				if err == nil {
					if err := root.Remove(name); err != nil {
						return diffErr(name, err)
					}
				}
				if err := root.Mkdir(name, 0o700); err != nil {
					return diffErr(name, err)
				}
			default:
				return diffErr(name, err)
			}
			dirs = append(dirs, dirTime{name, hdr.ModTime})
		case tar.TypeReg:
			if err := safepath.Clear(root, name); err != nil {
				return diffErr(name, err)
			}
			f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
			if err != nil {
				return diffErr(name, err)
			}
			_, err = io.CopyBuffer(f, struct{ io.Reader }{body}, buf)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return diffErr(name, err)
			}
		case tar.TypeSymlink:
			if err := checkSymlinkTarget(name, hdr.Linkname); err != nil {
				return diffErr(name, err)
			}
			if err := safepath.Clear(root, name); err != nil {
				return diffErr(name, err)
			}
			if err := root.Symlink(hdr.Linkname, name); err != nil {
				return diffErr(name, err)
			}
		case tar.TypeLink:
			// Walk already cleaned Linkname; it must not go through links.
			if err := checkParents(root, hdr.Linkname); err != nil {
				return diffErr(name, fmt.Errorf("hard link target %q: %w", hdr.Linkname, err))
			}
			fi, err := root.Lstat(hdr.Linkname)
			if err != nil {
				return diffErr(name, fmt.Errorf("hard link target %q: %w", hdr.Linkname, err))
			}
			if !fi.Mode().IsRegular() {
				return diffErr(name, fmt.Errorf("hard link target %q: %w: not a regular file", hdr.Linkname, ErrType))
			}
			if err := safepath.Clear(root, name); err != nil {
				return diffErr(name, err)
			}
			if err := root.Link(hdr.Linkname, name); err != nil {
				return diffErr(name, err)
			}
			return nil // the target's metadata already applies
		}
		if asRoot {
			if err := root.Lchown(name, hdr.Uid, hdr.Gid); err != nil {
				return diffErr(name, err)
			}
		}
		if hdr.Typeflag == tar.TypeSymlink {
			return nil // no lchmod/lutimes in os.Root; links carry no mode
		}
		if err := root.Chmod(name, perm); err != nil {
			return diffErr(name, err)
		}
		if hdr.Typeflag == tar.TypeReg {
			if err := root.Chtimes(name, hdr.ModTime, hdr.ModTime); err != nil {
				return diffErr(name, err)
			}
		}
		return nil
	})
	if err != nil {
		var ae *Error
		if errors.As(err, &ae) && ae.What == "archive member" {
			ae.What = "rootfs-diff member" // say which archive Walk refused
		}
		return fmt.Errorf("apply rootfs diff to %s: %w", rootfs, err)
	}
	// Directory mtimes last, deepest first, since adding entries bumps them.
	for i := len(dirs) - 1; i >= 0; i-- {
		// Checked by the walk; a later member cannot have replaced a dir
		// with a symlink that Chtimes would follow, but skip it if so.
		fi, err := root.Lstat(dirs[i].name)
		if err != nil || !fi.IsDir() {
			continue
		}
		if err := root.Chtimes(dirs[i].name, dirs[i].mtime, dirs[i].mtime); err != nil {
			return fmt.Errorf("apply rootfs diff to %s: %w", rootfs, diffErr(dirs[i].name, err))
		}
	}
	return nil
}

// RemoveDeleted removes the paths listed in deleted.files (a JSON list of
// absolute in-container paths, as CRI-O and Podman write it) from rootfs.
// A path is taken relative to rootfs; one with a ".." component, a NUL byte
// or naming the root itself is refused, and so is one whose parent goes
// through a symlink. A symlink named by the list is removed, not followed.
// Paths already absent are fine. Every path is checked before any removal.
func RemoveDeleted(rootfs string, deletedFilesJSON []byte) error {
	if len(deletedFilesJSON) > maxDeletedFilesBytes {
		return fmt.Errorf("remove deleted files in %s: deleted.files: %w: %d bytes, limit %d", rootfs, ErrTooLarge, len(deletedFilesJSON), maxDeletedFilesBytes)
	}
	var list []string
	if err := json.Unmarshal(deletedFilesJSON, &list); err != nil {
		return fmt.Errorf("remove deleted files in %s: parse deleted.files: %w", rootfs, err)
	}
	rels := make([]string, 0, len(list))
	for _, p := range list {
		rel, err := cleanDeleted(p)
		if err != nil {
			return fmt.Errorf("remove deleted files in %s: %w", rootfs, &Error{What: "deleted file", Name: p, Err: err})
		}
		rels = append(rels, rel)
	}
	root, err := os.OpenRoot(rootfs)
	if err != nil {
		return fmt.Errorf("remove deleted files in %s: %w", rootfs, err)
	}
	defer root.Close()
	for i, rel := range rels {
		err := checkParents(root, rel)
		if errors.Is(err, os.ErrNotExist) {
			continue // a parent is gone: so is the path
		}
		if err == nil {
			err = root.RemoveAll(rel)
		}
		if err != nil {
			return fmt.Errorf("remove deleted files in %s: %w", rootfs, &Error{What: "deleted file", Name: list[i], Err: err})
		}
	}
	return nil
}

// cleanDeleted turns an in-container path into one relative to rootfs.
func cleanDeleted(p string) (string, error) {
	rel, err := safepath.Rel(p)
	switch {
	case errors.Is(err, safepath.ErrEscape):
		return "", errEscapeRootfs
	case err != nil:
		return "", fmt.Errorf("%w: %w", ErrBadName, err)
	case p == "" || rel == ".":
		return "", fmt.Errorf("%w: names the container root", ErrBadName)
	}
	return rel, nil
}

// checkParents fails when a parent of name is a symlink (ErrSymlink) or
// not a directory. A missing parent returns an error matching
// os.ErrNotExist.
func checkParents(root *os.Root, name string) error {
	err := safepath.Parents(root, name, false, 0)
	if errors.Is(err, safepath.ErrSymlink) {
		return fmt.Errorf("%w: %w", ErrSymlink, err)
	}
	return err
}

// checkSymlinkTarget refuses relative targets that climb above the root
// when resolved from the link's directory.
func checkSymlinkTarget(name, target string) error {
	if target == "" || strings.IndexByte(target, 0) >= 0 || len(target) > maxNameLen {
		return fmt.Errorf("symlink target %q: %w", target, ErrBadName)
	}
	if path.IsAbs(target) {
		return nil
	}
	joined := path.Join(dirName(name), target)
	if joined == ".." || strings.HasPrefix(joined, "../") {
		return fmt.Errorf("symlink target %q: %w", target, errEscapeRootfs)
	}
	return nil
}

// decompressDiff sniffs gzip (containerd gzips rootfs-diff.tar) and zstd.
// Decompressed output stays bounded by the Limits that Walk applies.
func decompressDiff(r io.Reader) (io.Reader, func(), error) {
	br := bufio.NewReader(r)
	head, _ := br.Peek(4)
	switch {
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, nil, fmt.Errorf("gunzip: %w", err)
		}
		return zr, func() { zr.Close() }, nil
	case bytes.HasPrefix(head, zstdMagic):
		zr, err := zstd.NewReader(br, zstd.WithDecoderMaxWindow(maxZstdWindow), zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, nil, fmt.Errorf("zstd: %w", err)
		}
		return zr, zr.Close, nil
	}
	return br, func() {}, nil
}
