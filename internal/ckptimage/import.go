package ckptimage

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"

	"github.com/ckpt-dev/ckpt/internal/archive"
	"github.com/ckpt-dev/ckpt/internal/image"
)

// ImportArchive imports the checkpoint images of an OCI archive (what Save
// writes). ok is false when the file is not an OCI archive holding a
// checkpoint image: then it is no business of this store, and nothing was
// read beyond index.json and the manifests. Every blob is checked against
// its digest before it is stored.
func (s *Store) ImportArchive(file string) (_ []Entry, ok bool, _ error) {
	named, err := checkpointManifests(file)
	if err != nil || len(named) == 0 {
		return nil, false, nil
	}
	work, err := s.TempDir()
	if err != nil {
		return nil, true, err
	}
	dir, err := os.MkdirTemp(work, fmt.Sprintf("layer-%d-import-", os.Getpid()))
	if err != nil {
		return nil, true, err
	}
	defer os.RemoveAll(dir)
	f, err := os.Open(file)
	if err != nil {
		return nil, true, err
	}
	_, err = archive.Extract(f, filepath.Join(dir, "layout"), archive.Limits{}, nil)
	f.Close()
	if err != nil {
		return nil, true, fmt.Errorf("import %s: %w", file, err)
	}
	lp, err := layout.FromPath(filepath.Join(dir, "layout"))
	if err != nil {
		return nil, true, fmt.Errorf("import %s: %w", file, err)
	}
	var out []Entry
	for h, name := range named {
		e, err := s.importImage(lp, h, name)
		if err != nil {
			return out, true, fmt.Errorf("import %s: %s: %w", file, name, err)
		}
		out = append(out, e)
	}
	return out, true, nil
}

func (s *Store) importImage(lp layout.Path, h v1.Hash, ref string) (Entry, error) {
	name, err := image.NormalizeName(ref)
	if err != nil {
		return Entry{}, err
	}
	img, err := lp.Image(h)
	if err != nil {
		return Entry{}, err
	}
	raw, err := img.RawManifest()
	if err != nil {
		return Entry{}, err
	}
	if err := sameDigest(raw, h); err != nil {
		return Entry{}, fmt.Errorf("manifest: %w", err)
	}
	if err := checkImage(img, name); err != nil {
		return Entry{}, err
	}
	m, _ := img.Manifest()
	cfg, err := img.RawConfigFile()
	if err != nil {
		return Entry{}, err
	}
	if err := sameDigest(cfg, m.Config.Digest); err != nil {
		return Entry{}, fmt.Errorf("config: %w", err)
	}
	unlock, err := s.lock()
	if err != nil {
		return Entry{}, err
	}
	defer unlock()
	ld := m.Layers[0]
	blob, err := os.Open(filepath.Join(string(lp), "blobs", ld.Digest.Algorithm, ld.Digest.Hex))
	if err == nil {
		err = s.writeBlob(ld.Digest, ld.Size, blob, nil)
		blob.Close()
	}
	if err == nil {
		err = s.lp.ReplaceImage(img, matchName(name), layoutNameOption(name))
	}
	s.gc()
	if err != nil {
		return Entry{}, err
	}
	return entryOf(name, img)
}

func sameDigest(b []byte, h v1.Hash) error {
	sum := sha256.Sum256(b)
	if h.Algorithm != "sha256" || hex.EncodeToString(sum[:]) != h.Hex {
		return fmt.Errorf("%w (%s)", errDigest, h)
	}
	return nil
}

// checkpointManifests reads index.json and the manifests it names from an
// OCI archive, and returns the checkpoint images by manifest digest, with
// their names (io.containerd.image.name or a full ref.name).
func checkpointManifests(file string) (map[v1.Hash]string, error) {
	idxBytes, err := tarMember(file, func(n string) bool { return n == "index.json" })
	if err != nil {
		return nil, err
	}
	var idx v1.IndexManifest
	if err := json.Unmarshal(idxBytes["index.json"], &idx); err != nil {
		return nil, err
	}
	want := map[string]v1.Descriptor{}
	for _, d := range idx.Manifests {
		if d.MediaType.IsImage() && d.Digest.Algorithm == "sha256" && len(d.Digest.Hex) == 64 && isHex(d.Digest.Hex) {
			want["blobs/sha256/"+d.Digest.Hex] = d
		}
	}
	blobs, err := tarMember(file, func(n string) bool { _, ok := want[n]; return ok })
	if err != nil {
		return nil, err
	}
	out := map[v1.Hash]string{}
	for path, b := range blobs {
		var m v1.Manifest
		if json.Unmarshal(b, &m) != nil {
			continue
		}
		if _, ok := IsCheckpoint(m.Annotations); !ok {
			continue
		}
		d := want[path]
		name := d.Annotations[annotationContainerdName]
		if name == "" && strings.ContainsAny(d.Annotations[annotationRefName], "/:") {
			name = d.Annotations[annotationRefName]
		}
		if name == "" {
			return nil, errors.New("a checkpoint image without a name")
		}
		out[d.Digest] = name
	}
	return out, nil
}

// tarMember reads the small regular members of a tar that want selects.
func tarMember(file string, want func(string) bool) (map[string][]byte, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string][]byte{}
	tr := tar.NewReader(f) // an *os.File lets it seek over contents
	for n := 0; n < 100000; n++ {
		h, err := tr.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		name := strings.TrimPrefix(h.Name, "./")
		if h.Typeflag != tar.TypeReg || !want(name) {
			continue
		}
		if h.Size > maxMeta {
			return nil, fmt.Errorf("%s: too large", name)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			return nil, err
		}
		out[name] = b
	}
	return nil, errors.New("too many entries")
}
