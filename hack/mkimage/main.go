// Command mkimage builds a single-layer container image from a static
// binary, with /tmp, /etc/passwd and /etc/group, and writes it as a
// `docker save` tarball (default) or an OCI image layout directory.
//
//	go run ./hack/mkimage -o counter.tar -name localhost/counter:latest -binary ./counter
//
// The output is reproducible: file times are zero and the image's created
// time comes from SOURCE_DATE_EPOCH (default: the Unix epoch).
package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	var (
		out, ref, binary, entrypoint, format, user string
		env                                        listFlag
	)
	flag.StringVar(&out, "o", "", "output file (docker) or directory (oci-layout)")
	flag.StringVar(&ref, "name", "", "image name, e.g. localhost/counter:latest")
	flag.StringVar(&binary, "binary", "", "static binary to put in the image")
	flag.StringVar(&entrypoint, "entrypoint", "", "path of the binary in the image (default /<binary name>)")
	flag.StringVar(&format, "format", "docker", "docker (a `docker save` tarball), oci-layout (a directory) or oci-archive (that directory as a tar, for ctr images import)")
	flag.Var(&env, "env", "K=V environment for the image (repeatable)")
	flag.StringVar(&user, "user", "", "the image config's User (e.g. nobody, 65534:65534)")
	flag.Parse()
	if err := run(out, ref, binary, entrypoint, format, user, env); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

func run(out, ref, binary, entrypoint, format, user string, env []string) error {
	if out == "" || ref == "" || binary == "" {
		return errors.New("-o, -name and -binary are required")
	}
	tag, err := name.NewTag(ref)
	if err != nil {
		return fmt.Errorf("-name %q: %w", ref, err)
	}
	if entrypoint == "" {
		entrypoint = "/" + path.Base(binary)
	}
	if !path.IsAbs(entrypoint) || path.Clean(entrypoint) != entrypoint {
		return fmt.Errorf("-entrypoint %q must be a clean absolute path", entrypoint)
	}
	for _, e := range env {
		if !strings.Contains(e, "=") {
			return fmt.Errorf("-env %q is not K=V", e)
		}
	}
	created := time.Unix(0, 0).UTC()
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		sec, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("SOURCE_DATE_EPOCH: %w", err)
		}
		created = time.Unix(sec, 0).UTC()
	}

	img, err := build(binary, entrypoint, user, env, created, format != "docker")
	if err != nil {
		return err
	}
	switch format {
	case "docker":
		return writeDocker(out, tag, img)
	case "oci-layout":
		return writeLayout(out, tag, img)
	case "oci-archive":
		return writeOCIArchive(out, tag, img)
	}
	return fmt.Errorf("-format %q: want docker, oci-layout or oci-archive", format)
}

// build makes the image, with OCI media types if oci is set and Docker
// ones (which `docker save` tarballs carry) otherwise.
func build(binary, entrypoint, user string, env []string, created time.Time, oci bool) (v1.Image, error) {
	bin, err := os.ReadFile(binary)
	if err != nil {
		return nil, err
	}
	layerTar, err := rootfsTar(bin, entrypoint)
	if err != nil {
		return nil, err
	}
	base, layerType := empty.Image, types.DockerLayer
	if oci {
		base = mutate.ConfigMediaType(mutate.MediaType(base, types.OCIManifestSchema1), types.OCIConfigJSON)
		layerType = types.OCILayer
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(layerType))
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(base, layer)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Created = v1.Time{Time: created}
	cf.Config.Entrypoint = []string{entrypoint}
	cf.Config.Env = append([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, env...)
	cf.Config.WorkingDir = "/"
	cf.Config.User = user
	return mutate.ConfigFile(img, cf)
}

// rootfsTar is the image's one layer: parent dirs, /tmp, /etc files, the binary.
func rootfsTar(bin []byte, entrypoint string) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	add := func(h *tar.Header, body []byte) error {
		h.ModTime = time.Unix(0, 0)
		h.Format = tar.FormatPAX
		h.Size = int64(len(body))
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		_, err := tw.Write(body)
		return err
	}
	mkdirs := func(p string) error {
		var parts []string
		for d := path.Dir(p); d != "/"; d = path.Dir(d) {
			parts = append([]string{d}, parts...)
		}
		for _, d := range parts {
			if dirs[d] {
				continue
			}
			dirs[d] = true
			if err := add(&tar.Header{Name: d[1:] + "/", Typeflag: tar.TypeDir, Mode: 0o755}, nil); err != nil {
				return err
			}
		}
		return nil
	}
	dirs["/tmp"] = true
	if err := add(&tar.Header{Name: "tmp/", Typeflag: tar.TypeDir, Mode: 0o1777}, nil); err != nil {
		return nil, err
	}
	files := []struct {
		path string
		mode int64
		body []byte
	}{
		{"/etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n")},
		{"/etc/group", 0o644, []byte("root:x:0:\nnogroup:x:65534:\n")},
		{entrypoint, 0o755, bin},
	}
	for _, f := range files {
		if err := mkdirs(f.path); err != nil {
			return nil, err
		}
		if err := add(&tar.Header{Name: f.path[1:], Typeflag: tar.TypeReg, Mode: f.mode}, f.body); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// writeDocker writes a `docker save` tarball through a temp file, so a
// failed run leaves no half-written output.
func writeDocker(out string, tag name.Tag, img v1.Image) error {
	tmp := out + ".tmp"
	if err := tarball.WriteToFile(tmp, tag, img); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, out)
}

// writeLayout writes an OCI layout whose index names the image the way
// both containerd and OCI tools read it.
func writeLayout(out string, tag name.Tag, img v1.Image) error {
	if err := os.RemoveAll(out); err != nil {
		return err
	}
	p, err := layout.Write(out, empty.Index)
	if err != nil {
		return err
	}
	return p.AppendImage(img, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": tag.String(),
		"io.containerd.image.name":          tag.String(),
	}))
}

// writeOCIArchive writes the OCI layout as a tar archive (what `ctr images
// import` and `podman load` take): entries sorted, times zero, owner root,
// so the same image gives the same bytes.
func writeOCIArchive(out string, tag name.Tag, img v1.Image) error {
	dir, err := os.MkdirTemp(filepath.Dir(out), ".mkimage-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := writeLayout(filepath.Join(dir, "layout"), tag, img); err != nil {
		return err
	}
	root := filepath.Join(dir, "layout")
	var files []string
	if err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != root {
			files = append(files, p)
		}
		return nil
	}); err != nil {
		return err
	}
	sort.Strings(files)
	tmp := out + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	tw := tar.NewWriter(f)
	for _, p := range files {
		rel, _ := filepath.Rel(root, p)
		st, err := os.Lstat(p)
		if err != nil {
			return err
		}
		h := &tar.Header{Name: filepath.ToSlash(rel), ModTime: time.Unix(0, 0), Format: tar.FormatPAX}
		if st.IsDir() {
			h.Typeflag, h.Name, h.Mode = tar.TypeDir, h.Name+"/", 0o755
			if err := tw.WriteHeader(h); err != nil {
				return err
			}
			continue
		}
		body, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		h.Typeflag, h.Mode, h.Size = tar.TypeReg, 0o644, int64(len(body))
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if _, err := tw.Write(body); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, out)
}
