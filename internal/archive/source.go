package archive

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// openRegular opens a file to archive as name: a regular file, never
// through a symlink.
func openRegular(name, path string) (*os.File, fs.FileInfo, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("add %s to archive as %q: %w", path, name, err)
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("not a regular file (%s)", fi.Mode().Type())
	}
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("add %s to archive as %q: %w", path, name, err)
	}
	return f, fi, nil
}

// dirEntry is one entry of a directory to archive.
type dirEntry struct {
	name, path string
	info       fs.FileInfo
}

// walkArchivable lists dir under the member name base, in walk order: the
// directories and regular files of a CRIU image directory. Anything else is
// refused before a byte is written.
func walkArchivable(base, dir string) ([]dirEntry, error) {
	var entries []dirEntry
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		n := base
		if rel != "." {
			n = joinName(base, filepath.ToSlash(rel))
		}
		if !d.IsDir() && !d.Type().IsRegular() {
			return fmt.Errorf("%s: only directories and regular files can be archived, not %s", p, d.Type())
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		entries = append(entries, dirEntry{n, p, fi})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("add directory %s to archive as %q: %w", dir, base, err)
	}
	return entries, nil
}
