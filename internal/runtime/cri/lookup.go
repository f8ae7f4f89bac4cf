package cri

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/ckpt-dev/ckpt/internal/runtime"
)

// kindError is an error with its own message that still matches a typed
// runtime error with errors.Is.
type kindError struct {
	msg  string
	kind error
}

func (e *kindError) Error() string { return e.msg }
func (e *kindError) Unwrap() error { return e.kind }

// Lookup finds the running container ref names: the pod's sandbox by the
// kubelet's labels (ready sandboxes first), then the newest running
// container with that name in it.
func (r *Runtime) Lookup(ctx context.Context, ref runtime.Ref) (runtime.Container, error) {
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	what := "lookup " + ref.String()
	sandboxes, err := r.sandboxes(ctx, ref.Namespace, ref.Pod, false)
	if err != nil {
		return runtime.Container{}, r.callError(what, err)
	}
	if len(sandboxes) == 0 {
		return runtime.Container{}, fmt.Errorf("%s: %w", what, runtime.ErrPodNotFound)
	}
	exited := 0
	for _, sb := range sandboxes {
		list, err := r.client.ListContainers(ctx, &runtimeapi.ListContainersRequest{
			Filter: &runtimeapi.ContainerFilter{
				PodSandboxId:  sb.GetId(),
				LabelSelector: map[string]string{labelContainerName: ref.Container},
			},
		})
		if err != nil {
			return runtime.Container{}, r.callError(what, err)
		}
		c := newestRunning(list.GetContainers())
		if c == nil {
			exited += len(list.GetContainers())
			continue
		}
		return r.container(ctx, ref, c), nil
	}
	msg := fmt.Sprintf("%s: container %s does not exist", what, ref.Container)
	if exited > 0 {
		msg += fmt.Sprintf(" (no running instance, %d not running)", exited)
	}
	return runtime.Container{}, &kindError{msg: msg, kind: runtime.ErrContainerNotFound}
}

// sandboxes lists the pod's sandboxes, ready ones first, then newest first.
// With readyOnly, not-ready sandboxes are left out.
func (r *Runtime) sandboxes(ctx context.Context, namespace, pod string, readyOnly bool) ([]*runtimeapi.PodSandbox, error) {
	filter := &runtimeapi.PodSandboxFilter{
		LabelSelector: map[string]string{labelPodNamespace: namespace, labelPodName: pod},
	}
	if readyOnly {
		filter.State = &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY}
	}
	resp, err := r.client.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{Filter: filter})
	if err != nil {
		return nil, err
	}
	var items []*runtimeapi.PodSandbox
	for _, sb := range resp.GetItems() {
		// Runtimes honour the filter; check anyway, it is cheap.
		if l := sb.GetLabels(); l[labelPodNamespace] != namespace || l[labelPodName] != pod {
			continue
		}
		if readyOnly && sb.GetState() != runtimeapi.PodSandboxState_SANDBOX_READY {
			continue
		}
		items = append(items, sb)
	}
	sort.SliceStable(items, func(i, j int) bool {
		ri := items[i].GetState() == runtimeapi.PodSandboxState_SANDBOX_READY
		rj := items[j].GetState() == runtimeapi.PodSandboxState_SANDBOX_READY
		if ri != rj {
			return ri
		}
		return items[i].GetCreatedAt() > items[j].GetCreatedAt()
	})
	return items, nil
}

// newestRunning picks the running container created last (after restarts
// several share a name), or nil.
func newestRunning(cs []*runtimeapi.Container) *runtimeapi.Container {
	var best *runtimeapi.Container
	for _, c := range cs {
		if c.GetState() != runtimeapi.ContainerState_CONTAINER_RUNNING {
			continue
		}
		if best == nil || c.GetCreatedAt() > best.GetCreatedAt() ||
			(c.GetCreatedAt() == best.GetCreatedAt() && c.GetMetadata().GetAttempt() > best.GetMetadata().GetAttempt()) {
			best = c
		}
	}
	return best
}

// container converts a CRI container. The PID comes from the runtime's
// verbose status when it offers one (containerd and CRI-O do); it is
// best-effort and left 0 otherwise.
func (r *Runtime) container(ctx context.Context, ref runtime.Ref, c *runtimeapi.Container) runtime.Container {
	out := runtime.Container{
		ID:        c.GetId(),
		Namespace: ref.Namespace,
		Pod:       ref.Pod,
		Name:      c.GetMetadata().GetName(),
		Image:     c.GetImage().GetImage(),
		State:     state(c.GetState()),
		CreatedAt: time.Unix(0, c.GetCreatedAt()),
	}
	if out.Name == "" {
		out.Name = ref.Container
	}
	if st, err := r.client.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: c.GetId(), Verbose: true}); err == nil {
		out.Pid = pidFromInfo(st.GetInfo())
		if s := st.GetStatus(); s != nil {
			out.State = state(s.GetState())
			if img := s.GetImage().GetImage(); img != "" {
				out.Image = img
			}
		}
	}
	return out
}

// pidFromInfo reads "pid" from the runtime's verbose info["info"] JSON.
func pidFromInfo(info map[string]string) int {
	var v struct {
		Pid int `json:"pid"`
	}
	if err := json.Unmarshal([]byte(info["info"]), &v); err != nil || v.Pid < 0 {
		return 0
	}
	return v.Pid
}

func state(s runtimeapi.ContainerState) runtime.State {
	switch s {
	case runtimeapi.ContainerState_CONTAINER_CREATED:
		return runtime.StateCreated
	case runtimeapi.ContainerState_CONTAINER_RUNNING:
		return runtime.StateRunning
	case runtimeapi.ContainerState_CONTAINER_EXITED:
		return runtime.StateExited
	}
	return runtime.StateUnknown
}
