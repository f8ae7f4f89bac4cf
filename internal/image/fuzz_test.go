package image

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzApplyLayer feeds arbitrary bytes as a layer on top of a base layer
// that holds symlinks pointing out of the rootfs. Whatever happens, nothing
// outside the rootfs may change.
func FuzzApplyLayer(f *testing.F) {
	seeds := [][]entry{
		{file("a", "1"), dir("d"), file("d/x", "x")},
		{file("../escape", "x")},
		{file("out/victim", "pwned")},
		{file("abs/victim", "pwned"), hardlink("h", "abs/victim")},
		{hardlink("h", "out/victim")},
		{whiteout("out/.wh.victim")},
		{whiteout("out/.wh..wh..opq")},
		{whiteout(".wh..wh..opq"), file("n", "n")},
		{symlink("d", "../outside"), file("d/escape", "x")},
		{file("in/f", "x"), whiteout("in/.wh.f")},
		{{name: "dev", typ: '3', major: 1, minor: 3}},
	}
	for _, s := range seeds {
		f.Add(tarBytes(f, s...))
	}
	f.Add([]byte("not a tar"))
	base := tarBytes(f, symlink("out", "../outside"), symlink("abs", "/"), dir("in"), file("in/keep", "k"))
	f.Fuzz(func(t *testing.T, layer []byte) {
		_, _, outside := applyTo(t, Limits{MaxSize: 1 << 20, MaxEntries: 1000}, base, layer)
		checkOutside(t, outside)
	})
}

// FuzzImport feeds arbitrary bytes as an image file: docker save tarball,
// OCI archive or neither. Import may fail, but must not panic, and a failed
// import leaves nothing behind.
func FuzzImport(f *testing.F) {
	img := testImage(f, "/x", []entry{file("a", "1"), symlink("l", "a")})
	dir := f.TempDir()
	for _, p := range []string{
		writeDocker(f, img, "localhost/f:1", filepath.Join(dir, "d.tar")),
		tarDir(f, writeLayout(f, img, "localhost/f:1", filepath.Join(dir, "layout")), filepath.Join(dir, "o.tar")),
	} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add(tarBytes(f, file("manifest.json", `[{"Config":"c","RepoTags":["x"],"Layers":["../../etc/passwd"]}]`), file("c", "{}")))
	f.Add(tarBytes(f, file("oci-layout", `{"imageLayoutVersion":"1.0.0"}`), file("index.json", `{"manifests":[{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"sha256:`+strings.Repeat("0", 64)+`"}]}`)))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Open(filepath.Join(t.TempDir(), "images"))
		if err != nil {
			t.Fatal(err)
		}
		s.Limits = Limits{MaxSize: 1 << 20, MaxEntries: 1000}
		in := filepath.Join(t.TempDir(), "in.tar")
		if err := os.WriteFile(in, data, 0o600); err != nil {
			t.Fatal(err)
		}
		imgs, err := s.Import(context.Background(), in)
		if err != nil && len(imgs) == 0 {
			if l, _ := s.List(); len(l) != 0 {
				t.Errorf("failed import left %d images", len(l))
			}
		}
		if ents, _ := os.ReadDir(filepath.Join(s.Dir(), "tmp")); len(ents) != 0 {
			t.Errorf("staging left behind: %v", ents)
		}
	})
}
