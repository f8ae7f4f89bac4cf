package ckptimage

import (
	"archive/tar"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Save writes the checkpoint image ref as an OCI archive (a tar of an OCI
// image layout) that `ctr -n k8s.io images import` and `ckpt image import`
// read. The manifest's descriptor in index.json carries the image's name
// twice: io.containerd.image.name for containerd, ref.name for the rest.
func (s *Store) Save(ref string, w io.Writer) error {
	img, e, err := s.Resolve(ref)
	if err != nil {
		return err
	}
	if err := saveImage(img, e.Name, w); err != nil {
		return fmt.Errorf("save %s: %w", e.Name, err)
	}
	return nil
}

func saveImage(img v1.Image, name string, w io.Writer) error {
	rawManifest, err := img.RawManifest()
	if err != nil {
		return err
	}
	digest, err := img.Digest()
	if err != nil {
		return err
	}
	m, err := img.Manifest()
	if err != nil {
		return err
	}
	rawConfig, err := img.RawConfigFile()
	if err != nil {
		return err
	}
	idx := v1.IndexManifest{
		SchemaVersion: 2,
		MediaType:     types.OCIImageIndex,
		Manifests: []v1.Descriptor{{
			MediaType: types.OCIManifestSchema1, Size: int64(len(rawManifest)), Digest: digest,
			Annotations: map[string]string{annotationContainerdName: name, annotationRefName: name},
			Platform:    &v1.Platform{OS: "linux", Architecture: goArch(m.Annotations["org.criu.checkpoint.host.arch"])},
		}},
	}
	rawIndex, err := json.Marshal(idx)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(w)
	file := func(name string, b []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err := tw.Write(b)
		return err
	}
	for _, d := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(&tar.Header{Name: d, Mode: 0o755, Typeflag: tar.TypeDir}); err != nil {
			return err
		}
	}
	if err := file("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return err
	}
	if err := file("index.json", rawIndex); err != nil {
		return err
	}
	if err := file("blobs/sha256/"+digest.Hex, rawManifest); err != nil {
		return err
	}
	if err := file("blobs/sha256/"+m.Config.Digest.Hex, rawConfig); err != nil {
		return err
	}
	for _, ld := range m.Layers {
		l, err := img.LayerByDigest(ld.Digest)
		if err != nil {
			return err
		}
		rc, err := l.Compressed()
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Name: "blobs/sha256/" + ld.Digest.Hex, Mode: 0o644, Size: ld.Size, Typeflag: tar.TypeReg}); err != nil {
			rc.Close()
			return err
		}
		_, err = io.CopyN(tw, rc, ld.Size)
		rc.Close()
		if err != nil {
			return err
		}
	}
	return tw.Close()
}

// SaveFile is Save into a new file (0600: it holds the container's memory),
// written beside path and renamed into place.
func (s *Store) SaveFile(ref, path string) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"-*")
	if err != nil {
		return fmt.Errorf("save %s: %w", ref, err)
	}
	defer os.Remove(f.Name())
	err = s.Save(ref, f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	return err
}

// OpenArchive returns the plain tar stream of the archive the checkpoint
// image ref carries, from the store, or pulled into it first when it is
// not there and pull is set.
func (s *Store) OpenArchive(ctx context.Context, ref string, pull bool, o RemoteOptions) (io.ReadCloser, Entry, error) {
	img, e, err := s.Resolve(ref)
	pulled := false
	if err != nil && pull && isNotFound(err) {
		if e, err = s.Pull(ctx, ref, o); err == nil {
			pulled = true
			img, e, err = s.Resolve(e.Name)
		}
	}
	if err != nil {
		return nil, Entry{}, err
	}
	e.Pulled = pulled
	rc, err := Archive(img, e.Name)
	return rc, e, err
}

// Forget removes a name that still points to digest: what a caller that
// pulled an image for a failed restore uses to leave nothing behind.
func (s *Store) Forget(name, digest string) error {
	_, e, err := s.Resolve(name)
	if err != nil || e.Digest != digest {
		return nil
	}
	_, err = s.Remove(name)
	return err
}

// ArchiveFile returns a file holding the plain archive tar of the
// checkpoint image ref (pulled first when pull is set and the store lacks
// it), for readers that take a path. An uncompressed layer is its own blob;
// another is decompressed into tmpDir. cleanup removes what was made.
func (s *Store) ArchiveFile(ctx context.Context, ref string, pull bool, o RemoteOptions, tmpDir string) (path string, cleanup func(), err error) {
	img, e, err := s.Resolve(ref)
	if err != nil && pull && isNotFound(err) {
		if e, err = s.Pull(ctx, ref, o); err == nil {
			img, e, err = s.Resolve(e.Name)
		}
	}
	if err != nil {
		return "", nil, err
	}
	if err := checkImage(img, e.Name); err != nil {
		return "", nil, err
	}
	m, err := img.Manifest()
	if err != nil {
		return "", nil, err
	}
	ld := m.Layers[0]
	if ld.MediaType == types.OCIUncompressedLayer || ld.MediaType == types.DockerUncompressedLayer {
		return s.blobPath(ld.Digest), func() {}, nil
	}
	rc, err := Archive(img, e.Name)
	if err != nil {
		return "", nil, err
	}
	defer rc.Close()
	f, err := os.CreateTemp(tmpDir, "ckpt-image-archive-*.tar")
	if err != nil {
		return "", nil, err
	}
	if _, err = io.Copy(f, rc); err == nil {
		err = f.Close()
	} else {
		f.Close()
	}
	if err != nil {
		os.Remove(f.Name())
		return "", nil, fmt.Errorf("read %s: %w", e.Name, err)
	}
	return f.Name(), func() { os.Remove(f.Name()) }, nil
}
