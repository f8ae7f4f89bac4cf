package image

import (
	"compress/gzip"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/ckpt-dev/ckpt/internal/runtime"
)

var counterLayer = []entry{
	dir("bin"), withMode(file("bin/counter", "#!binary"), 0o755), dir("tmp"),
	file("etc/passwd", "root:x:0:0:root:/:/bin/sh\n"),
}

func TestImportKinds(t *testing.T) {
	img := testImage(t, "/bin/counter", counterLayer)
	wantID, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		write func(t *testing.T, dir string) string
		names []string
	}{
		{"docker save", func(t *testing.T, dir string) string {
			return writeDocker(t, img, "localhost/counter:latest", filepath.Join(dir, "c.tar"))
		}, []string{"localhost/counter:latest"}},
		{"docker save short name", func(t *testing.T, dir string) string {
			return writeDocker(t, img, "counter:v1", filepath.Join(dir, "c.tar"))
		}, []string{"docker.io/library/counter:v1"}},
		{"docker save gzip", func(t *testing.T, dir string) string {
			plain := writeDocker(t, img, "localhost/counter:latest", filepath.Join(dir, "c.tar"))
			return gzipFile(t, plain, filepath.Join(dir, "c.tar.gz"))
		}, []string{"localhost/counter:latest"}},
		{"OCI layout dir", func(t *testing.T, dir string) string {
			return writeLayout(t, img, "localhost/counter:latest", filepath.Join(dir, "layout"))
		}, []string{"localhost/counter:latest"}},
		{"OCI archive", func(t *testing.T, dir string) string {
			l := writeLayout(t, img, "localhost/counter:latest", filepath.Join(dir, "layout"))
			return tarDir(t, l, filepath.Join(dir, "c.oci.tar"))
		}, []string{"localhost/counter:latest"}},
		{"OCI layout with tag-only ref.name", func(t *testing.T, dir string) string {
			return writeLayout(t, img, "latest", filepath.Join(dir, "layout"))
		}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t)
			imgs := mustImport(t, s, tc.write(t, t.TempDir()))
			if len(imgs) != 1 {
				t.Fatalf("got %d images, want 1", len(imgs))
			}
			got := imgs[0]
			if got.ID != wantID.String() {
				t.Errorf("ID = %s, want %s", got.ID, wantID)
			}
			if strings.Join(got.Names, ",") != strings.Join(tc.names, ",") {
				t.Errorf("Names = %v, want %v", got.Names, tc.names)
			}
			if len(got.Config.Entrypoint) != 1 || got.Config.Entrypoint[0] != "/bin/counter" {
				t.Errorf("Entrypoint = %v", got.Config.Entrypoint)
			}
			if !filepath.IsAbs(got.RootFS) {
				t.Errorf("RootFS %q is not absolute", got.RootFS)
			}
			if b := readFile(t, filepath.Join(got.RootFS, "bin/counter")); b != "#!binary" {
				t.Errorf("bin/counter = %q", b)
			}
			fi, err := os.Stat(filepath.Join(got.RootFS, "bin/counter"))
			if err != nil || fi.Mode().Perm() != 0o755 {
				t.Errorf("bin/counter mode = %v, %v", fi.Mode(), err)
			}
			if got.Size != int64(len("#!binary")+len("root:x:0:0:root:/:/bin/sh\n")) {
				t.Errorf("Size = %d", got.Size)
			}
			if got.Created.Year() != 2025 {
				t.Errorf("Created = %v", got.Created)
			}
			byID, err := s.Resolve(got.ID)
			if err != nil || byID.RootFS != got.RootFS {
				t.Errorf("Resolve(ID) = %+v, %v", byID, err)
			}
		})
	}
}

func gzipFile(t *testing.T, in, out string) string {
	t.Helper()
	b, err := os.ReadFile(in)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	zw := gzip.NewWriter(f)
	zw.Write(b)
	zw.Close()
	f.Close()
	return out
}

func TestImportRandomImage(t *testing.T) {
	img, err := random.Image(2048, 3)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	s := openStore(t)
	for _, f := range []string{
		writeDocker(t, img, "localhost/random:1", filepath.Join(dir, "r.tar")),
		writeLayout(t, img, "localhost/random:1", filepath.Join(dir, "layout")),
	} {
		imgs := mustImport(t, s, f)
		if want, _ := img.ConfigName(); imgs[0].ID != want.String() {
			t.Errorf("%s: ID = %s, want %s", f, imgs[0].ID, want)
		}
	}
	if l, _ := s.List(); len(l) != 1 {
		t.Errorf("List has %d images, want 1", len(l))
	}
}

func TestWhiteouts(t *testing.T) {
	img := testImage(t, "/x",
		[]entry{
			dir("a"), file("a/f1", "1"), dir("a/sub"), file("a/sub/x", "x"),
			dir("b"), file("b/keep", "k"), file("b/gone", "g"),
			file("c", "c"), dir("d"), file("d/inner", "i"),
			dir("e"), dir("e/sub"), file("e/sub/old", "o"), file("e/top", "t"),
		},
		[]entry{
			whiteout(".wh.c"),
			whiteout("b/.wh.gone"),
			whiteout(".wh.d"),
			whiteout("a/.wh..wh..opq"), file("a/new", "n"),
			// Opaque marker after this layer's own children.
			file("e/sub/new", "n"), whiteout("e/.wh..wh..opq"),
			whiteout("missing/.wh.nothing"),
		},
		[]entry{
			file("d", "d is a file now"), file("c", "back"),
		},
	)
	s := openStore(t)
	got := mustImport(t, s, writeDocker(t, img, "localhost/wh:latest", filepath.Join(t.TempDir(), "wh.tar")))[0]
	r := got.RootFS
	for _, tc := range []struct {
		path string
		want string // "" means absent
	}{
		{"a/f1", ""}, {"a/sub/x", ""}, {"a/sub", ""}, {"a/new", "n"},
		{"b/keep", "k"}, {"b/gone", ""}, {"b/.wh.gone", ""},
		{"c", "back"}, {"d", "d is a file now"}, {"d/inner", ""},
		{"e/sub/old", ""}, {"e/top", ""}, {"e/sub/new", "n"}, {"e/.wh..wh..opq", ""},
		{"missing", ""},
	} {
		p := filepath.Join(r, tc.path)
		if tc.want == "" {
			if exists(p) {
				t.Errorf("%s exists, want it gone", tc.path)
			}
			continue
		}
		if b, err := os.ReadFile(p); err != nil || string(b) != tc.want {
			t.Errorf("%s = %q, %v; want %q", tc.path, b, err, tc.want)
		}
	}
}

func TestPreservesMetadata(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown and mknod")
	}
	img := testImage(t, "/x", []entry{
		{name: "suid", typ: '0', body: "s", mode: 0o4755, uid: 1000, gid: 2000},
		{name: "sticky", typ: '5', mode: 0o1777},
		hardlink("suid2", "suid"),
		symlink("sl", "/does/not/matter"),
		{name: "null", typ: '3', mode: 0o666, major: 1, minor: 3},
		{name: "fifo", typ: '6', mode: 0o600},
	})
	s := openStore(t)
	got := mustImport(t, s, writeDocker(t, img, "localhost/meta:latest", filepath.Join(t.TempDir(), "m.tar")))[0]
	r := got.RootFS
	st := func(p string) *syscall.Stat_t {
		var s syscall.Stat_t
		if err := syscall.Lstat(filepath.Join(r, p), &s); err != nil {
			t.Fatal(err)
		}
		return &s
	}
	if s := st("suid"); s.Mode&0o7777 != 0o4755 || s.Uid != 1000 || s.Gid != 2000 {
		t.Errorf("suid: mode %o uid %d gid %d", s.Mode&0o7777, s.Uid, s.Gid)
	}
	if s := st("sticky"); s.Mode&0o7777 != 0o1777 || s.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		t.Errorf("sticky: mode %o", s.Mode)
	}
	if a, b := st("suid"), st("suid2"); a.Ino != b.Ino {
		t.Errorf("hardlink: inodes %d and %d differ", a.Ino, b.Ino)
	}
	if l, err := os.Readlink(filepath.Join(r, "sl")); err != nil || l != "/does/not/matter" {
		t.Errorf("symlink = %q, %v", l, err)
	}
	if s := st("null"); s.Mode&syscall.S_IFMT != syscall.S_IFCHR || s.Rdev != 0x103 {
		t.Errorf("null: mode %o rdev %x", s.Mode, s.Rdev)
	}
	if s := st("fifo"); s.Mode&syscall.S_IFMT != syscall.S_IFIFO {
		t.Errorf("fifo: mode %o", s.Mode)
	}
}

// applyTo unpacks layers into a fresh rootfs beside an "outside" dir
// holding a victim file, and returns the error, rootfs and outside dir.
func applyTo(t testing.TB, l Limits, layers ...[]byte) (error, string, string) {
	t.Helper()
	base := t.TempDir()
	rootfs, outside := filepath.Join(base, "rootfs"), filepath.Join(base, "outside")
	for _, d := range []string{rootfs, outside} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(outside, "victim"), []byte("safe"), 0o644); err != nil {
		t.Fatal(err)
	}
	root, err := os.OpenRoot(rootfs)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	u := newUnpacker(root, l)
	for _, b := range layers {
		if err = u.applyLayer(context.Background(), strings.NewReader(string(b))); err != nil {
			break
		}
	}
	return err, rootfs, outside
}

func checkOutside(t testing.TB, outside string) {
	t.Helper()
	ents, err := os.ReadDir(outside)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 || ents[0].Name() != "victim" {
		t.Errorf("outside dir changed: %v", ents)
	}
	if b, err := os.ReadFile(filepath.Join(outside, "victim")); err != nil || string(b) != "safe" {
		t.Errorf("victim = %q, %v", b, err)
	}
	if exists(filepath.Join(filepath.Dir(outside), "escape")) {
		t.Errorf("file escaped next to the rootfs")
	}
}

func TestHostileLayers(t *testing.T) {
	// The outside dir is "../outside" from the rootfs.
	tests := []struct {
		name    string
		layers  [][]entry
		wantErr string // "" means the layer is accepted
		check   func(t *testing.T, rootfs string)
	}{
		{name: "dotdot", layers: [][]entry{{file("../escape", "x")}}, wantErr: "escapes"},
		{name: "nested dotdot", layers: [][]entry{{file("a/../../escape", "x")}}, wantErr: "escapes"},
		{name: "dotdot into outside", layers: [][]entry{{file("../outside/victim", "pwned")}}, wantErr: "escapes"},
		{name: "absolute path stays inside", layers: [][]entry{{file("/abs/file", "in")}},
			check: func(t *testing.T, r string) {
				if readFile(t, filepath.Join(r, "abs/file")) != "in" {
					t.Error("absolute path not unpacked into the rootfs")
				}
			}},
		{name: "file through absolute symlink", layers: [][]entry{{symlink("l", "/"), file("l/escape", "x")}}, wantErr: "not a directory"},
		{name: "file through relative symlink out", layers: [][]entry{{symlink("l", "../outside"), file("l/victim", "pwned")}}, wantErr: "not a directory"},
		{name: "file through inner symlink", layers: [][]entry{{dir("d"), symlink("l", "d"), file("l/x", "x")}}, wantErr: "not a directory"},
		{name: "symlink in a lower layer", layers: [][]entry{{symlink("l", "../outside")}, {file("l/victim", "pwned")}}, wantErr: "not a directory"},
		{name: "file replaces symlink, not written through", layers: [][]entry{{symlink("f", "../outside/victim")}, {file("f", "new")}},
			check: func(t *testing.T, r string) {
				if fi, err := os.Lstat(filepath.Join(r, "f")); err != nil || !fi.Mode().IsRegular() {
					t.Errorf("f is %v, %v; want a regular file", fi, err)
				}
			}},
		{name: "dir replaces symlink", layers: [][]entry{{symlink("d", "../outside")}, {dir("d"), file("d/victim", "in")}},
			check: func(t *testing.T, r string) {
				if readFile(t, filepath.Join(r, "d/victim")) != "in" {
					t.Error("d/victim not inside")
				}
			}},
		{name: "hardlink dotdot", layers: [][]entry{{hardlink("h", "../outside/victim")}}, wantErr: "escapes"},
		{name: "hardlink absolute to host file", layers: [][]entry{{hardlink("h", "/etc/passwd")}}, wantErr: "no such file"},
		{name: "hardlink through symlink", layers: [][]entry{{symlink("l", "../outside"), hardlink("h", "l/victim")}}, wantErr: "not a directory"},
		{name: "hardlink to symlink links the symlink", layers: [][]entry{{symlink("s", "../outside/victim"), hardlink("h", "s")}},
			check: func(t *testing.T, r string) {
				if fi, err := os.Lstat(filepath.Join(r, "h")); err != nil || fi.Mode()&os.ModeSymlink == 0 {
					t.Errorf("h = %v, %v; want a symlink", fi, err)
				}
			}},
		{name: "hardlink to missing", layers: [][]entry{{hardlink("h", "nope")}}, wantErr: "no such file"},
		{name: "whiteout through symlink", layers: [][]entry{{symlink("l", "../outside")}, {whiteout("l/.wh.victim")}}, wantErr: "not a directory"},
		{name: "opaque through symlink", layers: [][]entry{{symlink("l", "../outside")}, {whiteout("l/.wh..wh..opq")}}, wantErr: "not a directory"},
		{name: "whiteout dotdot", layers: [][]entry{{whiteout("a/../../outside/.wh.victim")}}, wantErr: "escapes"},
		{name: "root replaced by file", layers: [][]entry{{file(".", "x")}}, wantErr: "replace the rootfs"},
		{name: "symlink then dir entry under it", layers: [][]entry{{symlink("l", "../outside"), dir("l/sub")}}, wantErr: "not a directory"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var layers [][]byte
			for _, l := range tc.layers {
				layers = append(layers, tarBytes(t, l...))
			}
			err, rootfs, outside := applyTo(t, DefaultLimits, layers...)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("error = %v, want one containing %q", err, tc.wantErr)
			}
			checkOutside(t, outside)
			if tc.check != nil {
				tc.check(t, rootfs)
			}
		})
	}
}

func TestLimits(t *testing.T) {
	big := strings.Repeat("x", 64<<10)
	tests := []struct {
		name    string
		limits  Limits
		ents    []entry
		wantErr string
	}{
		{"size", Limits{MaxSize: 32 << 10, MaxEntries: 100}, []entry{file("big", big)}, "larger than the limit"},
		{"entries", Limits{MaxSize: 1 << 30, MaxEntries: 3}, []entry{file("a", ""), file("b", ""), file("c", ""), file("d", "")}, "more than 3 entries"},
		{"within", Limits{MaxSize: 1 << 20, MaxEntries: 4}, []entry{file("big", big)}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err, _, outside := applyTo(t, tc.limits, tarBytes(t, tc.ents...))
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("error = %v, want %q", err, tc.wantErr)
			}
			checkOutside(t, outside)
		})
	}
}

func TestImportRejectsTamperedLayer(t *testing.T) {
	img := testImage(t, "/x", []entry{file("a", "1")})
	dir := writeLayout(t, img, "localhost/t:1", filepath.Join(t.TempDir(), "layout"))
	layers, _ := img.Layers()
	d, _ := layers[0].Digest()
	// Replace the layer blob with another valid gzip tar.
	other := gzipBytes(t, tarBytes(t, file("a", "2")))
	if err := os.WriteFile(filepath.Join(dir, "blobs/sha256", d.Hex), other, 0o644); err != nil {
		t.Fatal(err)
	}
	s := openStore(t)
	_, err := s.Import(context.Background(), dir)
	if err == nil || !strings.Contains(err.Error(), "config says") {
		t.Fatalf("error = %v, want a diff_id mismatch", err)
	}
	if l, _ := s.List(); len(l) != 0 {
		t.Errorf("store has %d images after a failed import", len(l))
	}
}

func gzipBytes(t *testing.T, b []byte) []byte {
	t.Helper()
	var sb strings.Builder
	zw := gzip.NewWriter(&sb)
	zw.Write(b)
	zw.Close()
	return []byte(sb.String())
}

func TestNotAnImage(t *testing.T) {
	dir := t.TempDir()
	write := func(n string, b []byte) string {
		p := filepath.Join(dir, n)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	emptyDir := filepath.Join(dir, "emptydir")
	os.Mkdir(emptyDir, 0o755)
	tests := []struct {
		name, file, want string
	}{
		{"text", write("notes.txt", []byte("hello, this is not a tar file at all, just words\n")), "not a tar archive"},
		{"empty", write("empty.tar", nil), "empty tar"},
		{"tar of other files", write("other.tar", tarBytes(t, file("README", "hi"))), "without manifest.json"},
		{"gzip of text", write("x.gz", gzipBytes(t, []byte("plain words, no tar here, none at all......"))), "not a tar archive"},
		{"dir without layout", emptyDir, "without an oci-layout"},
	}
	s := openStore(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Import(context.Background(), tc.file)
			if err == nil {
				t.Fatal("import succeeded")
			}
			msg := err.Error()
			for _, w := range []string{tc.file, tc.want, "expected an OCI image layout", "docker save"} {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not mention %q", msg, w)
				}
			}
			var ni *NotImageError
			if !errors.As(err, &ni) || !errors.Is(err, runtime.ErrInvalid) {
				t.Errorf("error is not a NotImageError wrapping ErrInvalid")
			}
		})
	}
	if _, err := s.Import(context.Background(), filepath.Join(dir, "nope.tar")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: error = %v", err)
	}
}

func TestResolve(t *testing.T) {
	s := openStore(t)
	dir := t.TempDir()
	ids := map[string]string{}
	for i, ref := range []string{"localhost/counter:latest", "busybox:latest", "quay.io/team/tool:v2", "localhost/pause:3.10"} {
		img := testImage(t, "/e"+ref, []entry{file("f", ref)})
		got := mustImport(t, s, writeDocker(t, img, ref, filepath.Join(dir, string(rune('a'+i))+".tar")))[0]
		ids[ref] = got.ID
	}
	counterHex := strings.TrimPrefix(ids["localhost/counter:latest"], "sha256:")
	tests := []struct {
		ref  string
		want string // key into ids, "" for not found
	}{
		{"localhost/counter:latest", "localhost/counter:latest"},
		{"localhost/counter", "localhost/counter:latest"},
		{"counter", "localhost/counter:latest"},
		{"counter:latest", "localhost/counter:latest"},
		{"busybox", "busybox:latest"},
		{"library/busybox", "busybox:latest"},
		{"docker.io/library/busybox:latest", "busybox:latest"},
		{"quay.io/team/tool:v2", "quay.io/team/tool:v2"},
		{"pause:3.10", "localhost/pause:3.10"},
		{"pause", ""}, // only pause:3.10 exists
		{ids["localhost/counter:latest"], "localhost/counter:latest"},
		{counterHex, "localhost/counter:latest"},
		{counterHex[:12], "localhost/counter:latest"},
		{"sha256:" + counterHex[:8], "localhost/counter:latest"},
		{"quay.io/team/tool", ""},
		{"nothing", ""},
		{"", ""},
		{"sha256:" + strings.Repeat("0", 64), ""},
	}
	for _, tc := range tests {
		t.Run(tc.ref, func(t *testing.T) {
			got, err := s.Resolve(tc.ref)
			if tc.want == "" {
				var nf *NotFoundError
				if !errors.As(err, &nf) || !errors.Is(err, runtime.ErrInvalid) {
					t.Fatalf("Resolve = %v, %v; want not found wrapping ErrInvalid", got.ID, err)
				}
				want := `image "` + tc.ref + `" not found; import it with ` + "`ckpt image import`"
				if err.Error() != want {
					t.Errorf("error = %q, want %q", err, want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.ID != ids[tc.want] {
				t.Errorf("Resolve(%q) = %s, want %s (%s)", tc.ref, got.ID, ids[tc.want], tc.want)
			}
		})
	}
}

func TestNormalizeName(t *testing.T) {
	tests := []struct{ in, want string }{
		{"counter", "docker.io/library/counter:latest"},
		{"counter:v1", "docker.io/library/counter:v1"},
		{"user/app", "docker.io/user/app:latest"},
		{"index.docker.io/library/x:1", "docker.io/library/x:1"},
		{"localhost/counter", "localhost/counter:latest"},
		{"localhost:5000/a/b:c", "localhost:5000/a/b:c"},
		{"quay.io/a/b@sha256:" + strings.Repeat("a", 64), "quay.io/a/b@sha256:" + strings.Repeat("a", 64)},
		{"Upper", ""},
		{"a b", ""},
		{"", ""},
	}
	for _, tc := range tests {
		got, err := NormalizeName(tc.in)
		if tc.want == "" {
			if err == nil {
				t.Errorf("NormalizeName(%q) = %q, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("NormalizeName(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestReimportAndNamesMove(t *testing.T) {
	s := openStore(t)
	dir := t.TempDir()
	v1img := testImage(t, "/v1", []entry{file("v", "1")})
	v2img := testImage(t, "/v2", []entry{file("v", "2")})
	f1 := writeDocker(t, v1img, "localhost/app:latest", filepath.Join(dir, "1.tar"))
	a := mustImport(t, s, f1)[0]
	mtime := func() int64 {
		fi, err := os.Stat(a.RootFS)
		if err != nil {
			t.Fatal(err)
		}
		return fi.ModTime().UnixNano()
	}
	before := mtime()
	again := mustImport(t, s, f1)[0]
	if again.ID != a.ID || again.RootFS != a.RootFS || mtime() != before {
		t.Errorf("re-import changed the image: %+v vs %+v", again, a)
	}
	if l, _ := s.List(); len(l) != 1 || len(l[0].Names) != 1 {
		t.Fatalf("after re-import List = %+v", l)
	}
	b := mustImport(t, s, writeDocker(t, v2img, "localhost/app:latest", filepath.Join(dir, "2.tar")))[0]
	got, err := s.Resolve("app")
	if err != nil || got.ID != b.ID {
		t.Fatalf("app resolves to %s, %v; want the newest %s", got.ID, err, b.ID)
	}
	old, err := s.Resolve(a.ID)
	if err != nil || len(old.Names) != 0 {
		t.Errorf("old image = %+v, %v; want it kept without names", old, err)
	}
	// Importing the old one again moves the name back.
	mustImport(t, s, f1)
	if got, _ := s.Resolve("app"); got.ID != a.ID {
		t.Errorf("app resolves to %s after re-import, want %s", got.ID, a.ID)
	}

	// Remove.
	rm, err := s.Remove("app")
	if err != nil || rm.ID != a.ID {
		t.Fatalf("Remove = %+v, %v", rm, err)
	}
	if exists(filepath.Dir(a.RootFS)) {
		t.Errorf("%s still on disk", a.RootFS)
	}
	if _, err := s.Resolve(a.ID); err == nil {
		t.Errorf("removed image still resolves")
	}
	if _, err := s.Remove("app"); !errors.Is(err, runtime.ErrInvalid) {
		t.Errorf("second Remove = %v, want ErrInvalid", err)
	}
}

func TestConcurrentImports(t *testing.T) {
	dir := t.TempDir()
	storeDir := filepath.Join(dir, "images")
	const n = 6
	files := make([]string, n)
	for i := range files {
		img := testImage(t, "/e", []entry{file("f", strings.Repeat("x", i+1))})
		files[i] = writeDocker(t, img, "localhost/c"+string(rune('a'+i))+":latest", filepath.Join(dir, string(rune('a'+i))+".tar"))
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for i := 0; i < 2*n; i++ {
		wg.Add(1)
		go func(f string) {
			defer wg.Done()
			// Separate Stores take separate flocks, as two processes would.
			s, err := Open(storeDir)
			if err == nil {
				_, err = s.Import(context.Background(), f)
			}
			errs <- err
		}(files[i%n])
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	s, _ := Open(storeDir)
	l, err := s.List()
	if err != nil || len(l) != n {
		t.Fatalf("List = %d images, %v; want %d", len(l), err, n)
	}
	for _, img := range l {
		if len(img.Names) != 1 {
			t.Errorf("image %s has names %v", img.ID, img.Names)
		}
	}
	if ents, _ := os.ReadDir(filepath.Join(storeDir, "tmp")); len(ents) != 0 {
		t.Errorf("staging left behind: %v", ents)
	}
}

func TestOpenCleansDeadStaging(t *testing.T) {
	storeDir := filepath.Join(t.TempDir(), "images")
	if _, err := Open(storeDir); err != nil {
		t.Fatal(err)
	}
	// A pid that cannot exist (above pid_max) is taken as dead.
	stale := filepath.Join(storeDir, "tmp", "999999999-unpack-x")
	live := filepath.Join(storeDir, "tmp", "1-unpack-x")
	os.Mkdir(stale, 0o700)
	os.Mkdir(live, 0o700)
	if _, err := Open(storeDir); err != nil {
		t.Fatal(err)
	}
	if exists(stale) {
		t.Error("stale staging dir kept")
	}
	if !exists(live) {
		t.Error("staging dir of a live process removed")
	}
}
