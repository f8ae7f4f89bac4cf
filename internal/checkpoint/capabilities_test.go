package checkpoint

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/ckpt-dev/ckpt/internal/runtime"
	"github.com/ckpt-dev/ckpt/internal/trust"
)

// streamRuntime can restore from a stream and stop containers.
type streamRuntime struct {
	fakeRuntime
	got     []byte
	target  runtime.Ref
	source  string
	stopped string
}

func (s *streamRuntime) RestoreStream(_ context.Context, r io.Reader, target runtime.Ref, source string, _ runtime.ArchiveCheck) (runtime.Container, error) {
	b, err := io.ReadAll(r)
	s.got, s.target, s.source = b, target, source
	return runtime.Container{ID: "restored", Namespace: target.Namespace}, err
}

func (s *streamRuntime) Stop(_ context.Context, id string) error { s.stopped = id; return nil }

// fileRuntime restores from a file only, as CRI does.
type fileRuntime struct {
	fakeRuntime
	got    []byte
	path   string
	mode   os.FileMode
	target runtime.Ref
}

func (f *fileRuntime) Restore(_ context.Context, path string, target runtime.Ref) (runtime.Container, error) {
	f.path, f.target = path, target
	st, err := os.Stat(path)
	if err != nil {
		return runtime.Container{}, err
	}
	f.mode = st.Mode().Perm()
	f.got, err = os.ReadFile(path)
	return runtime.Container{ID: "from-file", Namespace: target.Namespace}, err
}

func plainTar(t *testing.T) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "config.dump", Mode: 0o600, Size: 2, Typeflag: tar.TypeReg})
	tw.Write([]byte("{}"))
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestRestoreByCapability(t *testing.T) {
	ctx := context.Background()
	data := plainTar(t)
	target := runtime.Ref{Namespace: "default", Pod: "web", Container: "app"}

	sr := &streamRuntime{}
	s := newService(t, sr, Options{})
	c, err := s.Restore(ctx, bytes.NewReader(data), target, "upload")
	if err != nil || c.ID != "restored" || !bytes.Equal(sr.got, data) || sr.target != target || sr.source != "upload" {
		t.Fatalf("stream restore: %+v %v; backend got %d bytes for %+v from %q", c, err, len(sr.got), sr.target, sr.source)
	}

	fr := &fileRuntime{}
	s = newService(t, fr, Options{Trust: trust.Policy{AllowUnsigned: true}})
	c, err = s.Restore(ctx, bytes.NewReader(data), target, "upload")
	if err != nil || c.ID != "from-file" || !bytes.Equal(fr.got, data) {
		t.Fatalf("file restore: %+v %v; backend got %d bytes", c, err, len(fr.got))
	}
	if fr.mode != 0o600 || filepath.Dir(filepath.Dir(fr.path)) != s.StagingDir() {
		t.Fatalf("spooled to %s mode %v, want 0600 under %s", fr.path, fr.mode, s.StagingDir())
	}
	if _, err := os.Stat(fr.path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("spool file left behind: %v", err)
	}
	// Empty names reach the file backend, which reads the archive's.
	if _, err := s.Restore(ctx, bytes.NewReader(data), runtime.Ref{}, "upload"); err != nil || fr.target != (runtime.Ref{}) {
		t.Fatalf("file restore without a target: %v, backend got %+v", err, fr.target)
	}

	// A backend without the capability: ErrUnsupported, naming it.
	s = newService(t, &fakeRuntime{}, Options{})
	if _, err := s.Restore(ctx, bytes.NewReader(data), target, "upload"); !errors.Is(err, runtime.ErrUnsupported) {
		t.Fatalf("restore on a checkpoint-only backend: %v", err)
	}
	if err := s.StopContainer(ctx, target); !errors.Is(err, runtime.ErrUnsupported) {
		t.Fatalf("stop on a checkpoint-only backend: %v", err)
	}

	s = newService(t, sr, Options{})
	if err := s.StopContainer(ctx, target); err != nil || sr.stopped != target.String() {
		t.Fatalf("stop: %v, stopped %q", err, sr.stopped)
	}
	// A hostile stream is invalid input, not a server failure.
	if _, err := s.Restore(ctx, bytes.NewReader([]byte("not an archive at all")), target, "upload"); !errors.Is(err, runtime.ErrInvalid) {
		t.Fatalf("garbage stream: %v", err)
	}
}

func TestDiscover(t *testing.T) {
	if c := runtime.Discover(&fakeRuntime{}); c != (runtime.Capabilities{}) {
		t.Fatalf("checkpoint-only backend: %+v", c)
	}
	c := runtime.Discover(&streamRuntime{})
	if c.StreamRestore == nil || c.Stop == nil || c.FileRestore != nil || c.Health != nil {
		t.Fatalf("stream backend: %+v", c)
	}
	if got := runtime.Discover(&fileRuntime{}).Names(); len(got) != 1 || got[0] != "restore" {
		t.Fatalf("file backend: %v", got)
	}
}

// namingRuntime checks that a name is free, then takes it, with a pause
// between: what a real backend does.
type namingRuntime struct {
	fakeRuntime
	mu    sync.Mutex
	names map[string]bool
}

func (n *namingRuntime) RestoreStream(_ context.Context, r io.Reader, target runtime.Ref, _ string, _ runtime.ArchiveCheck) (runtime.Container, error) {
	io.Copy(io.Discard, r)
	n.mu.Lock()
	taken := n.names[target.String()]
	n.mu.Unlock()
	if taken {
		return runtime.Container{}, fmt.Errorf("restore into %s: %w", target, runtime.ErrExists)
	}
	time.Sleep(20 * time.Millisecond)
	n.mu.Lock()
	n.names[target.String()] = true
	n.mu.Unlock()
	return runtime.Container{ID: target.String()}, nil
}

func TestConcurrentRestoresOneName(t *testing.T) {
	nr := &namingRuntime{names: map[string]bool{}}
	s := newService(t, nr, Options{})
	data := plainTar(t)
	target := runtime.Ref{Namespace: "default", Pod: "web", Container: "app"}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.Restore(context.Background(), bytes.NewReader(data), target, "upload")
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	ok := 0
	for err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, runtime.ErrExists):
			t.Fatalf("restore: %v", err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d of 8 concurrent restores into one name succeeded, want 1", ok)
	}
}
