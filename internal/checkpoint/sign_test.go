package checkpoint

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"

	"github.com/ckpt-dev/ckpt/internal/archive"
	"github.com/ckpt-dev/ckpt/internal/runtime"
	"github.com/ckpt-dev/ckpt/internal/trust"
)

// tarRuntime writes a real (small) archive with archive.Writer, or, with
// bare set, a tar without a manifest, the way a CRI runtime does.
type tarRuntime struct{ bare bool }

func (tarRuntime) Lookup(_ context.Context, ref runtime.Ref) (runtime.Container, error) {
	return runtime.Container{ID: ref.String(), Namespace: ref.Namespace, Pod: ref.Pod, Name: ref.Container, State: runtime.StateRunning}, nil
}

func (r tarRuntime) Checkpoint(_ context.Context, _ runtime.Container, path string, _ runtime.CheckpointOptions) (runtime.CheckpointResult, error) {
	if r.bare {
		data, err := os.ReadFile("../archive/testdata/containerd-2.4.2-cri-counter.tar")
		if err != nil {
			return runtime.CheckpointResult{}, err
		}
		return runtime.CheckpointResult{}, os.WriteFile(path, data, 0o600)
	}
	f, err := os.Create(path)
	if err != nil {
		return runtime.CheckpointResult{}, err
	}
	defer f.Close()
	w := archive.NewWriter(f)
	if err := w.AddBytes("config.dump", []byte(`{"id":"x"}`)); err != nil {
		return runtime.CheckpointResult{}, err
	}
	if err := w.AddBytes("checkpoint/inventory.img", []byte("inv")); err != nil {
		return runtime.CheckpointResult{}, err
	}
	return runtime.CheckpointResult{}, w.Close()
}

// extractRestorer restores as the embedded runtime does: extract, verify.
type extractRestorer struct {
	dir  string
	used int
}

func (e *extractRestorer) Restore(_ context.Context, tarStream io.Reader, target runtime.Ref, _ string, v Verifier) (runtime.Container, error) {
	dest, err := os.MkdirTemp(e.dir, "restore-")
	if err != nil {
		return runtime.Container{}, err
	}
	defer os.RemoveAll(dest)
	m, err := archive.Extract(tarStream, dest, archive.Limits{}, nil)
	if err != nil {
		return runtime.Container{}, err
	}
	if err := v.Verify(m); err != nil {
		return runtime.Container{}, err
	}
	e.used++
	return runtime.Container{Name: target.Container}, nil
}

func TestArchivesSignedAndVerified(t *testing.T) {
	key, err := trust.LoadOrCreateNodeKey(filepath.Join(t.TempDir(), "pki"))
	if err != nil {
		t.Fatal(err)
	}
	other, err := trust.LoadOrCreateNodeKey(filepath.Join(t.TempDir(), "pki"))
	if err != nil {
		t.Fatal(err)
	}
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	ref := runtime.Ref{Namespace: "default", Pod: "web", Container: "app"}
	for _, tc := range []struct {
		name     string
		rt       tarRuntime
		compress bool
		encrypt  bool
		suffix   string
	}{
		{"plain", tarRuntime{}, false, false, ".tar"},
		{"zstd", tarRuntime{}, true, false, ".tar.zst"},
		{"age", tarRuntime{}, false, true, ".tar.age"},
		{"zstd+age", tarRuntime{}, true, true, ".tar.zst.age"},
		{"cri archive without manifest", tarRuntime{bare: true}, false, false, ".tar"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := Options{Signer: key, Compress: tc.compress, Trust: trust.Policy{Keys: trust.NewKeyring(key.PublicKey())}}
			if tc.encrypt {
				opts.Recipients = []age.Recipient{id.Recipient()}
			}
			s := newService(t, tc.rt, opts)
			path, err := s.Checkpoint(context.Background(), ref, runtime.CheckpointOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasSuffix(path, tc.suffix) {
				t.Fatalf("archive %s, want suffix %s", path, tc.suffix)
			}
			rc, _, err := archive.Open(path, []age.Identity{id})
			if err != nil {
				t.Fatal(err)
			}
			m, err := archive.Check(rc, archive.Limits{})
			rc.Close()
			if err != nil {
				t.Fatal(err)
			}
			sig := trust.Examine(m)
			if !sig.Signed || sig.Err != nil || sig.Fingerprint() != trust.Fingerprint(key.PublicKey()) {
				t.Fatalf("signature %+v", sig)
			}

			r := &extractRestorer{dir: t.TempDir()}
			s.SetRestorer(r, []age.Identity{id})
			if _, err := s.RestoreArchive(context.Background(), filepath.Base(path), ref); err != nil {
				t.Fatalf("restore of the node's own archive: %v", err)
			}
			// Another node refuses it until it trusts this node's key.
			s2 := newService(t, tc.rt, Options{Signer: other, Trust: trust.Policy{Keys: trust.NewKeyring(other.PublicKey()), AllowUnsigned: true}})
			s2.SetRestorer(r, []age.Identity{id})
			f, _ := os.Open(path)
			_, err = s2.Restore(context.Background(), f, ref, "upload")
			f.Close()
			if !errors.Is(err, runtime.ErrInvalid) || !errors.Is(err, trust.ErrUntrusted) {
				t.Errorf("other node: %v, want ErrInvalid and ErrUntrusted", err)
			}
			if r.used != 1 {
				t.Errorf("restorer went on after a refusal: %d restores", r.used)
			}
		})
	}
}

func TestRestoreRefusesUnsigned(t *testing.T) {
	s := newService(t, tarRuntime{}, Options{})
	r := &extractRestorer{dir: t.TempDir()}
	s.SetRestorer(r, nil)
	path, err := s.Checkpoint(context.Background(), runtime.Ref{Namespace: "default", Pod: "web", Container: "app"}, runtime.CheckpointOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.RestoreArchive(context.Background(), filepath.Base(path), runtime.Ref{})
	if !errors.Is(err, runtime.ErrInvalid) || !errors.Is(err, trust.ErrUnsigned) || !strings.Contains(err.Error(), "--restore-allow-unsigned") {
		t.Errorf("unsigned archive: %v", err)
	}
}
