// Package safepath is the one place that turns hostile path names (tar
// members of a rootfs diff or an image layer, deleted.files entries) into
// paths under a root, and walks their parents without following symlinks.
// It works with os.Root, which keeps every operation inside the root; this
// package adds the refusals that os.Root alone does not make: "..", NUL,
// overlong names, and parents that are symlinks.
package safepath

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strings"
)

// MaxLen bounds a path name.
const MaxLen = 4096

// Errors, for errors.Is.
var (
	ErrBadName = errors.New("invalid path name")     // NUL byte or too long
	ErrEscape  = errors.New("path escapes the root") // a ".." component
	ErrSymlink = errors.New("parent is a symlink")   // a parent is a symlink
	ErrNotDir  = errors.New("parent is not a directory")
)

// Rel turns a slash-separated name, absolute or relative, into a clean
// path relative to the root: "/a//b/./c" and "a/b/c" are "a/b/c", and the
// root itself is ".". A ".." component anywhere, a NUL byte or a name
// longer than MaxLen is refused.
func Rel(name string) (string, error) {
	if len(name) > MaxLen {
		return "", fmt.Errorf("%w: %d bytes, limit %d", ErrBadName, len(name), MaxLen)
	}
	if strings.IndexByte(name, 0) >= 0 {
		return "", fmt.Errorf("%w: NUL byte", ErrBadName)
	}
	for _, c := range strings.Split(name, "/") {
		if c == ".." {
			return "", fmt.Errorf("%q: %w", name, ErrEscape)
		}
	}
	p := path.Clean("/" + name)
	if p == "/" {
		return ".", nil
	}
	return p[1:], nil
}

// Parents checks that every parent of rel (a Rel path) under root is a
// real directory: Dir of its directory.
func Parents(root *os.Root, rel string, mkdir bool, perm os.FileMode) error {
	return Dir(root, path.Dir(rel), mkdir, perm)
}

// Dir checks that dir (a Rel path) and each of its parents under root is a
// real directory. A symlink is refused (ErrSymlink, and the message says
// it is not a directory), and so is any other non-directory (ErrNotDir).
// A missing one is an error matching fs.ErrNotExist or, with mkdir, is
// created with perm.
func Dir(root *os.Root, dir string, mkdir bool, perm os.FileMode) error {
	if dir == "." || dir == "" {
		return nil
	}
	cur := ""
	for _, c := range strings.Split(dir, "/") {
		if cur == "" {
			cur = c
		} else {
			cur += "/" + c
		}
		fi, err := root.Lstat(cur)
		switch {
		case err == nil && fi.IsDir():
			continue
		case err == nil && fi.Mode()&fs.ModeSymlink != 0:
			return fmt.Errorf("%w: %q is a symlink, not a directory", ErrSymlink, cur)
		case err == nil:
			return fmt.Errorf("%w: %q", ErrNotDir, cur)
		case errors.Is(err, fs.ErrNotExist) && mkdir:
			if err := root.Mkdir(cur, perm); err != nil {
				return err
			}
		default:
			return err
		}
	}
	return nil
}

// Clear removes whatever is at rel under root (a directory with its
// contents) so that a new entry can take its place without writing
// through it. Nothing there is fine.
func Clear(root *os.Root, rel string) error {
	fi, err := root.Lstat(rel)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return root.RemoveAll(rel)
	}
	return root.Remove(rel)
}
