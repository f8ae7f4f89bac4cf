package cri

import (
	"context"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// fakeCRI is a CRI runtime service held in memory. Methods it does not
// override answer Unimplemented, as a runtime without them does.
type fakeCRI struct {
	runtimeapi.UnimplementedRuntimeServiceServer

	mu           sync.Mutex
	name         string // runtime name; "containerd" unless set
	version      string
	notReady     bool
	sandboxes    []*runtimeapi.PodSandbox
	sbConfigs    map[string]*runtimeapi.PodSandboxConfig // verbose info, by sandbox ID
	sbNamespaces map[string]*runtimeapi.NamespaceOption  // status, by sandbox ID
	containers   []*runtimeapi.Container
	pids         map[string]int

	// checkpoint handles CheckpointContainer; nil means Unimplemented.
	checkpoint   func(ctx context.Context, req *runtimeapi.CheckpointContainerRequest) error
	checkpointed []*runtimeapi.CheckpointContainerRequest

	createErr error
	startErr  error
	created   []*runtimeapi.CreateContainerRequest
	started   []string
	removed   []string
}

// serve starts f on a unix socket in a temporary directory and returns the socket path.
func (f *fakeCRI) serve(t *testing.T) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "cri.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	runtimeapi.RegisterRuntimeServiceServer(s, f)
	go s.Serve(l)
	t.Cleanup(s.Stop)
	return sock
}

// client starts f and returns a Runtime talking to it.
func (f *fakeCRI) client(t *testing.T) *Runtime {
	t.Helper()
	r, err := New(context.Background(), "unix://"+f.serve(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func (f *fakeCRI) Version(context.Context, *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	name, version := f.name, f.version
	if name == "" {
		name = "containerd"
	}
	if version == "" {
		version = "v2.4.2"
	}
	return &runtimeapi.VersionResponse{Version: "0.1.0", RuntimeName: name, RuntimeVersion: version, RuntimeApiVersion: "v1"}, nil
}

func (f *fakeCRI) Status(context.Context, *runtimeapi.StatusRequest) (*runtimeapi.StatusResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	rt := &runtimeapi.RuntimeCondition{Type: runtimeapi.RuntimeReady, Status: !f.notReady}
	if f.notReady {
		rt.Reason, rt.Message = "ShimsGone", "no shim"
	}
	return &runtimeapi.StatusResponse{Status: &runtimeapi.RuntimeStatus{Conditions: []*runtimeapi.RuntimeCondition{
		rt,
		{Type: runtimeapi.NetworkReady, Status: false, Reason: "NoCNI"},
	}}}, nil
}

func matchLabels(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

func (f *fakeCRI) ListPodSandbox(_ context.Context, req *runtimeapi.ListPodSandboxRequest) (*runtimeapi.ListPodSandboxResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	flt := req.GetFilter()
	var out []*runtimeapi.PodSandbox
	for _, sb := range f.sandboxes {
		if flt.GetState() != nil && sb.GetState() != flt.GetState().GetState() {
			continue
		}
		if !matchLabels(sb.GetLabels(), flt.GetLabelSelector()) {
			continue
		}
		out = append(out, sb)
	}
	return &runtimeapi.ListPodSandboxResponse{Items: out}, nil
}

func (f *fakeCRI) PodSandboxStatus(_ context.Context, req *runtimeapi.PodSandboxStatusRequest) (*runtimeapi.PodSandboxStatusResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, sb := range f.sandboxes {
		if sb.GetId() != req.GetPodSandboxId() {
			continue
		}
		resp := &runtimeapi.PodSandboxStatusResponse{Status: &runtimeapi.PodSandboxStatus{Id: sb.GetId(), Metadata: sb.GetMetadata(), State: sb.GetState()}}
		if o := f.sbNamespaces[sb.GetId()]; o != nil {
			resp.Status.Linux = &runtimeapi.LinuxPodSandboxStatus{Namespaces: &runtimeapi.Namespace{Options: o}}
		}
		if cfg := f.sbConfigs[sb.GetId()]; cfg != nil && req.GetVerbose() {
			resp.Info = map[string]string{"info": mustJSON(map[string]any{"pid": 1, "config": cfg})}
		}
		return resp, nil
	}
	return nil, status.Errorf(codes.NotFound, "sandbox %q not found", req.GetPodSandboxId())
}

func (f *fakeCRI) ListContainers(_ context.Context, req *runtimeapi.ListContainersRequest) (*runtimeapi.ListContainersResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	flt := req.GetFilter()
	var out []*runtimeapi.Container
	for _, c := range f.containers {
		if flt.GetPodSandboxId() != "" && c.GetPodSandboxId() != flt.GetPodSandboxId() {
			continue
		}
		if flt.GetState() != nil && c.GetState() != flt.GetState().GetState() {
			continue
		}
		if !matchLabels(c.GetLabels(), flt.GetLabelSelector()) {
			continue
		}
		out = append(out, c)
	}
	return &runtimeapi.ListContainersResponse{Containers: out}, nil
}

func (f *fakeCRI) ContainerStatus(_ context.Context, req *runtimeapi.ContainerStatusRequest) (*runtimeapi.ContainerStatusResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.containers {
		if c.GetId() != req.GetContainerId() {
			continue
		}
		resp := &runtimeapi.ContainerStatusResponse{Status: &runtimeapi.ContainerStatus{
			Id: c.GetId(), Metadata: c.GetMetadata(), State: c.GetState(), CreatedAt: c.GetCreatedAt(),
			Image: c.GetImage(), Labels: c.GetLabels(),
		}}
		if pid, ok := f.pids[c.GetId()]; ok && req.GetVerbose() {
			resp.Info = map[string]string{"info": mustJSON(map[string]any{"pid": pid, "sandboxID": c.GetPodSandboxId()})}
		}
		return resp, nil
	}
	return nil, status.Errorf(codes.NotFound, "an error occurred when trying to find container %q: not found", req.GetContainerId())
}

func (f *fakeCRI) CheckpointContainer(ctx context.Context, req *runtimeapi.CheckpointContainerRequest) (*runtimeapi.CheckpointContainerResponse, error) {
	f.mu.Lock()
	f.checkpointed = append(f.checkpointed, req)
	h := f.checkpoint
	f.mu.Unlock()
	if h == nil {
		return f.UnimplementedRuntimeServiceServer.CheckpointContainer(ctx, req)
	}
	if err := h(ctx, req); err != nil {
		return nil, err
	}
	return &runtimeapi.CheckpointContainerResponse{}, nil
}

func (f *fakeCRI) CreateContainer(_ context.Context, req *runtimeapi.CreateContainerRequest) (*runtimeapi.CreateContainerResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.created = append(f.created, req)
	if f.createErr != nil {
		return nil, f.createErr
	}
	id := "restored-" + req.GetConfig().GetMetadata().GetName()
	f.containers = append(f.containers, &runtimeapi.Container{
		Id: id, PodSandboxId: req.GetPodSandboxId(), Metadata: req.GetConfig().GetMetadata(),
		Image: &runtimeapi.ImageSpec{Image: "localhost/counter:latest"}, State: runtimeapi.ContainerState_CONTAINER_CREATED,
		CreatedAt: time.Now().UnixNano(), Labels: req.GetConfig().GetLabels(),
	})
	return &runtimeapi.CreateContainerResponse{ContainerId: id}, nil
}

func (f *fakeCRI) StartContainer(_ context.Context, req *runtimeapi.StartContainerRequest) (*runtimeapi.StartContainerResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.startErr != nil {
		return nil, f.startErr
	}
	f.started = append(f.started, req.GetContainerId())
	for _, c := range f.containers {
		if c.GetId() == req.GetContainerId() {
			c.State = runtimeapi.ContainerState_CONTAINER_RUNNING
		}
	}
	return &runtimeapi.StartContainerResponse{}, nil
}

func (f *fakeCRI) RemoveContainer(_ context.Context, req *runtimeapi.RemoveContainerRequest) (*runtimeapi.RemoveContainerResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.removed = append(f.removed, req.GetContainerId())
	return &runtimeapi.RemoveContainerResponse{}, nil
}

// Builders for the fake's state.

func sandbox(id, ns, pod string, ready bool, created int64) *runtimeapi.PodSandbox {
	st := runtimeapi.PodSandboxState_SANDBOX_NOTREADY
	if ready {
		st = runtimeapi.PodSandboxState_SANDBOX_READY
	}
	return &runtimeapi.PodSandbox{
		Id:        id,
		Metadata:  &runtimeapi.PodSandboxMetadata{Name: pod, Namespace: ns, Uid: "uid-" + id},
		State:     st,
		CreatedAt: created,
		Labels:    map[string]string{labelPodNamespace: ns, labelPodName: pod, labelPodUID: "uid-" + id},
	}
}

func ctr(id, sandboxID, name string, attempt uint32, st runtimeapi.ContainerState, created int64) *runtimeapi.Container {
	return &runtimeapi.Container{
		Id:           id,
		PodSandboxId: sandboxID,
		Metadata:     &runtimeapi.ContainerMetadata{Name: name, Attempt: attempt},
		Image:        &runtimeapi.ImageSpec{Image: "localhost/counter:latest"},
		State:        st,
		CreatedAt:    created,
		Labels:       map[string]string{labelContainerName: name},
	}
}

const (
	running      = runtimeapi.ContainerState_CONTAINER_RUNNING
	exited       = runtimeapi.ContainerState_CONTAINER_EXITED
	createdState = runtimeapi.ContainerState_CONTAINER_CREATED
)
