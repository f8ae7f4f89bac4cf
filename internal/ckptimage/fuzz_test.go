package ckptimage

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/ckpt-dev/ckpt/internal/archive"
)

// FuzzOpenArchive feeds hostile manifests, configs and layers through the
// store's reader: resolving, checking and streaming the archive must fail
// cleanly, never panic or read without bound.
func FuzzOpenArchive(f *testing.F) {
	b := build(f, testArchive(f, nil))
	m, _ := b.Image.RawManifest()
	c, _ := b.Image.RawConfigFile()
	layer := testArchive(f, nil)
	f.Add(m, c, layer)
	f.Add(m, c, layer[:len(layer)/2])
	f.Add([]byte(`{"schemaVersion":2,"annotations":{"org.criu.checkpoint.container.name":"x"},"layers":[]}`), c, layer)
	f.Add([]byte(`{}`), []byte(`{}`), []byte{})
	f.Fuzz(func(t *testing.T, manifest, config, layer []byte) {
		dir := t.TempDir()
		blob := func(data []byte) string {
			sum := sha256.Sum256(data)
			h := hex.EncodeToString(sum[:])
			os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o700)
			os.WriteFile(filepath.Join(dir, "blobs", "sha256", h), data, 0o600)
			return "sha256:" + h
		}
		blob(config)
		blob(layer)
		md := blob(manifest)
		idx, _ := json.Marshal(map[string]any{
			"schemaVersion": 2,
			"manifests": []map[string]any{{
				"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": len(manifest),
				"annotations": map[string]string{annotationRefName: "localhost/fuzz:latest"},
			}},
		})
		os.WriteFile(filepath.Join(dir, "index.json"), idx, 0o600)
		os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o600)
		s, err := Open(dir)
		if err != nil {
			return
		}
		rc, _, err := s.OpenArchive(context.Background(), "localhost/fuzz", false, RemoteOptions{})
		if err != nil {
			return
		}
		defer rc.Close()
		_ = archive.Walk(rc, archive.Limits{MaxMemberBytes: 1 << 20, MaxTotalBytes: 4 << 20, MaxEntries: 1000},
			func(_ *tar.Header, body io.Reader) error {
				_, err := io.Copy(io.Discard, body)
				return err
			})
	})
}
