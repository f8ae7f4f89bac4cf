package debimage

import (
	"archive/tar"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/ckpt-dev/ckpt/internal/image"
)

const dependsOut = `redis-server
  PreDepends: init-system-helpers
  Depends: lsb-base
    sysvinit-utils
 |Depends: debconf
  Depends: <debconf-2.0>
    cdebconf
    debconf
  Depends: libc6:any
python3-minimal
  PreDepends: python3.11-minimal
  Depends: <virt-only>
    prov-a
    prov-b
`

func TestParseDepends(t *testing.T) {
	got, err := parseDepends([]byte(dependsOut))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][][]alt{
		"redis-server": {
			{{name: "init-system-helpers"}},
			{{name: "lsb-base", providers: []string{"sysvinit-utils"}}},
			{{name: "debconf"}, {name: "debconf-2.0", virtual: true, providers: []string{"cdebconf", "debconf"}}},
			{{name: "libc6"}},
		},
		"python3-minimal": {
			{{name: "python3.11-minimal"}},
			{{name: "virt-only", virtual: true, providers: []string{"prov-a", "prov-b"}}},
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("parseDepends:\n got %+v\nwant %+v", got, want)
	}
}

func TestParseDependsRejects(t *testing.T) {
	for _, in := range []string{
		"    provider-first\n",
		"pkg\n  Depends libc6\n",
		"  Depends: orphan\n",
	} {
		if _, err := parseDepends([]byte(in)); err == nil {
			t.Errorf("parseDepends(%q): no error", in)
		}
	}
}

func TestPick(t *testing.T) {
	debconf := []alt{{name: "debconf"}, {name: "debconf-2.0", virtual: true, providers: []string{"cdebconf", "debconf"}}}
	virt := []alt{{name: "v", virtual: true, providers: []string{"p1", "p2"}}}
	for _, c := range []struct {
		group        []alt
		chosen, skip []string
		want         string
	}{
		{debconf, nil, nil, "debconf"},
		{debconf, []string{"cdebconf"}, nil, ""},
		{debconf, nil, []string{"debconf"}, ""},
		{virt, nil, nil, "p1"},
		{virt, []string{"p2"}, nil, ""},
		{[]alt{{name: "a"}}, []string{"a"}, nil, ""},
		{[]alt{{name: "v", virtual: true}}, nil, nil, ""},
	} {
		set := func(l []string) map[string]bool {
			m := map[string]bool{}
			for _, s := range l {
				m[s] = true
			}
			return m
		}
		if got := pick(c.group, set(c.chosen), set(c.skip)); got != c.want {
			t.Errorf("pick(%+v, chosen %v, skip %v) = %q, want %q", c.group, c.chosen, c.skip, got, c.want)
		}
	}
}

func TestSpecValidate(t *testing.T) {
	ok := Spec{Name: "localhost/x:1", Packages: []string{"busybox-static"}}
	if err := ok.validate(); err != nil {
		t.Fatal(err)
	}
	for _, s := range []Spec{
		{Packages: []string{"a"}},
		{Name: "x"},
		{Name: "x", Packages: []string{"a"}, Files: []File{{Path: "rel"}}},
		{Name: "x", Packages: []string{"a"}, Files: []File{{Path: "/a/../b"}}},
		{Name: "x", Packages: []string{"a"}, Dirs: []Dir{{Path: "/a/"}}},
		{Name: "x", Packages: []string{"a"}, Users: []User{{Name: "ro:ot"}}},
		{Name: "x", Packages: []string{"a"}, Users: []User{{Name: "root"}}},
		{Name: "x", Packages: []string{"a"}, Symlinks: map[string]string{"bin/sh": "busybox"}},
	} {
		if err := s.validate(); err == nil {
			t.Errorf("validate(%+v): no error", s)
		}
	}
}

// TestBuildBusybox builds a real image from Debian's busybox-static (about
// 1 MB to download once) and imports it with ckpt's own importer.
func TestBuildBusybox(t *testing.T) {
	if testing.Short() {
		t.Skip("downloads Debian packages")
	}
	if os.Geteuid() != 0 {
		t.Skip("unpacking packages with their owners needs root")
	}
	if err := Check(); err != nil {
		t.Skip(err)
	}
	b := Builder{CacheDir: cacheForTest(t), Logf: t.Logf}
	spec := Spec{
		Name:       "localhost/debimage-test:1",
		Packages:   []string{"busybox-static"},
		Users:      []User{{Name: "app", UID: 1000, GID: 1000, Home: "/home/app"}},
		Dirs:       []Dir{{Path: "/home/app", Mode: 0o750, UID: 1000, GID: 1000}, {Path: "/data", Mode: 0o1777}},
		Files:      []File{{Path: "/bin/hello.sh", Mode: 0o755, Data: []byte("#!/bin/sh\necho hello\n")}},
		Symlinks:   map[string]string{"/bin/sh": "busybox"},
		Entrypoint: []string{"/bin/sh", "/bin/hello.sh"},
	}
	ctx := context.Background()
	path, err := b.Build(ctx, spec)
	if errors.Is(err, ErrNoApt) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	again, err := b.Build(ctx, spec)
	if err != nil || again != path {
		t.Fatalf("second build: %q %v, want the cached %q", again, err, path)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("cached build took %v", d)
	}

	img, err := tarball.ImageFromPath(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cf.Config.Entrypoint, spec.Entrypoint) {
		t.Errorf("entrypoint %v", cf.Config.Entrypoint)
	}
	layers, _ := img.Layers()
	if len(layers) != 1 {
		t.Fatalf("%d layers, want 1", len(layers))
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	seen := map[string]*tar.Header{}
	bodies := map[string]string{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		seen[h.Name] = h
		if strings.HasPrefix(h.Name, "etc/") || h.Name == "bin/hello.sh" {
			b, _ := io.ReadAll(tr)
			bodies[h.Name] = string(b)
		}
	}
	if h := seen["bin/busybox"]; h == nil || h.Mode&0o111 == 0 || h.Size < 1<<20 {
		t.Errorf("bin/busybox: %+v", h)
	}
	if h := seen["bin/sh"]; h == nil || h.Typeflag != tar.TypeSymlink || h.Linkname != "busybox" {
		t.Errorf("bin/sh: %+v", h)
	}
	if h := seen["data/"]; h == nil || h.Mode != 0o1777 {
		t.Errorf("data/: %+v", h)
	}
	if h := seen["home/app/"]; h == nil || h.Uid != 1000 || h.Mode != 0o750 {
		t.Errorf("home/app/: %+v", h)
	}
	if h := seen["tmp/"]; h == nil || h.Mode != 0o1777 {
		t.Errorf("tmp/: %+v", h)
	}
	if !strings.Contains(bodies["etc/passwd"], "app:x:1000:1000:app:/home/app:") || !strings.HasPrefix(bodies["etc/passwd"], "root:x:0:0:") {
		t.Errorf("etc/passwd: %q", bodies["etc/passwd"])
	}
	if !strings.Contains(bodies["etc/group"], "app:x:1000:") {
		t.Errorf("etc/group: %q", bodies["etc/group"])
	}
	if bodies["bin/hello.sh"] != "#!/bin/sh\necho hello\n" {
		t.Errorf("bin/hello.sh: %q", bodies["bin/hello.sh"])
	}
	for name := range seen {
		if strings.HasPrefix(name, "usr/share/doc/") {
			t.Errorf("%s was not pruned", name)
		}
	}

	store, err := image.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	imgs, err := store.Import(ctx, path)
	if err != nil {
		t.Fatalf("ckpt's importer refuses the image: %v", err)
	}
	if len(imgs) != 1 {
		t.Fatalf("imported %d images", len(imgs))
	}
	got, err := store.Resolve(spec.Name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(got.RootFS, "bin", "busybox")); err != nil {
		t.Errorf("imported rootfs: %v", err)
	}
}

// cacheForTest shares the real cache (so that CI downloads once) unless
// CKPT_DEBIMAGE_CACHE says otherwise.
func cacheForTest(t *testing.T) string {
	if d := os.Getenv("CKPT_DEBIMAGE_CACHE"); d != "" {
		return d
	}
	return DefaultCacheDir
}
