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

// signedTarRuntime writes a real (small) archive with archive.Writer, or, with
// bare set, a tar without a manifest, the way a CRI runtime does.
type signedTarRuntime struct{ bare bool }

func (signedTarRuntime) Lookup(_ context.Context, ref runtime.Ref) (runtime.Container, error) {
	return runtime.Container{ID: ref.String(), Namespace: ref.Namespace, Pod: ref.Pod, Name: ref.Container, State: runtime.StateRunning}, nil
}

func (r signedTarRuntime) Checkpoint(_ context.Context, _ runtime.Container, path string, _ runtime.CheckpointOptions) (runtime.CheckpointResult, error) {
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

// restoringRuntime restores as the embedded runtime does: extract, then
// the node's check on the verified manifest.
type restoringRuntime struct {
	signedTarRuntime
	dir  string
	used *int
}

func (r restoringRuntime) RestoreStream(_ context.Context, tarStream io.Reader, target runtime.Ref, _ string, check runtime.ArchiveCheck) (runtime.Container, error) {
	dest, err := os.MkdirTemp(r.dir, "restore-")
	if err != nil {
		return runtime.Container{}, err
	}
	defer os.RemoveAll(dest)
	m, err := archive.Extract(tarStream, dest, archive.Limits{}, nil)
	if err != nil {
		return runtime.Container{}, err
	}
	if m == nil {
		err = check(nil, nil)
	} else {
		err = check(m.Raw, m.Signature)
	}
	if err != nil {
		return runtime.Container{}, err
	}
	*r.used++
	return runtime.Container{Name: target.Container}, nil
}

// spoolRuntime restores from a spooled file, as the CRI backend does.
type spoolRuntime struct {
	signedTarRuntime
	used *int
}

func (r spoolRuntime) Restore(_ context.Context, path string, target runtime.Ref) (runtime.Container, error) {
	if _, err := os.Stat(path); err != nil {
		return runtime.Container{}, err
	}
	*r.used++
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
		rt       signedTarRuntime
		compress bool
		encrypt  bool
		suffix   string
	}{
		{"plain", signedTarRuntime{}, false, false, ".tar"},
		{"zstd", signedTarRuntime{}, true, false, ".tar.zst"},
		{"age", signedTarRuntime{}, false, true, ".tar.age"},
		{"zstd+age", signedTarRuntime{}, true, true, ".tar.zst.age"},
		{"cri archive without manifest", signedTarRuntime{bare: true}, false, false, ".tar"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			used := 0
			opts := Options{Signer: key, Compress: tc.compress, Trust: trust.Policy{Keys: trust.NewKeyring(key.PublicKey())},
				Identities: []age.Identity{id}}
			if tc.encrypt {
				opts.Recipients = []age.Recipient{id.Recipient()}
			}
			var rt Runtime = restoringRuntime{tc.rt, t.TempDir(), &used}
			if tc.rt.bare {
				rt = spoolRuntime{tc.rt, &used}
			}
			s := newService(t, rt, opts)
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

			if _, err := s.RestoreArchive(context.Background(), filepath.Base(path), ref); err != nil {
				t.Fatalf("restore of the node's own archive: %v", err)
			}
			// Another node refuses it until it trusts this node's key.
			s2 := newService(t, rt, Options{Signer: other, Trust: trust.Policy{Keys: trust.NewKeyring(other.PublicKey()), AllowUnsigned: true},
				Identities: []age.Identity{id}})
			f, _ := os.Open(path)
			_, err = s2.Restore(context.Background(), f, ref, "upload")
			f.Close()
			if !errors.Is(err, runtime.ErrInvalid) || !errors.Is(err, trust.ErrUntrusted) {
				t.Errorf("other node: %v, want ErrInvalid and ErrUntrusted", err)
			}
			if used != 1 {
				t.Errorf("the backend went on after a refusal: %d restores", used)
			}
		})
	}
}

func TestRestoreRefusesUnsigned(t *testing.T) {
	used := 0
	s := newService(t, restoringRuntime{signedTarRuntime{}, t.TempDir(), &used}, Options{Trust: trust.Policy{}})
	path, err := s.Checkpoint(context.Background(), runtime.Ref{Namespace: "default", Pod: "web", Container: "app"}, runtime.CheckpointOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.RestoreArchive(context.Background(), filepath.Base(path), runtime.Ref{})
	if !errors.Is(err, runtime.ErrInvalid) || !errors.Is(err, trust.ErrUnsigned) || !strings.Contains(err.Error(), "--restore-allow-unsigned") {
		t.Errorf("unsigned archive: %v", err)
	}
	// Without a trust policy nothing restores.
	s = newService(t, restoringRuntime{signedTarRuntime{}, t.TempDir(), &used}, Options{})
	path, err = s.Checkpoint(context.Background(), runtime.Ref{Namespace: "default", Pod: "web", Container: "app"}, runtime.CheckpointOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err = s.RestoreArchive(context.Background(), filepath.Base(path), runtime.Ref{}); !errors.Is(err, runtime.ErrInvalid) {
		t.Errorf("restore without a policy: %v", err)
	}
	if used != 0 {
		t.Errorf("%d restores went through", used)
	}
}
