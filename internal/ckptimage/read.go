package ckptimage

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// checkImage refuses an image that is not a checkpoint image: no checkpoint
// annotation on its manifest, or not exactly one layer of a sane size.
// It reads only the manifest and the config.
func checkImage(img v1.Image, what string) error {
	raw, err := img.RawManifest()
	if err != nil {
		return fmt.Errorf("read manifest of %s: %w", what, err)
	}
	if len(raw) > maxMeta {
		return &NotCheckpointError{What: what, Reason: "image: its manifest is too large"}
	}
	m, err := img.Manifest()
	if err != nil {
		return fmt.Errorf("read manifest of %s: %w", what, err)
	}
	if _, ok := IsCheckpoint(m.Annotations); !ok {
		return &NotCheckpointError{What: what, Reason: fmt.Sprintf("image: its manifest has no %s or %s annotation, nor a pod image's %s "+
			"(build one with `ckpt image from-checkpoint ARCHIVE REF`)", AnnotationName, AnnotationCRIOName, AnnotationPod)}
	}
	if len(m.Layers) != 1 {
		return &NotCheckpointError{What: what, Reason: fmt.Sprintf("image: it has %d layers, a checkpoint image has one", len(m.Layers))}
	}
	if l := m.Layers[0]; l.Size <= 0 || l.Size > maxLayerBytes {
		return &NotCheckpointError{What: what, Reason: fmt.Sprintf("image: its layer declares %d bytes", l.Size)}
	}
	if m.Config.Size > maxMeta {
		return &NotCheckpointError{What: what, Reason: "image: its config is too large"}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return fmt.Errorf("read config of %s: %w", what, err)
	}
	if len(cf.RootFS.DiffIDs) != 1 {
		return &NotCheckpointError{What: what, Reason: fmt.Sprintf("image: its config lists %d diff_ids", len(cf.RootFS.DiffIDs))}
	}
	return nil
}

// Archive checks that img is a checkpoint image and returns the plain tar
// stream of the archive it carries (its layer, uncompressed). The stream
// fails at its end if the content does not match the config's diff_id, and
// never yields more than the layer can hold.
func Archive(img v1.Image, what string) (io.ReadCloser, error) {
	if err := checkImage(img, what); err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	ls, err := img.Layers()
	if err != nil {
		return nil, fmt.Errorf("read layers of %s: %w", what, err)
	}
	rc, err := ls[0].Uncompressed()
	if err != nil {
		return nil, fmt.Errorf("read the layer of %s: %w", what, err)
	}
	want := cf.RootFS.DiffIDs[0]
	if want.Algorithm != "sha256" {
		rc.Close()
		return nil, &NotCheckpointError{What: what, Reason: "image: unsupported diff_id " + want.String()}
	}
	return &verifyReader{rc: rc, h: sha256.New(), want: want.Hex, left: maxLayerBytes * 4, what: what}, nil
}

// verifyReader hashes what it reads and turns EOF into an error when the
// digest does not match.
type verifyReader struct {
	rc   io.ReadCloser
	h    hash.Hash
	want string
	left int64
	what string
}

func (v *verifyReader) Read(p []byte) (int, error) {
	if v.left <= 0 {
		return 0, fmt.Errorf("the layer of %s is larger than %d bytes", v.what, maxLayerBytes*4)
	}
	if int64(len(p)) > v.left {
		p = p[:v.left]
	}
	n, err := v.rc.Read(p)
	v.left -= int64(n)
	v.h.Write(p[:n])
	if err == io.EOF {
		if got := hex.EncodeToString(v.h.Sum(nil)); got != v.want {
			return n, fmt.Errorf("the layer of %s: %w (sha256:%s, its config says sha256:%s)", v.what, errDigest, got, v.want)
		}
	}
	return n, err
}

func (v *verifyReader) Close() error { return v.rc.Close() }
