package checkpoint

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"

	"github.com/ckpt-dev/ckpt/internal/archive"
	"github.com/ckpt-dev/ckpt/internal/runtime"
)

var ref1 = runtime.Ref{Namespace: "default", Pod: "web", Container: "app"}

func TestDeleteAndOpen(t *testing.T) {
	s := newService(t, &fakeRuntime{}, Options{})
	path, err := s.Checkpoint(context.Background(), ref1, runtime.CheckpointOptions{})
	if err != nil {
		t.Fatal(err)
	}
	name := filepath.Base(path)

	list, err := s.ListWithDigests()
	sum := sha256.Sum256([]byte("partial"))
	if err != nil || len(list) != 1 || list[0].SHA256 != hex.EncodeToString(sum[:]) || list[0].Container != "app" || list[0].Namespace != "default" {
		t.Fatalf("list %+v %v", list, err)
	}

	for _, c := range []struct {
		name string
		want error
	}{
		{"../etc/passwd", runtime.ErrInvalid},
		{"checkpoint-web_default-app-2026-01-02T03:04:05Z.tar/x", runtime.ErrInvalid},
		{"checkpoint-x_default-y-2026-01-02T03:04:05Z.tar", ErrArchiveNotFound},
	} {
		if err := s.Delete(c.name); !errors.Is(err, c.want) {
			t.Errorf("Delete(%q) = %v, want %v", c.name, err, c.want)
		}
		if _, _, _, err := s.Open(c.name); !errors.Is(err, c.want) {
			t.Errorf("Open(%q) = %v, want %v", c.name, err, c.want)
		}
	}

	// An archive being read is neither deleted nor taken by retention.
	f, _, release, err := s.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(name); !errors.Is(err, runtime.ErrBusy) {
		t.Fatalf("delete while open: %v", err)
	}
	b, _ := io.ReadAll(f)
	f.Close()
	release()
	if string(b) != "partial" {
		t.Fatalf("read %q", b)
	}
	if err := s.Delete(name); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("archive still there: %v", err)
	}

	// A symlink named like an archive is never followed.
	target := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(target, []byte("secret"), 0o600)
	link := "checkpoint-web_default-app-2026-01-02T03:04:05Z.tar"
	if err := os.Symlink(target, filepath.Join(s.Dir(), link)); err != nil {
		t.Fatal(err)
	}
	if f, _, _, err := s.Open(link); err == nil {
		f.Close()
		t.Fatal("opened a symlink")
	}
	if err := s.Delete(link); err != nil { // removes the link, not its target
		t.Fatal(err)
	}
	if _, err := os.Stat(target); err != nil {
		t.Fatalf("symlink target removed: %v", err)
	}
}

// tarRuntime writes a small real tar as the archive.
type tarRuntime struct {
	fakeRuntime
	data []byte
}

func (r *tarRuntime) Checkpoint(_ context.Context, _ runtime.Container, path string, _ runtime.CheckpointOptions) (runtime.CheckpointResult, error) {
	return runtime.CheckpointResult{}, os.WriteFile(path, r.data, 0o644)
}

func TestEncodeAtRest(t *testing.T) {
	data := plainTar(t)
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name      string
		opts      Options
		suffix    string
		ids       []age.Identity
		format    archive.Format
		encrypted bool
	}{
		{"plain", Options{}, ".tar", nil, archive.FormatTar, false},
		{"zstd", Options{Compress: true}, ".tar.zst", nil, archive.FormatZstd, false},
		{"age", Options{Recipients: []age.Recipient{id.Recipient()}}, ".tar.age", []age.Identity{id}, archive.FormatAge, true},
		{"zstd+age", Options{Compress: true, Recipients: []age.Recipient{id.Recipient()}}, ".tar.zst.age", []age.Identity{id}, archive.FormatZstdAge, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newService(t, &tarRuntime{data: data}, c.opts)
			path, err := s.Checkpoint(context.Background(), ref1, runtime.CheckpointOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasSuffix(path, c.suffix) || !ValidArchiveName(filepath.Base(path)) {
				t.Fatalf("archive %s, want suffix %s", path, c.suffix)
			}
			st, _ := os.Stat(path)
			if st.Mode().Perm() != 0o600 {
				t.Fatalf("mode %v", st.Mode().Perm())
			}
			raw, _ := os.ReadFile(path)
			if c.encrypted && strings.Contains(string(raw), "config.dump") {
				t.Fatal("encrypted archive holds the plain content")
			}
			if (c.format == archive.FormatTar) != bytes.Equal(raw, data) {
				t.Fatalf("archive on disk is %d bytes; plain is %d", len(raw), len(data))
			}
			rc, format, err := archive.Open(path, c.ids)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(rc)
			rc.Close()
			if format != c.format || !bytes.Equal(b, data) {
				t.Fatalf("decoded %d bytes as %s, want the %d plain bytes as %s", len(b), format, len(data), c.format)
			}
			// Nothing but the archive is left: no plain copy in staging.
			if entries, _ := os.ReadDir(s.StagingDir()); len(entries) != 0 {
				t.Fatalf("staging holds %v", entries)
			}
		})
	}
}
