package cri

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/ckpt-dev/ckpt/internal/runtime"
)

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// typedErrors are the runtime errors a test may expect; for each case exactly
// the expected one (or none) must match.
var typedErrors = []error{
	runtime.ErrPodNotFound, runtime.ErrContainerNotFound, runtime.ErrNotRunning,
	runtime.ErrUnsupported, runtime.ErrTimeout, runtime.ErrUnavailable, runtime.ErrInvalid,
}

// errUntyped stands for a runtime failure that matches no typed error.
var errUntyped = errors.New("untyped")

// checkErr fails unless err matches want (nil: no error) and no other typed
// error, and contains every string in msgs.
func checkErr(t *testing.T, err, want error, msgs ...string) {
	t.Helper()
	if want == nil {
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return
	}
	if err == nil {
		t.Fatalf("want %v, got no error", want)
	}
	for _, e := range typedErrors {
		if errors.Is(err, e) != (e == want) { // errUntyped matches none
			t.Errorf("errors.Is(%q, %q) = %v", err, e, errors.Is(err, e))
		}
	}
	for _, m := range msgs {
		if !strings.Contains(err.Error(), m) {
			t.Errorf("error %q does not contain %q", err, m)
		}
	}
}

func TestSocketPath(t *testing.T) {
	for _, tc := range []struct {
		endpoint, want string
		err            error
	}{
		{"unix:///run/containerd/containerd.sock", "/run/containerd/containerd.sock", nil},
		{"/run/crio/crio.sock", "/run/crio/crio.sock", nil},
		{"", "", runtime.ErrInvalid},
		{"unix://", "", runtime.ErrInvalid},
		{"run/containerd.sock", "", runtime.ErrInvalid},
		{"tcp://127.0.0.1:1234", "", runtime.ErrInvalid},
		{"npipe:////./pipe/containerd", "", runtime.ErrInvalid},
	} {
		t.Run(tc.endpoint, func(t *testing.T) {
			got, err := socketPath(tc.endpoint)
			if !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) {
				t.Fatalf("socketPath(%q) error = %v, want %v", tc.endpoint, err, tc.err)
			}
			if got != tc.want {
				t.Errorf("socketPath(%q) = %q, want %q", tc.endpoint, got, tc.want)
			}
			if _, err := New(context.Background(), tc.endpoint); (err == nil) != (tc.err == nil) {
				t.Errorf("New(%q) error = %v", tc.endpoint, err)
			}
		})
	}
}

func TestLookup(t *testing.T) {
	ref := runtime.Ref{Namespace: "default", Pod: "web", Container: "counter"}
	for _, tc := range []struct {
		name       string
		sandboxes  []*runtimeapi.PodSandbox
		containers []*runtimeapi.Container
		pids       map[string]int
		wantID     string
		wantPid    int
		err        error
		msgs       []string
	}{{
		name:       "one running container",
		sandboxes:  []*runtimeapi.PodSandbox{sandbox("sb1", "default", "web", true, 1)},
		containers: []*runtimeapi.Container{ctr("c1", "sb1", "counter", 0, running, 10)},
		pids:       map[string]int{"c1": 4242},
		wantID:     "c1",
		wantPid:    4242,
	}, {
		name:      "restarts: newest running chosen, exited ignored",
		sandboxes: []*runtimeapi.PodSandbox{sandbox("sb1", "default", "web", true, 1)},
		containers: []*runtimeapi.Container{
			ctr("old-exited", "sb1", "counter", 0, exited, 10),
			ctr("older-running", "sb1", "counter", 1, running, 20),
			ctr("newest-running", "sb1", "counter", 2, running, 30),
			ctr("newer-exited", "sb1", "counter", 3, exited, 40),
			ctr("just-created", "sb1", "counter", 4, createdState, 50),
			ctr("sidecar", "sb1", "sidecar", 0, running, 60),
		},
		wantID: "newest-running",
	}, {
		name: "ready sandbox preferred over a newer not-ready one",
		sandboxes: []*runtimeapi.PodSandbox{
			sandbox("gone", "default", "web", false, 5),
			sandbox("live", "default", "web", true, 1),
		},
		containers: []*runtimeapi.Container{
			ctr("in-live", "live", "counter", 0, running, 10),
			ctr("in-gone", "gone", "counter", 0, running, 20),
		},
		wantID: "in-live",
	}, {
		name: "not-ready sandbox used when the ready one lacks the container",
		sandboxes: []*runtimeapi.PodSandbox{
			sandbox("live", "default", "web", true, 5),
			sandbox("old", "default", "web", false, 1),
		},
		containers: []*runtimeapi.Container{ctr("in-old", "old", "counter", 0, running, 10)},
		wantID:     "in-old",
	}, {
		name: "pod missing",
		sandboxes: []*runtimeapi.PodSandbox{
			sandbox("sb1", "other", "web", true, 1),
			sandbox("sb2", "default", "api", true, 1),
		},
		containers: []*runtimeapi.Container{ctr("c1", "sb1", "counter", 0, running, 10)},
		err:        runtime.ErrPodNotFound,
		msgs:       []string{"pod does not exist", "default/web/counter"},
	}, {
		name:       "container missing",
		sandboxes:  []*runtimeapi.PodSandbox{sandbox("sb1", "default", "web", true, 1), sandbox("sb2", "default", "api", true, 1)},
		containers: []*runtimeapi.Container{ctr("c1", "sb1", "sidecar", 0, running, 10), ctr("c2", "sb2", "counter", 0, running, 10)},
		err:        runtime.ErrContainerNotFound,
		msgs:       []string{"container counter does not exist"},
	}, {
		name:       "only exited instances",
		sandboxes:  []*runtimeapi.PodSandbox{sandbox("sb1", "default", "web", true, 1)},
		containers: []*runtimeapi.Container{ctr("c1", "sb1", "counter", 0, exited, 10), ctr("c2", "sb1", "counter", 1, exited, 20)},
		err:        runtime.ErrContainerNotFound,
		msgs:       []string{"container counter does not exist", "2 not running"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeCRI{sandboxes: tc.sandboxes, containers: tc.containers, pids: tc.pids}
			r := f.client(t)
			c, err := r.Lookup(context.Background(), ref)
			checkErr(t, err, tc.err, tc.msgs...)
			if err != nil {
				return
			}
			if c.ID != tc.wantID || c.Pid != tc.wantPid {
				t.Errorf("got container %s pid %d, want %s pid %d", c.ID, c.Pid, tc.wantID, tc.wantPid)
			}
			if c.Namespace != ref.Namespace || c.Pod != ref.Pod || c.Name != ref.Container || c.State != runtime.StateRunning || c.Image != "localhost/counter:latest" {
				t.Errorf("unexpected container %+v", c)
			}
		})
	}
}

func TestCheckpoint(t *testing.T) {
	c := runtime.Container{ID: "abc123", Namespace: "default", Pod: "web", Name: "counter"}
	blockUntilDone := func(ctx context.Context, _ *runtimeapi.CheckpointContainerRequest) error {
		<-ctx.Done()
		return status.FromContextError(ctx.Err()).Err()
	}
	for _, tc := range []struct {
		name        string
		timeout     time.Duration // 0: no deadline
		handler     func(context.Context, *runtimeapi.CheckpointContainerRequest) error
		wantTimeout int64
		err         error
		msgs        []string
	}{{
		name:        "ok, deadline in whole seconds",
		timeout:     7 * time.Second,
		handler:     func(context.Context, *runtimeapi.CheckpointContainerRequest) error { return nil },
		wantTimeout: 7,
	}, {
		name:        "ok, fractional deadline rounds up",
		timeout:     2500 * time.Millisecond,
		handler:     func(context.Context, *runtimeapi.CheckpointContainerRequest) error { return nil },
		wantTimeout: 3,
	}, {
		name:        "ok, no deadline sends the runtime default",
		handler:     func(context.Context, *runtimeapi.CheckpointContainerRequest) error { return nil },
		wantTimeout: 0,
	}, {
		name:        "runtime without checkpointing (containerd 1.x)",
		timeout:     time.Minute,
		handler:     nil,
		wantTimeout: 60,
		err:         runtime.ErrUnsupported,
		msgs:        []string{"checkpoint container abc123", "method CheckpointContainer not implemented"},
	}, {
		name:    "container gone",
		timeout: time.Minute,
		handler: func(_ context.Context, req *runtimeapi.CheckpointContainerRequest) error {
			return status.Errorf(codes.NotFound, "an error occurred when trying to find container %q: not found", req.GetContainerId())
		},
		wantTimeout: 60,
		err:         runtime.ErrContainerNotFound,
		msgs:        []string{"checkpoint container abc123", "not found"},
	}, {
		name:        "runtime blocks past the deadline",
		timeout:     time.Second,
		handler:     blockUntilDone,
		wantTimeout: 1,
		err:         runtime.ErrTimeout,
		msgs:        []string{"checkpoint container abc123", "within 1s"},
	}, {
		name:    "runtime answers DeadlineExceeded itself",
		timeout: time.Minute,
		handler: func(context.Context, *runtimeapi.CheckpointContainerRequest) error {
			return status.Error(codes.DeadlineExceeded, "criu dump took too long")
		},
		wantTimeout: 60,
		err:         runtime.ErrTimeout,
		msgs:        []string{"checkpoint container abc123", "within 60s"},
	}, {
		name:    "other runtime failure keeps its message",
		timeout: time.Minute,
		handler: func(context.Context, *runtimeapi.CheckpointContainerRequest) error {
			return status.Error(codes.Unknown, `container "abc123" is in CONTAINER_EXITED state. only CONTAINER_RUNNING containers can be checkpointed`)
		},
		wantTimeout: 60,
		err:         errUntyped,
		msgs:        []string{"checkpoint container abc123: container \"abc123\" is in CONTAINER_EXITED state"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeCRI{checkpoint: tc.handler}
			r := f.client(t)
			ctx := context.Background()
			if tc.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.timeout)
				defer cancel()
			}
			location := filepath.Join(t.TempDir(), "staging", "checkpoint.tar")
			_, err := r.Checkpoint(ctx, c, location, runtime.CheckpointOptions{})
			checkErr(t, err, tc.err, tc.msgs...)
			f.mu.Lock()
			defer f.mu.Unlock()
			if len(f.checkpointed) != 1 {
				t.Fatalf("runtime got %d checkpoint requests, want 1", len(f.checkpointed))
			}
			got := f.checkpointed[0]
			if got.GetContainerId() != c.ID || got.GetLocation() != location || got.GetTimeout() != tc.wantTimeout {
				t.Errorf("request = {id %q, location %q, timeout %d}, want {%q, %q, %d}",
					got.GetContainerId(), got.GetLocation(), got.GetTimeout(), c.ID, location, tc.wantTimeout)
			}
		})
	}
}

func TestRuntimeDown(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "absent.sock")
	endpoint := "unix://" + sock
	r, err := New(context.Background(), endpoint)
	if err != nil {
		t.Fatalf("New must not need the runtime: %v", err)
	}
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	wantMsg := []string{"cannot reach container runtime at " + endpoint, sock + " does not exist"}
	for _, tc := range []struct {
		name string
		call func() error
	}{
		{"healthy", func() error { return r.Healthy(ctx) }},
		{"lookup", func() error {
			_, err := r.Lookup(ctx, runtime.Ref{Namespace: "default", Pod: "web", Container: "counter"})
			return err
		}},
		{"checkpoint", func() error {
			_, err := r.Checkpoint(ctx, runtime.Container{ID: "abc"}, "/tmp/x.tar", runtime.CheckpointOptions{})
			return err
		}},
		{"restore", func() error {
			_, err := r.Restore(ctx, "/tmp/x.tar", runtime.Ref{Namespace: "default", Pod: "web", Container: "counter"})
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) { checkErr(t, tc.call(), runtime.ErrUnavailable, wantMsg...) })
	}

	// A socket file nobody listens on: the cause is the runtime's dial error.
	if err := os.WriteFile(sock, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	checkErr(t, r.Healthy(ctx), runtime.ErrUnavailable, "cannot reach container runtime at "+endpoint, "connect")
}

func TestHealthy(t *testing.T) {
	for _, tc := range []struct {
		name     string
		notReady bool
		err      error
		msgs     []string
	}{
		{name: "ready (network readiness does not matter)"},
		{name: "runtime not ready", notReady: true, err: runtime.ErrUnavailable, msgs: []string{"not ready", "ShimsGone", "no shim"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeCRI{notReady: tc.notReady}
			checkErr(t, f.client(t).Healthy(context.Background()), tc.err, tc.msgs...)
		})
	}
}

func TestHealthyUnimplemented(t *testing.T) {
	// A server that is not a CRI runtime at all answers Unimplemented.
	f := &bareCRI{}
	sock := filepath.Join(t.TempDir(), "bare.sock")
	serveBare(t, f, sock)
	r, err := New(context.Background(), sock)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	checkErr(t, r.Healthy(context.Background()), runtime.ErrUnsupported, "method Version not implemented")
}

func TestRestore(t *testing.T) {
	target := runtime.Ref{Namespace: "default", Pod: "web", Container: "counter"}
	archive := filepath.Join(t.TempDir(), "checkpoint.tar")
	if err := os.WriteFile(archive, []byte("not read by ckpt here"), 0o600); err != nil {
		t.Fatal(err)
	}
	sbCfg := &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: "web", Namespace: "default", Uid: "uid-sb1"},
		LogDirectory: filepath.Join(t.TempDir(), "pods", "default_web_uid-sb1"),
		Labels:       map[string]string{labelPodNamespace: "default", labelPodName: "web"},
	}
	// An archive that records default/web/counter, as CRI-O writes it.
	named := writeTar(t, map[string]string{
		"config.dump": `{"id":"abc","name":"k8s_counter_web_default_uid-sb1_0"}`,
		"spec.dump": `{"annotations":{"io.container.manager":"cri-o","io.kubernetes.pod.name":"web",` +
			`"io.kubernetes.pod.namespace":"default","io.kubernetes.cri-o.Metadata":"{\"name\":\"counter\"}"}}`,
	})
	unnamed := writeTar(t, map[string]string{"config.dump": `{"name":"counter"}`, "spec.dump": `{}`})
	for _, tc := range []struct {
		name, runtimeName, version string
		archive                    string
		target                     *runtime.Ref
		sandboxes                  []*runtimeapi.PodSandbox
		containers                 []*runtimeapi.Container
		createErr, startErr        error
		err                        error
		msgs                       []string
		wantAttempt                uint32
		wantRemoved                bool
		sbNamespaces               *runtimeapi.NamespaceOption
		wantPid                    runtimeapi.NamespaceMode
	}{{
		name: "containerd 2.4 cannot", version: "v2.4.2",
		err:  runtime.ErrUnsupported,
		msgs: []string{"containerd 2.4+", "cannot restore a checkpoint through CRI", "ckpt restore", "embedded runtime"},
	}, {
		name: "containerd 2.4 go-installed build", version: "2.4.2+unknown",
		err: runtime.ErrUnsupported, msgs: []string{"containerd 2.4+"},
	}, {
		name: "containerd 1.7 cannot", version: "1.7.27",
		err: runtime.ErrUnsupported, msgs: []string{"ckpt restore"},
	}, {
		name: "containerd 2.3 restores", version: "v2.3.7",
		wantPid: runtimeapi.NamespaceMode_CONTAINER, // the kubelet's default
	}, {
		name: "CRI-O restores", runtimeName: "cri-o", version: "1.33.0",
		wantPid: runtimeapi.NamespaceMode_CONTAINER,
	}, {
		name: "pod that shares its process namespace", version: "v2.3.7",
		sbNamespaces: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_POD},
		wantPid:      runtimeapi.NamespaceMode_POD,
	}, {
		name: "new attempt after an earlier container", version: "v2.3.7",
		containers:  []*runtimeapi.Container{ctr("old", "sb1", "counter", 2, exited, 10)},
		wantAttempt: 3, wantPid: runtimeapi.NamespaceMode_CONTAINER,
	}, {
		name: "pod missing", version: "v2.3.7",
		sandboxes: []*runtimeapi.PodSandbox{sandbox("sb0", "default", "web", false, 1)},
		err:       runtime.ErrPodNotFound,
		msgs:      []string{"pod does not exist", "no ready pod sandbox for default/web", "kubelet", "crictl runp", "io.kubernetes.pod.name=web"},
	}, {
		name: "names default to the archive's", runtimeName: "cri-o", version: "1.34.0",
		archive: named, target: &runtime.Ref{}, wantPid: runtimeapi.NamespaceMode_CONTAINER,
	}, {
		name: "given names win over the archive's", runtimeName: "cri-o", version: "1.34.0",
		archive: named, target: &runtime.Ref{Pod: "web", Container: "counter"}, wantPid: runtimeapi.NamespaceMode_CONTAINER,
	}, {
		name: "archive without names", runtimeName: "cri-o", version: "1.34.0",
		archive: unnamed, target: &runtime.Ref{}, err: runtime.ErrInvalid,
		msgs: []string{"does not record the namespace and pod", "--pod NAMESPACE/POD"},
	}, {
		name: "missing sandbox named by the archive", runtimeName: "cri-o", version: "1.34.0",
		archive: named, target: &runtime.Ref{}, sandboxes: []*runtimeapi.PodSandbox{},
		err: runtime.ErrPodNotFound, msgs: []string{"into default/web/counter", "crictl runp"},
	}, {
		name: "relative archive path", version: "v2.3.7", archive: "checkpoint.tar",
		err: runtime.ErrInvalid, msgs: []string{"absolute"},
	}, {
		name: "archive missing", version: "v2.3.7", archive: "/nonexistent/checkpoint.tar",
		err: os.ErrNotExist,
	}, {
		name: "runtime rejects the create", version: "v2.3.7",
		createErr: status.Error(codes.Unknown, "failed to read \"spec.dump\""),
		err:       errUntyped, msgs: []string{"spec.dump"},
	}, {
		name: "containerd 2.3 with restore via create switched off", version: "v2.3.7",
		createErr: status.Error(codes.Unknown, "checkpoint restore via CreateContainer is disabled by configuration"),
		err:       runtime.ErrUnsupported, msgs: []string{"enable_experimental_restore_via_create", "disabled by configuration"},
	}, {
		name: "CRI-O start fails: the hint on its restart bug", runtimeName: "cri-o", version: "1.34.0",
		startErr: status.Error(codes.Unknown, "container restore failed: criu failed: type NOTIFY errno 0"),
		err:      errUntyped, msgs: []string{"criu failed", "if sandbox sb1", "older than CRI-O's last restart", "restore into a new sandbox"},
		wantRemoved: true,
	}, {
		name: "start fails: the container is removed", version: "v2.3.7",
		startErr: status.Error(codes.Unknown, "criu failed: type RESTORE errno 0"),
		err:      errUntyped, msgs: []string{"start container restored-counter", "criu failed"},
		wantRemoved: true,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			sbs := tc.sandboxes
			if sbs == nil {
				sbs = []*runtimeapi.PodSandbox{sandbox("sb1", "default", "web", true, 1), sandbox("other", "default", "api", true, 1)}
			}
			f := &fakeCRI{
				name: tc.runtimeName, version: tc.version, sandboxes: sbs, containers: tc.containers,
				sbConfigs:    map[string]*runtimeapi.PodSandboxConfig{"sb1": sbCfg},
				sbNamespaces: map[string]*runtimeapi.NamespaceOption{"sb1": tc.sbNamespaces},
				createErr:    tc.createErr, startErr: tc.startErr,
				pids: map[string]int{"restored-counter": 777},
			}
			r := f.client(t)
			path := archive
			if tc.archive != "" {
				path = tc.archive
			}
			tgt := target
			if tc.target != nil {
				tgt = *tc.target
			}
			c, err := r.Restore(context.Background(), path, tgt)
			if tc.err == os.ErrNotExist {
				if !errors.Is(err, os.ErrNotExist) {
					t.Fatalf("want not-exist error, got %v", err)
				}
			} else {
				checkErr(t, err, tc.err, tc.msgs...)
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			if tc.err != nil {
				if tc.createErr == nil && tc.startErr == nil && len(f.created) != 0 {
					t.Errorf("nothing should be created, got %d creates", len(f.created))
				}
				if got := len(f.removed) == 1 && f.removed[0] == "restored-counter"; got != tc.wantRemoved {
					t.Errorf("removed = %v, want removal %v", f.removed, tc.wantRemoved)
				}
				return
			}
			if len(f.created) != 1 || len(f.started) != 1 || len(f.removed) != 0 {
				t.Fatalf("created %d, started %v, removed %v", len(f.created), f.started, f.removed)
			}
			req := f.created[0]
			cfg := req.GetConfig()
			if req.GetPodSandboxId() != "sb1" || cfg.GetImage().GetImage() != path ||
				cfg.GetMetadata().GetName() != "counter" || cfg.GetMetadata().GetAttempt() != tc.wantAttempt ||
				cfg.GetLabels()[labelContainerName] != "counter" || cfg.GetLabels()[labelPodUID] != "uid-sb1" {
				t.Errorf("unexpected create request %v", req)
			}
			if got := cfg.GetLinux().GetSecurityContext().GetNamespaceOptions().GetPid(); got != tc.wantPid {
				t.Errorf("container PID namespace mode %v, want %v", got, tc.wantPid)
			}
			if got := req.GetSandboxConfig().GetLogDirectory(); got != sbCfg.LogDirectory {
				t.Errorf("sandbox config log directory %q, want %q (from verbose status)", got, sbCfg.LogDirectory)
			}
			if fi, err := os.Stat(filepath.Join(sbCfg.LogDirectory, "counter")); err != nil || !fi.IsDir() {
				t.Errorf("container log directory not made, as the kubelet would: %v", err)
			}
			if c.ID != "restored-counter" || c.State != runtime.StateRunning || c.Pid != 777 || c.Name != "counter" {
				t.Errorf("unexpected container %+v", c)
			}
		})
	}
}

func TestParseVersion(t *testing.T) {
	for _, tc := range []struct {
		in           string
		major, minor int
		ok           bool
	}{
		{"v2.4.2", 2, 4, true},
		{"2.3.7", 2, 3, true},
		{"2.4.2+unknown", 2, 4, true},
		{"1.7.27-1", 1, 7, true},
		{"v2.10.0-rc.1", 2, 10, true},
		{"1.33.0", 1, 33, true},
		{"", 0, 0, false},
		{"v2", 0, 0, false},
		{"unknown", 0, 0, false},
		{"2.x", 0, 0, false},
	} {
		major, minor, ok := parseVersion(tc.in)
		if major != tc.major || minor != tc.minor || ok != tc.ok {
			t.Errorf("parseVersion(%q) = %d, %d, %v; want %d, %d, %v", tc.in, major, minor, ok, tc.major, tc.minor, tc.ok)
		}
	}
}

func TestTimeoutSeconds(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want int64
	}{
		{time.Minute, 60},
		{1500 * time.Millisecond, 2},
		{time.Millisecond, 1},
		{-time.Second, 1}, // already expired: the runtime still gets a valid value
	} {
		ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(tc.d))
		if got := timeoutSeconds(ctx); got != tc.want {
			t.Errorf("timeoutSeconds(%v) = %d, want %d", tc.d, got, tc.want)
		}
		cancel()
	}
	if got := timeoutSeconds(context.Background()); got != 0 {
		t.Errorf("timeoutSeconds(no deadline) = %d, want 0", got)
	}
}

func FuzzParseVersion(f *testing.F) {
	for _, s := range []string{"v2.4.2", "2.3.0+unknown", "1.7.27-1", "", "v", "..", "9999999999999999999999.1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		major, minor, ok := parseVersion(s)
		if ok && (major < 0 || minor < 0) {
			t.Fatalf("parseVersion(%q) = %d, %d", s, major, minor)
		}
		if !ok && (major != 0 || minor != 0) {
			t.Fatalf("parseVersion(%q) not ok but returned %d, %d", s, major, minor)
		}
		_ = restoreSupported("containerd", s)
	})
}

func FuzzVerboseInfo(f *testing.F) {
	f.Add(`{"pid":12,"config":{"metadata":{"name":"web","namespace":"default","uid":"u"},"log_directory":"/var/log/pods/x"}}`)
	f.Add(`{"pid":-1}`)
	f.Add(`{"config":null}`)
	f.Add(`{"config":{"metadata":null,"envs":[{"key":"a","value":"b"}]}}`)
	f.Add(`not json`)
	f.Fuzz(func(t *testing.T, s string) {
		info := map[string]string{"info": s}
		if pid := pidFromInfo(info); pid < 0 {
			t.Fatalf("negative pid %d from %q", pid, s)
		}
		cfg, err := sandboxConfigFromInfo(info)
		if err == nil && cfg.GetMetadata() == nil {
			t.Fatalf("config without metadata accepted from %q", s)
		}
	})
}
