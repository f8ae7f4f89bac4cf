package safepath

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRel(t *testing.T) {
	for _, c := range []struct {
		in, want string
		err      error
	}{
		{"a/b", "a/b", nil}, {"/a//b/./c", "a/b/c", nil}, {"./a/", "a", nil}, {"/", ".", nil}, {"", ".", nil}, {".", ".", nil},
		{"../x", "", ErrEscape}, {"a/../../x", "", ErrEscape}, {"a/..", "", ErrEscape}, {"/..", "", ErrEscape},
		{"a\x00b", "", ErrBadName}, {strings.Repeat("a", MaxLen+1), "", ErrBadName},
		{"a..b/..c", "a..b/..c", nil},
	} {
		got, err := Rel(c.in)
		if got != c.want || !errors.Is(err, c.err) || (c.err == nil) != (err == nil) {
			t.Errorf("Rel(%q) = %q, %v; want %q, %v", c.in, got, err, c.want, c.err)
		}
	}
}

func FuzzRel(f *testing.F) {
	for _, s := range []string{"a/b", "../x", "/a/./b", "a\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		rel, err := Rel(name)
		if err != nil {
			return
		}
		if rel != "." && (strings.HasPrefix(rel, "/") || rel == ".." || strings.HasPrefix(rel, "../") || strings.Contains(rel, "/../") || filepath.Clean(rel) != rel) {
			t.Fatalf("Rel(%q) = %q: not a clean path under the root", name, rel)
		}
	})
}

func TestParentsAndClear(t *testing.T) {
	dir := t.TempDir()
	outside := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "d/e"), 0o755)
	os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o600)
	os.Symlink(outside, filepath.Join(dir, "l"))
	os.Symlink("d", filepath.Join(dir, "inner"))
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()

	for _, c := range []struct {
		rel   string
		mkdir bool
		err   error
	}{
		{"x", false, nil}, {"d/e/x", false, nil},
		{"l/x", false, ErrSymlink}, {"inner/x", false, ErrSymlink}, {"l/y/x", true, ErrSymlink},
		{"f/x", false, ErrNotDir},
		{"m/n/x", false, fs.ErrNotExist},
		{"m/n/x", true, nil},
	} {
		err := Parents(root, c.rel, c.mkdir, 0o755)
		if !errors.Is(err, c.err) || (c.err == nil) != (err == nil) {
			t.Errorf("Parents(%q, mkdir=%v) = %v, want %v", c.rel, c.mkdir, err, c.err)
		}
	}
	if st, err := os.Stat(filepath.Join(dir, "m/n")); err != nil || !st.IsDir() {
		t.Fatalf("mkdir: %v", err)
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Fatalf("wrote through a symlink: %v", entries)
	}

	for _, rel := range []string{"l", "d", "f", "absent"} {
		if err := Clear(root, rel); err != nil {
			t.Fatalf("Clear(%q): %v", rel, err)
		}
		if _, err := os.Lstat(filepath.Join(dir, rel)); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("Clear(%q) left it: %v", rel, err)
		}
	}
	if _, err := os.Stat(outside); err != nil {
		t.Fatalf("Clear of a symlink removed its target: %v", err)
	}
}
