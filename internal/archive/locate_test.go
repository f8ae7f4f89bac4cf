package archive

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLocate writes an archive, locates its members and reads each one
// back at its offset; the manifest's digests match the located content.
func TestLocate(t *testing.T) {
	members := map[string][]byte{
		"config.dump":                                 []byte(`{"id":"x"}`),
		"checkpoint/pages-1.img":                      bytes.Repeat([]byte{7}, 3*4096+5),
		"checkpoint/pagemap-1.img":                    []byte("pm"),
		"checkpoint/empty.img":                        {},
		"a/long/" + strings.Repeat("n", 120) + ".img": []byte("pax name"),
	}
	path := filepath.Join(t.TempDir(), "a.tar")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w := NewWriter(f)
	for _, name := range []string{"config.dump", "checkpoint/pagemap-1.img", "checkpoint/pages-1.img", "checkpoint/empty.img", "a/long/" + strings.Repeat("n", 120) + ".img"} {
		if err := w.AddBytes(name, members[name]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	f, err = os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, manifest, err := Locate(f, DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	if manifest == nil {
		t.Fatal("no manifest")
	}
	for name, want := range members {
		m, ok := got[name]
		if !ok {
			t.Fatalf("%s not located", name)
		}
		b := make([]byte, m.Size)
		if _, err := f.ReadAt(b, m.Offset); err != nil && err != io.EOF {
			t.Fatal(err)
		}
		if !bytes.Equal(b, want) {
			t.Fatalf("%s at %d: read %q, want %q", name, m.Offset, b, want)
		}
		sum := sha256.Sum256(b)
		if manifest.Sums[name] != hex.EncodeToString(sum[:]) {
			t.Fatalf("%s: manifest digest %s does not match the located content", name, manifest.Sums[name])
		}
	}
}

// TestLocateRefuses: Locate checks names as Walk does.
func TestLocateRefuses(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.tar")
	if err := os.WriteFile(path, mkTar(t, reg("../escape", "x")), 0o600); err != nil {
		t.Fatal(err)
	}
	f, _ := os.Open(path)
	defer f.Close()
	if _, _, err := Locate(f, DefaultLimits()); err == nil {
		t.Fatal("Locate accepted a name with ..")
	}
}
