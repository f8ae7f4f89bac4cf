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

// FuzzImportArchive feeds hostile OCI archives to ImportArchive: it must
// refuse or import cleanly, and never keep a blob that fails its digest.
func FuzzImportArchive(f *testing.F) {
	b := build(f, testArchive(f, nil))
	s, err := Open(filepath.Join(f.TempDir(), "seed"))
	if err != nil {
		f.Fatal(err)
	}
	if _, err := s.Add(b.Image, "localhost/seed:1"); err != nil {
		f.Fatal(err)
	}
	saved := filepath.Join(f.TempDir(), "seed.tar")
	if err := s.SaveFile("localhost/seed:1", saved); err != nil {
		f.Fatal(err)
	}
	seed, _ := os.ReadFile(saved)
	f.Add(seed)
	f.Add(seed[:len(seed)/2])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		file := filepath.Join(dir, "in.tar")
		os.WriteFile(file, data, 0o600)
		s, err := Open(filepath.Join(dir, "store"))
		if err != nil {
			t.Fatal(err)
		}
		es, _, err := s.ImportArchive(file)
		if err != nil {
			return
		}
		for _, e := range es {
			rc, _, err := s.OpenArchive(context.Background(), e.Name, false, RemoteOptions{})
			if err != nil {
				t.Fatalf("imported %s but cannot open it: %v", e.Name, err)
			}
			if _, err := io.Copy(io.Discard, rc); err != nil {
				t.Fatalf("imported %s with a bad layer: %v", e.Name, err)
			}
			rc.Close()
		}
	})
}
