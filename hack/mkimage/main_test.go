package main

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// The OCI archive is reproducible and names the image the way containerd's
// import reads it.
func TestOCIArchiveReproducibleAndNamed(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "ckpt")
	os.WriteFile(bin, []byte("\x7fELF not really"), 0o755)
	t.Setenv("SOURCE_DATE_EPOCH", "1700000000")
	var outs [2][]byte
	for i := range outs {
		out := filepath.Join(dir, "img"+string(rune('a'+i))+".tar")
		if err := run(out, "localhost/ckpt:latest", bin, "/ckpt", "oci-archive", "", nil); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		outs[i] = b
	}
	if !bytes.Equal(outs[0], outs[1]) {
		t.Fatal("two builds of the same input differ")
	}
	files := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(outs[0]))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.ModTime.Unix() != 0 || h.Uid != 0 || h.Gid != 0 {
			t.Errorf("%s: time %v owner %d:%d", h.Name, h.ModTime, h.Uid, h.Gid)
		}
		b, _ := io.ReadAll(tr)
		files[h.Name] = b
	}
	if _, ok := files["oci-layout"]; !ok {
		t.Fatal("no oci-layout file")
	}
	var index struct {
		Manifests []struct {
			MediaType   string            `json:"mediaType"`
			Annotations map[string]string `json:"annotations"`
		} `json:"manifests"`
	}
	if err := json.Unmarshal(files["index.json"], &index); err != nil || len(index.Manifests) != 1 {
		t.Fatalf("index.json %s: %v", files["index.json"], err)
	}
	m := index.Manifests[0]
	if m.MediaType != "application/vnd.oci.image.manifest.v1+json" || m.Annotations["io.containerd.image.name"] != "localhost/ckpt:latest" {
		t.Errorf("manifest %+v", m)
	}
	// A different binary gives a different image.
	os.WriteFile(bin, []byte("\x7fELF other"), 0o755)
	out := filepath.Join(dir, "other.tar")
	if err := run(out, "localhost/ckpt:latest", bin, "/ckpt", "oci-archive", "", nil); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(out); bytes.Equal(b, outs[0]) {
		t.Error("a different binary gave the same archive")
	}
}
