package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/ckpt-dev/ckpt/internal/checkpoint"
	"github.com/ckpt-dev/ckpt/internal/runtime"
)

// imageRecordingArchives records what a restore read.
type imageRecordingArchives struct {
	read   string
	source string
	target runtime.Ref
	err    error
}

func (f *imageRecordingArchives) ListWithDigests() ([]checkpoint.ArchiveInfo, error) { return nil, nil }
func (f *imageRecordingArchives) Open(string) (*os.File, checkpoint.ArchiveInfo, func(), error) {
	return nil, checkpoint.ArchiveInfo{}, nil, checkpoint.ErrArchiveNotFound
}
func (f *imageRecordingArchives) Delete(string) error { return nil }
func (f *imageRecordingArchives) Restore(_ context.Context, src io.Reader, target runtime.Ref, source string) (runtime.Container, error) {
	b, _ := io.ReadAll(src)
	f.read, f.source, f.target = string(b), source, target
	if f.err != nil {
		return runtime.Container{}, f.err
	}
	return runtime.Container{ID: "id", Namespace: target.Namespace, Pod: target.Pod, Name: target.Container, State: runtime.StateRunning}, nil
}
func (f *imageRecordingArchives) RestoreArchive(context.Context, string, runtime.Ref) (runtime.Container, error) {
	return runtime.Container{}, errors.New("unexpected")
}
func (f *imageRecordingArchives) StopContainer(context.Context, runtime.Ref) error { return nil }

type fakeImages map[string]error

func (f fakeImages) OpenImageArchive(_ context.Context, ref string) (io.ReadCloser, error) {
	if err, ok := f[ref]; ok {
		return nil, err
	}
	return io.NopCloser(strings.NewReader("archive of " + ref)), nil
}

func TestRestoreFromImage(t *testing.T) {
	images := fakeImages{
		"localhost/plain:1": fmt.Errorf("%w: localhost/plain:1 is not a checkpoint image", runtime.ErrInvalid),
		"localhost/gone:1":  fmt.Errorf("%w: localhost/gone:1", ErrImageNotFound),
	}
	for _, c := range []struct {
		name, query string
		images      ImageArchives
		status      int
		body        string
	}{
		{"restores the image's archive", "image=localhost/ckpt:1", images, http.StatusCreated, `"id":"id"`},
		{"not a checkpoint image", "image=localhost/plain:1", images, http.StatusBadRequest, "not a checkpoint image"},
		{"unknown image", "image=localhost/gone:1", images, http.StatusNotFound, "not found"},
		{"both archive and image", "image=localhost/ckpt:1&archive=x.tar", images, http.StatusBadRequest, "not both"},
		{"no image support", "image=localhost/ckpt:1", nil, http.StatusBadRequest, "does not restore from images"},
	} {
		t.Run(c.name, func(t *testing.T) {
			a := &imageRecordingArchives{}
			h := NewWithArchives(Options{CheckpointEnabled: true, Images: c.images}, &fakeCheckpointer{}, a, &passGuard{}, nil)
			resp := serve(h, http.MethodPost, "/restore/default/web/app?"+c.query)
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != c.status || !strings.Contains(string(b), c.body) {
				t.Fatalf("got %d %q, want %d containing %q", resp.StatusCode, b, c.status, c.body)
			}
			if c.status == http.StatusCreated && (a.read != "archive of localhost/ckpt:1" || a.source != "image localhost/ckpt:1" ||
				a.target != (runtime.Ref{Namespace: "default", Pod: "web", Container: "app"})) {
				t.Errorf("restore read %q from %q into %v", a.read, a.source, a.target)
			}
		})
	}
}

// pulledStream is an image archive pulled for one restore.
type pulledStream struct {
	io.Reader
	failed *bool
}

func (p pulledStream) Close() error   { return nil }
func (p pulledStream) RestoreFailed() { *p.failed = true }

type pullingImages struct{ failed *bool }

func (p pullingImages) OpenImageArchive(context.Context, string) (io.ReadCloser, error) {
	return pulledStream{strings.NewReader("archive"), p.failed}, nil
}

func TestRestoreFromImageForgetsWhatAFailedRestorePulled(t *testing.T) {
	for _, c := range []struct {
		err    error
		status int
		forget bool
	}{
		{nil, http.StatusCreated, false},
		{fmt.Errorf("%w: signed by an untrusted key", runtime.ErrInvalid), http.StatusBadRequest, true},
	} {
		failed := false
		a := &imageRecordingArchives{err: c.err}
		h := NewWithArchives(Options{CheckpointEnabled: true, Images: pullingImages{&failed}}, &fakeCheckpointer{}, a, &passGuard{}, nil)
		resp := serve(h, http.MethodPost, "/restore/default/web/app?image=localhost/ckpt:1")
		if resp.StatusCode != c.status || failed != c.forget {
			t.Errorf("restore error %v: %d, RestoreFailed called %v; want %d, %v", c.err, resp.StatusCode, failed, c.status, c.forget)
		}
	}
}
