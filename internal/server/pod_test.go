package server

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ckpt-dev/ckpt/internal/runtime"
	"github.com/ckpt-dev/ckpt/pkg/api"
)

// fakePods adds the pod routes' interfaces to the fakes.
type fakePods struct {
	fakeCheckpointer
	fakeArchives
	pod    runtime.Ref
	source string
	opts   runtime.CheckpointOptions
}

func (f *fakePods) CheckpointPod(_ context.Context, ns, pod string, opts runtime.CheckpointOptions) (string, error) {
	f.pod, f.opts = runtime.Ref{Namespace: ns, Pod: pod}, opts
	return f.fakeCheckpointer.path, f.fakeCheckpointer.err
}

func (f *fakePods) restored(target runtime.Ref) []runtime.Container {
	ns, pod := target.Namespace, target.Pod
	if ns == "" {
		ns = "default"
	}
	if pod == "" {
		pod = "web"
	}
	return []runtime.Container{{ID: "1", Namespace: ns, Pod: pod, Name: "a", State: runtime.StateRunning, Pid: 3},
		{ID: "2", Namespace: ns, Pod: pod, Name: "b", State: runtime.StateRunning, Pid: 4}}
}

func (f *fakePods) RestorePod(_ context.Context, src io.Reader, target runtime.Ref, source string) ([]runtime.Container, error) {
	b, _ := io.ReadAll(src)
	f.fakeArchives.body, f.pod, f.source = string(b), target, source
	return f.restored(target), f.fakeArchives.err
}

func (f *fakePods) RestorePodArchive(_ context.Context, name string, target runtime.Ref) ([]runtime.Container, error) {
	f.pod, f.source = target, name
	return f.restored(target), f.fakeArchives.err
}

func TestPodRoutes(t *testing.T) {
	const podArchive = "/var/lib/kubelet/checkpoints/checkpoint-web_default-2026-01-02T03:04:05Z.tar"
	for _, c := range []struct {
		name, method, target, body string
		ckptErr, restoreErr        error
		status                     int
		want                       string // in the body
		pod                        runtime.Ref
	}{
		{"checkpoint", "POST", "/checkpoint/default/web?timeout=30&tcpEstablished=true", "", nil, nil, 200, `{"items":["` + podArchive + `"]}`, runtime.Ref{Namespace: "default", Pod: "web"}},
		{"checkpoint trailing slash", "POST", "/checkpoint/default/web/", "", nil, nil, 200, podArchive, runtime.Ref{Namespace: "default", Pod: "web"}},
		{"no pod", "POST", "/checkpoint/default/web", "", fmt.Errorf("x: %w", runtime.ErrPodNotFound), nil, 404, "pod does not exist", runtime.Ref{Namespace: "default", Pod: "web"}},
		{"not running", "POST", "/checkpoint/default/web", "", fmt.Errorf("container a is exited: %w", runtime.ErrNotRunning), nil, 500, "checkpointing of default/web failed (container a is exited", runtime.Ref{Namespace: "default", Pod: "web"}},
		{"bad name", "POST", "/checkpoint/default/Web_1", "", nil, nil, 400, "invalid pod name", runtime.Ref{}},
		{"bad timeout", "POST", "/checkpoint/default/web?timeout=x", "", nil, nil, 400, "invalid timeout", runtime.Ref{}},
		{"GET is 405", "GET", "/checkpoint/default/web", "", nil, nil, 405, "Method Not Allowed", runtime.Ref{}},
		{"restore archive", "POST", "/restore/default/copy?archive=a.tar", "", nil, nil, 201, `"containers":[{"id":"1"`, runtime.Ref{Namespace: "default", Pod: "copy"}},
		{"restore keep names", "POST", "/restore/_/_?archive=a.tar", "", nil, nil, 201, `"pod":"web"`, runtime.Ref{}},
		{"restore body", "POST", "/restore/default/copy", "TAR", nil, nil, 201, `"namespace":"default"`, runtime.Ref{Namespace: "default", Pod: "copy"}},
		{"restore invalid", "POST", "/restore/default/copy", "TAR", nil, fmt.Errorf("x: %w", runtime.ErrInvalid), 400, "x: invalid", runtime.Ref{Namespace: "default", Pod: "copy"}},
		{"restore taken", "POST", "/restore/default/copy?archive=a.tar", "", nil, fmt.Errorf("x: %w", runtime.ErrExists), 409, "x:", runtime.Ref{Namespace: "default", Pod: "copy"}},
		{"restore unsupported", "POST", "/restore/default/copy?archive=a.tar", "", nil, fmt.Errorf("x: %w", runtime.ErrUnsupported), 501, "x:", runtime.Ref{Namespace: "default", Pod: "copy"}},
		{"restore lazy", "POST", "/restore/default/copy?archive=a.tar&lazy=true", "", nil, nil, 400, "not restored lazily", runtime.Ref{}},
		{"restore live", "POST", "/restore/default/copy?archive=a.tar&live=true", "", nil, nil, 400, "not migrated live", runtime.Ref{}},
		{"checkpoint live", "POST", "/checkpoint/default/web?live=true", "", nil, nil, 400, "cannot be migrated live", runtime.Ref{}},
		{"restore both", "POST", "/restore/default/copy?archive=a.tar&image=x", "", nil, nil, 400, "either archive or image", runtime.Ref{}},
		{"restore bad name", "POST", "/restore/default/Copy_", "", nil, nil, 400, "invalid pod name", runtime.Ref{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := &fakePods{}
			f.fakeCheckpointer.path, f.fakeCheckpointer.err, f.fakeArchives.err = podArchive, c.ckptErr, c.restoreErr
			g := &passGuard{}
			h := NewWithArchives(Options{CheckpointEnabled: true}, f, f, g, nil)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(c.method, c.target, strings.NewReader(c.body)))
			resp := rec.Result()
			got := body(t, resp)
			if resp.StatusCode != c.status || !strings.Contains(got, c.want) {
				t.Fatalf("%d %q, want %d with %q", resp.StatusCode, got, c.status, c.want)
			}
			if f.pod != c.pod {
				t.Errorf("backend got %+v, want %+v", f.pod, c.pod)
			}
			if f.fakeCheckpointer.calls != 0 {
				t.Error("the container route was called")
			}
			sub := "checkpoint"
			if strings.HasPrefix(c.target, "/restore/") {
				sub = "restore"
			}
			for _, v := range g.seen {
				if !strings.HasSuffix(v, "|"+sub) {
					t.Errorf("authorized as %s, want subresource %s", v, sub)
				}
			}
			if c.status == 201 {
				var rp api.RestoredPod
				if err := json.Unmarshal([]byte(got), &rp); err != nil || len(rp.Containers) != 2 || rp.Containers[1].Pid != 4 {
					t.Errorf("answer %s: %v", got, err)
				}
			}
		})
	}
	// The options reach the service.
	f := &fakePods{}
	f.fakeCheckpointer.path = podArchive
	NewWithArchives(Options{CheckpointEnabled: true}, f, f, &passGuard{}, nil).ServeHTTP(httptest.NewRecorder(),
		httptest.NewRequest("POST", "/checkpoint/default/web?timeout=300&tcpEstablished=true", nil))
	if f.opts.Timeout.Seconds() != 300 || !f.opts.TCPEstablished {
		t.Errorf("options %+v", f.opts)
	}
	// Gate off: no pod route either.
	resp := serve(NewWithArchives(Options{CheckpointEnabled: false}, f, f, &passGuard{}, nil), "POST", "/checkpoint/default/web")
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("gate off: %d", resp.StatusCode)
	}
}
