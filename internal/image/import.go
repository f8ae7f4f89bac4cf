package image

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/ckpt-dev/ckpt/internal/runtime"
	"github.com/ckpt-dev/ckpt/internal/safepath"
)

// Annotations that name an image in an OCI index.
const (
	annotationRefName        = "org.opencontainers.image.ref.name"
	annotationContainerdName = "io.containerd.image.name"
)

// maxMetaSize bounds manifests, indexes and configs read into memory.
const maxMetaSize = 8 << 20

// maxArchiveEntries bounds the entries of an image file (not of its layers):
// it holds a few blobs per layer.
const maxArchiveEntries = 100000

// source is one image found in an input file, with the names it carries.
type source struct {
	img   v1.Image
	names []string
}

// Import reads file, which is an OCI image layout directory, an OCI
// archive (a tar of a layout) or a `docker save` tarball (optionally gzip
// or zstd compressed), and unpacks every image in it. Importing an image
// again is cheap and moves its names to it.
func (s *Store) Import(ctx context.Context, file string) ([]Image, error) {
	imgs, err := s.importFile(ctx, file)
	if err != nil {
		return imgs, fmt.Errorf("import %s: %w", file, err)
	}
	return imgs, nil
}

func (s *Store) importFile(ctx context.Context, file string) ([]Image, error) {
	work, err := s.mkTemp("import")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)

	srcs, err := s.open(file, work)
	if err != nil {
		return nil, err
	}
	if len(srcs) == 0 {
		return nil, fmt.Errorf("no image for %s/%s in %s", goruntime.GOOS, goruntime.GOARCH, file)
	}
	var out []Image
	for _, src := range srcs {
		img, err := s.add(ctx, src)
		if err != nil {
			return out, err
		}
		out = append(out, img)
	}
	return out, nil
}

// NotImageError says that an input file is none of the kinds Import reads.
// Import's error names the file.
type NotImageError struct{ Reason string }

func (e *NotImageError) Error() string {
	return "not an image (" + e.Reason + "): expected an OCI image layout directory (with oci-layout and index.json), an OCI archive, or a `docker save` tarball (with manifest.json)"
}

// Unwrap lets callers test errors.Is(err, runtime.ErrInvalid).
func (e *NotImageError) Unwrap() error { return runtime.ErrInvalid }

func notImage(why string) error { return &NotImageError{Reason: why} }

// open finds the images in file. work is a private scratch dir.
func (s *Store) open(file, work string) ([]source, error) {
	fi, err := os.Stat(file)
	if err != nil {
		return nil, err
	}
	if fi.IsDir() {
		if _, err := os.Stat(filepath.Join(file, "oci-layout")); err != nil {
			return nil, notImage("directory without an oci-layout file")
		}
		return layoutSources(file)
	}
	if !fi.Mode().IsRegular() {
		return nil, notImage("not a regular file or directory")
	}
	tarFile, err := s.decompressed(file, work)
	if err != nil {
		return nil, err
	}
	kind, sizes, err := sniffTar(tarFile)
	if err != nil {
		return nil, notImage(err.Error())
	}
	switch kind {
	case "docker":
		return dockerSources(tarFile, sizes)
	case "oci":
		dir := filepath.Join(work, "layout")
		if err := extractLayout(tarFile, dir, s.Limits); err != nil {
			return nil, fmt.Errorf("extract OCI archive: %w", err)
		}
		return layoutSources(dir)
	}
	return nil, notImage("tar archive without manifest.json or index.json")
}

// decompressed returns a path to the plain tar of file, decompressing a
// gzip or zstd file into work.
func (s *Store) decompressed(file, work string) (string, error) {
	f, err := os.Open(file)
	if err != nil {
		return "", err
	}
	defer f.Close()
	var magic [4]byte
	n, _ := io.ReadFull(f, magic[:])
	var zr io.Reader
	switch {
	case n >= 2 && magic[0] == 0x1f && magic[1] == 0x8b:
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return "", err
		}
		gz, err := gzip.NewReader(bufio.NewReader(f))
		if err != nil {
			return "", notImage(err.Error())
		}
		defer gz.Close()
		zr = gz
	case n == 4 && bytes.Equal(magic[:], []byte{0x28, 0xb5, 0x2f, 0xfd}):
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return "", err
		}
		zd, err := zstd.NewReader(bufio.NewReader(f), zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(64<<20))
		if err != nil {
			return "", notImage(err.Error())
		}
		defer zd.Close()
		zr = zd
	default:
		return file, nil
	}
	out := filepath.Join(work, "image.tar")
	o, err := os.OpenFile(out, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return "", err
	}
	defer o.Close()
	var read int64
	if _, err := io.Copy(o, countingReader{r: zr, n: &read, max: s.Limits.MaxSize}); err != nil {
		return "", fmt.Errorf("decompress: %w", err)
	}
	return out, o.Close()
}

// sniffTar tells a docker save tarball ("docker") from an OCI archive
// ("oci") by the names of its entries, and returns the sizes of its
// regular files.
func sniffTar(file string) (string, map[string]int64, error) {
	f, err := os.Open(file)
	if err != nil {
		return "", nil, err
	}
	defer f.Close()
	tr := tar.NewReader(f) // an *os.File lets tar seek over contents
	sizes := map[string]int64{}
	for n := 0; ; n++ {
		hdr, err := tr.Next()
		if err == io.EOF {
			if n == 0 {
				return "", nil, errors.New("empty tar archive")
			}
			break
		}
		if err != nil {
			if n == 0 {
				return "", nil, errors.New("not a tar archive")
			}
			return "", nil, fmt.Errorf("broken tar archive: %v", err)
		}
		if n > maxArchiveEntries {
			return "", nil, errors.New("too many entries")
		}
		if hdr.Typeflag == tar.TypeReg && len(hdr.Name) <= safepath.MaxLen {
			sizes[strings.TrimPrefix(hdr.Name, "./")] = hdr.Size
		}
	}
	switch {
	case sizes["manifest.json"] > maxMetaSize:
		return "", nil, errors.New("manifest.json too large")
	case hasKey(sizes, "manifest.json"):
		return "docker", sizes, nil
	case hasKey(sizes, "oci-layout") && hasKey(sizes, "index.json"):
		return "oci", sizes, nil
	}
	return "", nil, nil
}

func hasKey(m map[string]int64, k string) bool {
	_, ok := m[k]
	return ok
}

// dockerSources reads a `docker save` tarball.
// sizes bounds the configs read into memory.
func dockerSources(file string, sizes map[string]int64) ([]source, error) {
	opener := func() (io.ReadCloser, error) { return os.Open(file) }
	m, err := tarball.LoadManifest(opener)
	if err != nil {
		return nil, fmt.Errorf("read manifest.json: %w", err)
	}
	var out []source
	for i, d := range m {
		if sizes[d.Config] > maxMetaSize {
			return nil, fmt.Errorf("config %s too large", d.Config)
		}
		var tag *name.Tag
		var names []string
		for _, rt := range d.RepoTags {
			n, err := NormalizeName(rt)
			if err != nil {
				return nil, fmt.Errorf("manifest.json: %w", err)
			}
			names = append(names, n)
		}
		if len(d.RepoTags) > 0 {
			t, err := name.NewTag(d.RepoTags[0])
			if err != nil {
				return nil, fmt.Errorf("manifest.json: %w", err)
			}
			tag = &t
		} else if len(m) > 1 {
			return nil, fmt.Errorf("manifest.json: image %d has no RepoTags, and there are %d images", i, len(m))
		}
		img, err := tarball.Image(opener, tag)
		if err != nil {
			return nil, fmt.Errorf("read image %d: %w", i, err)
		}
		out = append(out, source{img: img, names: names})
	}
	return out, nil
}

// layoutSources reads an OCI image layout directory.
func layoutSources(dir string) ([]source, error) {
	if fi, err := os.Stat(filepath.Join(dir, "index.json")); err != nil {
		return nil, fmt.Errorf("OCI layout %s: %w", dir, err)
	} else if fi.Size() > maxMetaSize {
		return nil, fmt.Errorf("OCI layout %s: index.json too large", dir)
	}
	lp, err := layout.FromPath(dir)
	if err != nil {
		return nil, fmt.Errorf("OCI layout %s: %w", dir, err)
	}
	idx, err := lp.ImageIndex()
	if err != nil {
		return nil, fmt.Errorf("OCI layout %s: %w", dir, err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("OCI layout %s: %w", dir, err)
	}
	blobOK := func(h v1.Hash) error {
		fi, err := os.Stat(filepath.Join(dir, "blobs", h.Algorithm, h.Hex))
		if err != nil {
			return err
		}
		if fi.Size() > maxMetaSize {
			return fmt.Errorf("blob %s too large for a manifest", h)
		}
		return nil
	}
	var out []source
	for _, d := range m.Manifests {
		if err := blobOK(d.Digest); err != nil {
			return nil, fmt.Errorf("OCI layout %s: %w", dir, err)
		}
		var img v1.Image
		switch {
		case d.MediaType.IsImage():
			if d.Platform != nil && !platformOK(d.Platform) {
				continue
			}
			img, err = idx.Image(d.Digest)
		case d.MediaType.IsIndex():
			img, err = pickPlatform(idx, d.Digest, blobOK)
			if img == nil && err == nil {
				continue
			}
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("OCI layout %s: %w", dir, err)
		}
		out = append(out, source{img: img, names: layoutNames(d.Annotations)})
	}
	return out, nil
}

// pickPlatform finds this machine's image in a nested index.
func pickPlatform(parent v1.ImageIndex, h v1.Hash, blobOK func(v1.Hash) error) (v1.Image, error) {
	ii, err := parent.ImageIndex(h)
	if err != nil {
		return nil, err
	}
	m, err := ii.IndexManifest()
	if err != nil {
		return nil, err
	}
	for _, d := range m.Manifests {
		if !d.MediaType.IsImage() || (d.Platform != nil && !platformOK(d.Platform)) {
			continue
		}
		if err := blobOK(d.Digest); err != nil {
			return nil, err
		}
		return ii.Image(d.Digest)
	}
	return nil, nil
}

func platformOK(p *v1.Platform) bool {
	return (p.OS == "" || p.OS == goruntime.GOOS) && (p.Architecture == "" || p.Architecture == goruntime.GOARCH)
}

// layoutNames takes the image's names from index annotations. A ref.name
// that is only a tag ("latest") names nothing on its own.
func layoutNames(a map[string]string) []string {
	var out []string
	for _, k := range []string{annotationContainerdName, annotationRefName} {
		v := a[k]
		if v == "" || (k == annotationRefName && !strings.ContainsAny(v, "/:")) {
			continue
		}
		n, err := NormalizeName(v)
		if err != nil {
			continue
		}
		if len(out) == 0 || out[0] != n {
			out = append(out, n)
		}
	}
	return out
}

// extractLayout unpacks the plain files of an OCI archive into dir.
func extractLayout(file, dir string, l Limits) error {
	if err := os.Mkdir(dir, 0o700); err != nil {
		return err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	var read int64
	tr := tar.NewReader(countingReader{r: bufio.NewReader(f), n: &read, max: l.MaxSize})
	for n := 0; ; n++ {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if n > maxArchiveEntries {
			return errors.New("too many entries")
		}
		p, err := safepath.Rel(hdr.Name)
		if err != nil {
			return fmt.Errorf("entry %q: %w", hdr.Name, err)
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := root.MkdirAll(p, 0o700); err != nil {
				return err
			}
		case tar.TypeReg, tar.TypeRegA:
			if d := filepath.Dir(p); d != "." {
				if err := root.MkdirAll(d, 0o700); err != nil {
					return err
				}
			}
			w, err := root.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
			if err != nil {
				return fmt.Errorf("entry %q: %w", hdr.Name, err)
			}
			_, err = io.CopyN(w, tr, hdr.Size)
			if cerr := w.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		default:
			// Layouts are plain files; anything else is ignored.
		}
	}
}

// add unpacks src (unless the store has it) and records its names.
func (s *Store) add(ctx context.Context, src source) (Image, error) {
	id, raw, cfg, err := verifiedConfig(src.img)
	if err != nil {
		return Image{}, err
	}
	label := id
	if len(src.names) > 0 {
		label = src.names[0]
	}
	hexID := strings.TrimPrefix(id, "sha256:")
	final := filepath.Join(s.dir, hexID)

	hasRootFS := func() bool {
		_, err := os.Stat(filepath.Join(final, "rootfs"))
		return err == nil
	}
	// Unpack outside the lock (it is slow); publish and index under it. Loop
	// because Remove may take the image away in between.
	var stage string
	defer func() {
		if stage != "" {
			os.RemoveAll(stage)
		}
	}()
	for {
		if stage == "" && !hasRootFS() {
			if stage, err = s.stage(ctx, src.img, cfg, raw, label); err != nil {
				return Image{}, err
			}
		}
		unlock, err := s.lock()
		if err != nil {
			return Image{}, err
		}
		if !hasRootFS() {
			if stage == "" {
				unlock()
				continue
			}
			if err := os.Rename(stage, final); err != nil {
				unlock()
				return Image{}, err
			}
			stage = ""
		}
		img, err := s.publish(id, cfg, src.names, final)
		unlock()
		return img, err
	}
}

// stage unpacks img into a new staging dir and returns it.
func (s *Store) stage(ctx context.Context, img v1.Image, cfg *v1.ConfigFile, raw []byte, label string) (string, error) {
	stage, err := s.mkTemp("unpack")
	if err != nil {
		return "", err
	}
	size, err := s.unpack(ctx, img, cfg, label, stage)
	if err != nil {
		err = fmt.Errorf("unpack image %s: %w", label, err)
	}
	if err == nil {
		err = os.WriteFile(filepath.Join(stage, "config.json"), raw, 0o600)
	}
	if err == nil {
		err = os.WriteFile(filepath.Join(stage, "size"), []byte(fmt.Sprint(size)), 0o600)
	}
	if err != nil {
		os.RemoveAll(stage)
		return "", err
	}
	return stage, nil
}

// publish records image id with names, which move to it from other images.
// Callers hold the lock.
func (s *Store) publish(id string, cfg *v1.ConfigFile, names []string, final string) (Image, error) {
	var size int64
	if b, err := os.ReadFile(filepath.Join(final, "size")); err == nil {
		fmt.Sscan(string(b), &size)
	}
	idx, err := s.readIndex()
	if err != nil {
		return Image{}, err
	}
	// Names move to the newest import.
	for i := range idx.Images {
		idx.Images[i].Names = without(idx.Images[i].Names, names)
	}
	at := -1
	for i, r := range idx.Images {
		if r.ID == id {
			at = i
		}
	}
	if at < 0 {
		idx.Images = append(idx.Images, record{ID: id, Size: size, Created: cfg.Created.Time, Config: cfg.Config})
		at = len(idx.Images) - 1
	}
	r := &idx.Images[at]
	r.Names = append(append([]string(nil), names...), r.Names...)
	r.Imported = time.Now().UTC()
	if err := s.writeIndex(idx); err != nil {
		return Image{}, err
	}
	return s.imageOf(*r), nil
}

func without(names, drop []string) []string {
	var out []string
	for _, n := range names {
		keep := true
		for _, d := range drop {
			if n == d {
				keep = false
			}
		}
		if keep {
			out = append(out, n)
		}
	}
	return out
}

// verifiedConfig returns the image's ID and config, checking that the ID
// is the digest of the config bytes.
func verifiedConfig(img v1.Image) (string, []byte, *v1.ConfigFile, error) {
	h, err := img.ConfigName()
	if err != nil {
		return "", nil, nil, fmt.Errorf("read config: %w", err)
	}
	raw, err := img.RawConfigFile()
	if err != nil {
		return "", nil, nil, fmt.Errorf("read config: %w", err)
	}
	if len(raw) > maxMetaSize {
		return "", nil, nil, errors.New("config too large")
	}
	sum := sha256.Sum256(raw)
	id := "sha256:" + hex.EncodeToString(sum[:])
	if h.String() != id || !idRE.MatchString(id) {
		return "", nil, nil, fmt.Errorf("config digest %s does not match its content %s", h, id)
	}
	var cfg v1.ConfigFile
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return "", nil, nil, fmt.Errorf("parse config %s: %w", id, err)
	}
	if cfg.OS != "" && cfg.OS != goruntime.GOOS {
		return "", nil, nil, fmt.Errorf("image %s is for %s, not %s", id, cfg.OS, goruntime.GOOS)
	}
	return id, raw, &cfg, nil
}

// unpack applies the image's layers into stage/rootfs and returns the
// bytes of file content written.
func (s *Store) unpack(ctx context.Context, img v1.Image, cfg *v1.ConfigFile, label, stage string) (int64, error) {
	layers, err := img.Layers()
	if err != nil {
		return 0, err
	}
	if len(layers) != len(cfg.RootFS.DiffIDs) {
		return 0, fmt.Errorf("%d layers but %d diff_ids in the config", len(layers), len(cfg.RootFS.DiffIDs))
	}
	rootfs := filepath.Join(stage, "rootfs")
	if err := os.Mkdir(rootfs, 0o755); err != nil {
		return 0, err
	}
	root, err := os.OpenRoot(rootfs)
	if err != nil {
		return 0, err
	}
	defer root.Close()
	u := newUnpacker(root, s.Limits)
	for i, l := range layers {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		p := Progress{Image: label, Layer: i + 1, Layers: len(layers)}
		p.Size, _ = l.Size()
		if s.Progress != nil {
			s.Progress(p)
		}
		if err := applyVerified(ctx, u, l, cfg.RootFS.DiffIDs[i]); err != nil {
			return 0, fmt.Errorf("layer %d/%d: %w", i+1, len(layers), err)
		}
		if s.Progress != nil {
			p.Done = true
			s.Progress(p)
		}
	}
	return u.size, nil
}

// applyVerified unpacks l, checking its uncompressed digest against want.
func applyVerified(ctx context.Context, u *unpacker, l v1.Layer, want v1.Hash) error {
	if want.Algorithm != "sha256" {
		return fmt.Errorf("unsupported diff_id %s", want)
	}
	rc, err := l.Uncompressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	h := sha256.New()
	if err := u.applyLayer(ctx, io.TeeReader(rc, h)); err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want.Hex {
		return fmt.Errorf("content is sha256:%s, config says %s", got, want)
	}
	return nil
}
