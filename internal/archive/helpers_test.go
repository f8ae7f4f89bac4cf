package archive

import (
	"archive/tar"
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"testing"
)

// member is one entry of a hand-made tar.
type member struct {
	hdr  tar.Header
	body string
}

func reg(name, body string) member {
	return member{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(body))}, body: body}
}

func dir(name string) member {
	return member{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755}}
}

func symlink(name, target string) member {
	return member{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777}}
}

func hardlink(name, target string) member {
	return member{hdr: tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target, Mode: 0o644}}
}

// mkTar builds a tar. A member whose declared Size exceeds its body ends
// the stream right after its header (a lying header, as an attacker sends).
func mkTar(t testing.TB, members ...member) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, m := range members {
		h := m.hdr
		if h.Format == 0 {
			h.Format = tar.FormatPAX
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("write header %q: %v", h.Name, err)
		}
		if h.Size > int64(len(m.body)) {
			return buf.Bytes()
		}
		if _, err := tw.Write([]byte(m.body)); err != nil {
			t.Fatalf("write body %q: %v", h.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// tree lists every path under root (relative, sorted), symlinks not followed.
func tree(t testing.TB, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		out = append(out, rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

// sandbox makes tmp/{outside/etc/passwd, <name>/} and returns tmp and the
// inner directory; assertOutsideUntouched checks outside is unchanged and
// tmp holds nothing else.
func sandbox(t testing.TB, name string) (tmp, inner string) {
	t.Helper()
	tmp = t.TempDir()
	if err := os.MkdirAll(filepath.Join(tmp, "outside", "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tmp, "outside", "etc", "passwd"), []byte("root:x:0:0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	inner = filepath.Join(tmp, name)
	if err := os.Mkdir(inner, 0o755); err != nil {
		t.Fatal(err)
	}
	return tmp, inner
}

func assertOutsideUntouched(t testing.TB, tmp, name string) {
	t.Helper()
	entries, err := os.ReadDir(tmp)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != "outside" && e.Name() != name {
			t.Errorf("unexpected %s written next to %s", e.Name(), name)
		}
	}
	got := tree(t, filepath.Join(tmp, "outside"))
	want := []string{".", "etc", "etc/passwd"}
	if len(got) != len(want) {
		t.Errorf("outside changed: %v", got)
	}
	data, err := os.ReadFile(filepath.Join(tmp, "outside", "etc", "passwd"))
	if err != nil || string(data) != "root:x:0:0\n" {
		t.Errorf("outside/etc/passwd changed: %q %v", data, err)
	}
}

func isRoot() bool { return os.Geteuid() == 0 }
