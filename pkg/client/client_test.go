package client_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ckpt-dev/ckpt/internal/auth"
	"github.com/ckpt-dev/ckpt/internal/auth/authtest"
	"github.com/ckpt-dev/ckpt/internal/checkpoint"
	"github.com/ckpt-dev/ckpt/internal/runtime"
	"github.com/ckpt-dev/ckpt/internal/server"
	"github.com/ckpt-dev/ckpt/pkg/client"
)

const archiveName = "checkpoint-web_default-app-2026-01-02T03:04:05Z.tar"

// fakeService stands in for internal/checkpoint.Service behind the real
// server: it keeps archives in a directory and records what it was asked.
type fakeService struct {
	dir string
	err error // returned by every call when set

	mu       sync.Mutex
	uploaded []byte
	target   runtime.Ref
	restored string
	stopped  runtime.Ref
	timeout  time.Duration
	tcp      bool
}

func (f *fakeService) Checkpoint(_ context.Context, ref runtime.Ref, opts runtime.CheckpointOptions) (string, error) {
	f.mu.Lock()
	f.timeout, f.tcp = opts.Timeout, opts.TCPEstablished
	f.mu.Unlock()
	if f.err != nil {
		return "", fmt.Errorf("checkpoint %s: %w", ref, f.err)
	}
	return filepath.Join(f.dir, archiveName), nil
}

func (f *fakeService) info(name string) (checkpoint.ArchiveInfo, error) {
	st, err := os.Stat(filepath.Join(f.dir, name))
	if err != nil {
		return checkpoint.ArchiveInfo{}, fmt.Errorf("archive %s: %w", name, checkpoint.ErrArchiveNotFound)
	}
	b, _ := os.ReadFile(filepath.Join(f.dir, name))
	sum := sha256.Sum256(b)
	return checkpoint.ArchiveInfo{Name: name, Path: filepath.Join(f.dir, name), Namespace: "default", Pod: "web",
		Container: "app", Size: st.Size(), Created: st.ModTime(), SHA256: hex.EncodeToString(sum[:])}, nil
}

func (f *fakeService) ListWithDigests() ([]checkpoint.ArchiveInfo, error) {
	if f.err != nil {
		return nil, f.err
	}
	i, err := f.info(archiveName)
	if err != nil {
		return nil, nil
	}
	return []checkpoint.ArchiveInfo{i}, nil
}

func (f *fakeService) Open(name string) (*os.File, checkpoint.ArchiveInfo, func(), error) {
	i, err := f.info(name)
	if err != nil {
		return nil, i, nil, err
	}
	file, err := os.Open(i.Path)
	return file, i, func() {}, err
}

func (f *fakeService) Delete(name string) error {
	if f.err != nil {
		return f.err
	}
	if _, err := f.info(name); err != nil {
		return err
	}
	return os.Remove(filepath.Join(f.dir, name))
}

func (f *fakeService) Restore(_ context.Context, src io.Reader, target runtime.Ref, source string) (runtime.Container, error) {
	b, err := io.ReadAll(src)
	if err != nil {
		return runtime.Container{}, err
	}
	f.mu.Lock()
	f.uploaded, f.target, f.restored = b, target, source
	f.mu.Unlock()
	if f.err != nil {
		return runtime.Container{}, f.err
	}
	return runtime.Container{ID: "abc", Namespace: "default", Pod: "web", Name: "app", State: "running", Pid: 42}, nil
}

func (f *fakeService) RestoreArchive(_ context.Context, name string, target runtime.Ref) (runtime.Container, error) {
	if f.err != nil {
		return runtime.Container{}, f.err
	}
	if _, err := f.info(name); err != nil {
		return runtime.Container{}, err
	}
	f.mu.Lock()
	f.target, f.restored = target, name
	f.mu.Unlock()
	return runtime.Container{ID: "def", Namespace: target.Namespace, Pod: target.Pod, Name: target.Container, State: "running"}, nil
}

// The lazy restores of the fake are its plain ones (server.LazyArchives).
func (f *fakeService) RestoreLazy(ctx context.Context, src io.Reader, target runtime.Ref, source string) (runtime.Container, error) {
	return f.Restore(ctx, src, target, source)
}

func (f *fakeService) RestoreArchiveLazy(ctx context.Context, name string, target runtime.Ref) (runtime.Container, error) {
	return f.RestoreArchive(ctx, name, target)
}

func (f *fakeService) StopContainer(_ context.Context, ref runtime.Ref) error {
	f.mu.Lock()
	f.stopped = ref
	f.mu.Unlock()
	return f.err
}

type env struct {
	svc     *fakeService
	url     string
	queries chan string
	admin   *client.Client
	viewer  *client.Client
	anon    *client.Client
}

// newEnv starts the real server behind the real auth: TokenReview and
// SubjectAccessReview webhooks that admit "admin" and deny "viewer".
func newEnv(t *testing.T) *env {
	t.Helper()
	hooks := authtest.StartWebhooks(t, func(user, _, _ string) bool { return user == "admin" })
	cfg := auth.DefaultConfig()
	cfg.WebhookAuthn, cfg.AuthorizationMode, cfg.Kubeconfig, cfg.NodeName = true, auth.ModeWebhook, hooks.Kubeconfig, "node-1"
	guard, err := auth.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, archiveName), bytes.Repeat([]byte("0123456789"), 100_000), 0o600); err != nil {
		t.Fatal(err)
	}
	svc := &fakeService{dir: dir}
	h := server.NewWithArchives(server.Options{CheckpointEnabled: true, Registry: prometheus.NewRegistry()}, svc, svc, guard, nil)
	e := &env{svc: svc, queries: make(chan string, 16)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case e.queries <- r.URL.Path + "?" + r.URL.RawQuery:
		default:
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	e.url = srv.URL
	e.admin = newClient(t, srv.URL, authtest.Token("admin"))
	e.viewer = newClient(t, srv.URL, authtest.Token("viewer"))
	e.anon = newClient(t, srv.URL, "")
	return e
}

func newClient(t *testing.T, url, token string) *client.Client {
	t.Helper()
	c, err := client.New(client.Config{Server: url, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var ref = client.Ref{Namespace: "default", Pod: "web", Container: "app"}

// TestStatusesBecomeTypedErrors: each status the server answers comes back
// as the sentinel for it, with the server's message.
func TestStatusesBecomeTypedErrors(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	cases := []struct {
		name    string
		svcErr  error
		call    func() error
		status  int
		want    error
		message string
	}{
		{"no credentials", nil, func() error { _, err := e.anon.Archives(ctx); return err },
			401, client.ErrUnauthorized, "Unauthorized"},
		{"not authorized", nil, func() error { _, err := e.viewer.Checkpoint(ctx, ref, client.CheckpointOptions{}); return err },
			403, client.ErrForbidden, "Forbidden (user=viewer, verb=create, resource=nodes, subresource=checkpoint)"},
		{"invalid name", nil, func() error {
			_, err := e.admin.Checkpoint(ctx, client.Ref{Namespace: "Bad_NS", Pod: "web", Container: "app"}, client.CheckpointOptions{})
			return err
		}, 400, client.ErrBadRequest, `invalid namespace "Bad_NS"`},
		{"pod not found", runtime.ErrPodNotFound, func() error { _, err := e.admin.Checkpoint(ctx, ref, client.CheckpointOptions{}); return err },
			404, client.ErrNotFound, "pod does not exist"},
		{"no such archive", nil, func() error {
			_, err := e.admin.Get(ctx, "checkpoint-x_default-y-2026-01-02T03:04:05Z.tar", client.GetOptions{})
			return err
		}, 404, client.ErrNotFound, "archive does not exist"},
		{"target exists", runtime.ErrExists, func() error {
			_, err := e.admin.Restore(ctx, ref, client.RestoreSource{Archive: archiveName})
			return err
		}, 409, client.ErrConflict, "exists"},
		{"container not running", runtime.ErrNotRunning, func() error { return e.admin.Stop(ctx, ref) },
			409, client.ErrConflict, "not running"},
		{"capability missing", fmt.Errorf("stop default/web/app: %w: the container runtime's own tools stop its containers", runtime.ErrUnsupported),
			func() error { return e.admin.Stop(ctx, ref) }, 501, client.ErrNotImplemented, "the container runtime's own tools stop its containers"},
		{"runtime failure", errors.New("criu exploded"), func() error { _, err := e.admin.Checkpoint(ctx, ref, client.CheckpointOptions{}); return err },
			500, client.ErrServer, "checkpointing of default/web/app failed (checkpoint default/web/app: criu exploded)"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e.svc.err = c.svcErr
			defer func() { e.svc.err = nil }()
			err := c.call()
			if !errors.Is(err, c.want) {
				t.Fatalf("error %v, want errors.Is %v", err, c.want)
			}
			var se *client.StatusError
			if !errors.As(err, &se) {
				t.Fatalf("error %T is no *StatusError", err)
			}
			if se.Status != c.status || !strings.Contains(se.Message, c.message) {
				t.Fatalf("status %d message %q, want %d containing %q", se.Status, se.Message, c.status, c.message)
			}
			for _, other := range []error{client.ErrUnauthorized, client.ErrForbidden, client.ErrNotFound, client.ErrConflict, client.ErrServer} {
				if other != c.want && errors.Is(err, other) {
					t.Fatalf("error %v also matches %v", err, other)
				}
			}
		})
	}
}

func TestCheckpointSendsOptions(t *testing.T) {
	e := newEnv(t)
	path, err := e.admin.Checkpoint(context.Background(), ref, client.CheckpointOptions{Timeout: 1500 * time.Millisecond, TCPEstablished: true})
	if err != nil {
		t.Fatal(err)
	}
	if path != filepath.Join(e.svc.dir, archiveName) {
		t.Fatalf("path %q", path)
	}
	if q := <-e.queries; q != "/checkpoint/default/web/app?tcpEstablished=true&timeout=2" {
		t.Fatalf("request %q: want the timeout rounded up to whole seconds and tcpEstablished", q)
	}
	if e.svc.timeout != 2*time.Second || !e.svc.tcp {
		t.Fatalf("server got timeout %s, tcpEstablished %v", e.svc.timeout, e.svc.tcp)
	}
	if _, err := e.admin.Checkpoint(context.Background(), ref, client.CheckpointOptions{Timeout: -time.Second}); err == nil {
		t.Fatal("negative timeout accepted")
	}
}

func TestCheckpointPodRoute(t *testing.T) {
	e := newEnv(t)
	// The server under test may not have the pod route yet: what matters
	// here is the path the client asks for and that a 404 is typed.
	_, err := e.admin.CheckpointPod(context.Background(), "default", "web", client.CheckpointOptions{})
	if q := <-e.queries; q != "/checkpoint/default/web?" {
		t.Fatalf("request %q", q)
	}
	if err != nil && !errors.Is(err, client.ErrNotFound) && !errors.Is(err, client.ErrNotImplemented) {
		t.Fatalf("error %v", err)
	}
}

func TestListGetDelete(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	list, err := e.admin.Archives(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(filepath.Join(e.svc.dir, archiveName))
	if len(list) != 1 || list[0].Name != archiveName || list[0].Size != int64(len(want)) || list[0].Pod != "web" || len(list[0].SHA256) != 64 {
		t.Fatalf("list %+v", list)
	}

	var last [2]int64
	calls := 0
	d, err := e.admin.Get(ctx, archiveName, client.GetOptions{Progress: func(done, total int64) { calls++; last = [2]int64{done, total} }})
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(d)
	d.Close()
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("download: %v, %d bytes, want %d", err, len(got), len(want))
	}
	if d.Size != int64(len(want)) || d.ContentType != "application/x-tar" {
		t.Fatalf("size %d type %q", d.Size, d.ContentType)
	}
	if calls < 2 || last != [2]int64{int64(len(want)), int64(len(want))} {
		t.Fatalf("progress: %d calls, last %v", calls, last)
	}

	// Resume from an offset: a Range request.
	d, err = e.admin.Get(ctx, archiveName, client.GetOptions{Offset: 999_990, Progress: func(done, total int64) { last = [2]int64{done, total} }})
	if err != nil {
		t.Fatal(err)
	}
	got, _ = io.ReadAll(d)
	d.Close()
	if string(got) != "0123456789" || d.Size != 10 || d.Total != int64(len(want)) || last != [2]int64{int64(len(want)), int64(len(want))} {
		t.Fatalf("range: %q size %d total %d progress %v", got, d.Size, d.Total, last)
	}

	if err := e.admin.Delete(ctx, archiveName); err != nil {
		t.Fatal(err)
	}
	if err := e.admin.Delete(ctx, archiveName); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	if list, err := e.admin.Archives(ctx); err != nil || len(list) != 0 {
		t.Fatalf("after delete: %v %v", list, err)
	}
}

func TestRestoreSources(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()

	body := bytes.Repeat([]byte("x"), 3<<20)
	var last [2]int64
	r, err := e.admin.Restore(ctx, client.Ref{Namespace: "other"}, client.RestoreSource{
		Body: bytes.NewReader(body), Size: int64(len(body)),
		Progress: func(done, total int64) { last = [2]int64{done, total} },
	})
	if err != nil {
		t.Fatal(err)
	}
	if r != (client.Restored{ID: "abc", Namespace: "default", Pod: "web", Container: "app", State: "running", Pid: 42}) {
		t.Fatalf("restored %+v", r)
	}
	if !bytes.Equal(e.svc.uploaded, body) || e.svc.restored != "upload" || e.svc.target != (runtime.Ref{Namespace: "other"}) {
		t.Fatalf("server got %d bytes from %q into %+v", len(e.svc.uploaded), e.svc.restored, e.svc.target)
	}
	if last != [2]int64{int64(len(body)), int64(len(body))} {
		t.Fatalf("upload progress %v", last)
	}
	if q := <-e.queries; q != "/restore/other/_/_?" {
		t.Fatalf("request %q", q)
	}

	if _, err := e.admin.Restore(ctx, ref, client.RestoreSource{Archive: archiveName, Lazy: true}); err != nil {
		t.Fatal(err)
	}
	if q := <-e.queries; q != "/restore/default/web/app?archive="+url.QueryEscape(archiveName)+"&lazy=true" {
		t.Fatalf("request %q", q)
	}
	if e.svc.restored != archiveName {
		t.Fatalf("restored from %q", e.svc.restored)
	}

	_, _ = e.admin.Restore(ctx, ref, client.RestoreSource{Image: "localhost/ckpt/web:1"})
	if q := <-e.queries; q != "/restore/default/web/app?image=localhost%2Fckpt%2Fweb%3A1" {
		t.Fatalf("request %q", q)
	}
	_, _ = e.admin.RestorePod(ctx, "default", "", client.RestoreSource{Archive: archiveName})
	if q := <-e.queries; q != "/restore/default/_?archive="+url.QueryEscape(archiveName) {
		t.Fatalf("request %q", q)
	}

	for _, bad := range []client.RestoreSource{{}, {Archive: "a", Image: "b"}, {Archive: "a", Body: strings.NewReader("")}} {
		if _, err := e.admin.Restore(ctx, ref, bad); err == nil {
			t.Fatalf("source %+v accepted", bad)
		}
	}
}

func TestStopHealthMetrics(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if err := e.admin.Stop(ctx, ref); err != nil {
		t.Fatal(err)
	}
	if e.svc.stopped != (runtime.Ref{Namespace: "default", Pod: "web", Container: "app"}) {
		t.Fatalf("stopped %+v", e.svc.stopped)
	}
	if err := e.admin.Healthz(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.anon.Healthz(ctx); !errors.Is(err, client.ErrUnauthorized) {
		t.Fatalf("anonymous healthz: %v", err)
	}
	if _, err := e.admin.Metrics(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestParseRef(t *testing.T) {
	for in, ok := range map[string]bool{
		"default/web/app": true, "a/b": false, "a/b/c/d": false, "a//c": false, "a/../c": false, "./b/c": false,
	} {
		r, err := client.ParseRef(in)
		if (err == nil) != ok || (ok && r.String() != in) {
			t.Errorf("ParseRef(%q) = %v, %v", in, r, err)
		}
	}
}

func TestNewRejectsBadServers(t *testing.T) {
	for _, s := range []string{"", "ftp://x", "https://", "https://u:p@host:1", "https://host:1/?q=1", "https://host:1/#f"} {
		if _, err := client.New(client.Config{Server: s}); err == nil {
			t.Errorf("server %q accepted", s)
		}
	}
}
