package server

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ckpt-dev/ckpt/internal/checkpoint"
	"github.com/ckpt-dev/ckpt/internal/runtime"
)

// fakeArchives stands in for the checkpoint service's archive side.
type fakeArchives struct {
	dir      string
	err      error
	restored string
	target   runtime.Ref
	body     string
	stopped  runtime.Ref
}

func (f *fakeArchives) ListWithDigests() ([]checkpoint.ArchiveInfo, error) { return nil, f.err }

func (f *fakeArchives) Open(name string) (*os.File, checkpoint.ArchiveInfo, func(), error) {
	if f.err != nil {
		return nil, checkpoint.ArchiveInfo{}, nil, f.err
	}
	file, err := os.Open(filepath.Join(f.dir, name))
	if err != nil {
		return nil, checkpoint.ArchiveInfo{}, nil, fmt.Errorf("archive %s: %w", name, checkpoint.ErrArchiveNotFound)
	}
	return file, checkpoint.ArchiveInfo{Name: name, Created: time.Unix(1e9, 0)}, func() {}, nil
}

func (f *fakeArchives) Delete(name string) error { return f.err }

func (f *fakeArchives) Restore(_ context.Context, src io.Reader, target runtime.Ref, source string) (runtime.Container, error) {
	b, _ := io.ReadAll(src)
	f.body, f.target, f.restored = string(b), target, source
	return runtime.Container{ID: "id", Namespace: "ns", Pod: "p", Name: "c", State: runtime.StateRunning, Pid: 7}, f.err
}

func (f *fakeArchives) RestoreArchive(_ context.Context, name string, target runtime.Ref) (runtime.Container, error) {
	f.target, f.restored = target, name
	return runtime.Container{ID: "id", State: runtime.StateRunning}, f.err
}

func (f *fakeArchives) StopContainer(_ context.Context, ref runtime.Ref) error {
	f.stopped = ref
	return f.err
}

func TestArchiveRoutes(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{"a.tar": "0123456789", "a.tar.zst": "zst", "a.tar.age": "age"} {
		os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600)
	}
	fa := &fakeArchives{dir: dir}
	h := NewWithArchives(Options{CheckpointEnabled: true}, &fakeCheckpointer{}, fa, &passGuard{}, nil)
	do := func(method, target, body string, hdr ...string) *http.Response {
		r := httptest.NewRequest(method, target, strings.NewReader(body))
		for i := 0; i+1 < len(hdr); i += 2 {
			r.Header.Set(hdr[i], hdr[i+1])
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		return rec.Result()
	}
	cases := []struct {
		name, method, target, body string
		hdr                        []string
		err                        error
		status                     int
		ctype, want                string
	}{
		{name: "list empty is an empty array", method: "GET", target: "/checkpoints", status: 200, ctype: appJSON, want: `{"items":[]}` + "\n"},
		{name: "list error", method: "GET", target: "/checkpoints", err: fmt.Errorf("disk: %w", os.ErrPermission), status: 500},
		{name: "download tar", method: "GET", target: "/checkpoints/a.tar", status: 200, ctype: "application/x-tar", want: "0123456789"},
		{name: "download zst", method: "GET", target: "/checkpoints/a.tar.zst", status: 200, ctype: "application/zstd", want: "zst"},
		{name: "download age", method: "GET", target: "/checkpoints/a.tar.age", status: 200, ctype: "application/octet-stream", want: "age"},
		{name: "range", method: "GET", target: "/checkpoints/a.tar", hdr: []string{"Range", "bytes=7-"}, status: 206, want: "789"},
		{name: "head", method: "HEAD", target: "/checkpoints/a.tar", status: 200, want: ""},
		{name: "missing", method: "GET", target: "/checkpoints/b.tar", status: 404, ctype: textPlain},
		{name: "invalid name", method: "GET", target: "/checkpoints/x", err: fmt.Errorf("name: %w", runtime.ErrInvalid), status: 400},
		{name: "delete busy", method: "DELETE", target: "/checkpoints/a.tar", err: fmt.Errorf("reading: %w", runtime.ErrBusy), status: 409},
		{name: "delete", method: "DELETE", target: "/checkpoints/a.tar", status: 200, want: `{"deleted":"a.tar"}` + "\n"},
		{name: "wrong method", method: "PUT", target: "/checkpoints/a.tar", status: 405},
		{name: "restore upload", method: "POST", target: "/restore/ns/p/c", body: "TAR", status: 201, ctype: appJSON,
			want: `{"id":"id","namespace":"ns","pod":"p","container":"c","state":"running","pid":7}` + "\n"},
		{name: "restore invalid segment", method: "POST", target: "/restore/NS/p/c", status: 400},
		{name: "restore exists", method: "POST", target: "/restore/ns/p/c?archive=a.tar", err: runtime.ErrExists, status: 409},
		{name: "restore unsupported", method: "POST", target: "/restore/ns/p/c?archive=a.tar", err: fmt.Errorf("restore: %w", runtime.ErrUnsupported), status: 501},
		{name: "stop", method: "POST", target: "/stop/ns/p/c", status: 200, want: `{"stopped":"ns/p/c"}` + "\n"},
		{name: "stop not running", method: "POST", target: "/stop/ns/p/c", err: runtime.ErrNotRunning, status: 409},
		{name: "stop unsupported", method: "POST", target: "/stop/ns/p/c", err: fmt.Errorf("stop: %w", runtime.ErrUnsupported), status: 501},
		{name: "stop not found", method: "POST", target: "/stop/ns/p/c", err: runtime.ErrContainerNotFound, status: 404},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fa.err = c.err
			resp := do(c.method, c.target, c.body, c.hdr...)
			b := body(t, resp)
			if resp.StatusCode != c.status {
				t.Fatalf("%s %s: %d %q, want %d", c.method, c.target, resp.StatusCode, b, c.status)
			}
			if c.ctype != "" && resp.Header.Get("Content-Type") != c.ctype {
				t.Errorf("content type %q, want %q", resp.Header.Get("Content-Type"), c.ctype)
			}
			if c.status < 300 && b != c.want {
				t.Errorf("body %q, want %q", b, c.want)
			}
		})
	}
	fa.err = nil
	if !strings.Contains(do("GET", "/checkpoints/a.tar", "").Header.Get("Content-Disposition"), `filename="a.tar"`) {
		t.Error("no Content-Disposition")
	}
}

func TestRestoreTargets(t *testing.T) {
	fa := &fakeArchives{}
	h := NewWithArchives(Options{CheckpointEnabled: true}, &fakeCheckpointer{}, fa, &passGuard{}, nil)
	for _, c := range []struct {
		target, source string
		want           runtime.Ref
	}{
		{"/restore/_/_/_?archive=a.tar", "a.tar", runtime.Ref{}},
		{"/restore/ns/_/c?archive=x.tar&archive=a.tar", "a.tar", runtime.Ref{Namespace: "ns", Container: "c"}}, // last wins
		{"/restore/ns/p/_", "upload", runtime.Ref{Namespace: "ns", Pod: "p"}},
	} {
		resp := serve(h, "POST", c.target)
		if resp.StatusCode != 201 || fa.target != c.want || fa.restored != c.source {
			t.Errorf("%s: %d, target %+v from %q; want %+v from %q", c.target, resp.StatusCode, fa.target, fa.restored, c.want, c.source)
		}
	}
}
