package cri

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/ckpt-dev/ckpt/internal/runtime"
)

// Restore creates and starts a container from the checkpoint archive at
// archivePath in the ready sandbox of target's pod. Empty target fields
// take the names the archive recorded. CRI has no restore call:
// CRI-O and containerd 2.0–2.3 restore when CreateContainer is given the
// path of a checkpoint archive as its image. containerd 2.4 removed that, so
// Restore answers ErrUnsupported there without touching anything.
//
// archivePath must be absolute and name the same file for ckpt and for the
// runtime (mount it at the same path when ckpt runs in a container).
func (r *Runtime) Restore(ctx context.Context, archivePath string, target runtime.Ref) (runtime.Container, error) {
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	what := fmt.Sprintf("restore %s into %s", archivePath, target)

	v, err := r.client.Version(ctx, &runtimeapi.VersionRequest{})
	if err != nil {
		return runtime.Container{}, r.callError(what, err)
	}
	if err := restoreSupported(v.GetRuntimeName(), v.GetRuntimeVersion()); err != nil {
		return runtime.Container{}, fmt.Errorf("%s: %w", what, err)
	}
	if !filepath.IsAbs(archivePath) {
		return runtime.Container{}, fmt.Errorf("%s: archive path must be absolute: %w", what, runtime.ErrInvalid)
	}
	// The runtime treats a path that does not exist as an image name and
	// fails with a confusing pull error: check first.
	if fi, err := os.Stat(archivePath); err != nil {
		return runtime.Container{}, fmt.Errorf("%s: %w", what, err)
	} else if !fi.Mode().IsRegular() {
		return runtime.Container{}, fmt.Errorf("%s: archive is not a regular file: %w", what, runtime.ErrInvalid)
	}

	if target, err = fillTarget(archivePath, target); err != nil {
		return runtime.Container{}, fmt.Errorf("%s: %w", what, err)
	}
	what = fmt.Sprintf("restore %s into %s", archivePath, target)

	sandboxes, err := r.sandboxes(ctx, target.Namespace, target.Pod, true)
	if err != nil {
		return runtime.Container{}, r.callError(what, err)
	}
	if len(sandboxes) == 0 {
		return runtime.Container{}, &kindError{msg: noSandboxMessage(what, target), kind: runtime.ErrPodNotFound}
	}
	sb := sandboxes[0]

	// A new attempt number keeps the runtime's name reservation unique when
	// the pod already had a container of that name.
	attempt, err := r.nextAttempt(ctx, sb.GetId(), target.Container)
	if err != nil {
		return runtime.Container{}, r.callError(what, err)
	}
	sbCfg, nsOpts := r.sandboxConfig(ctx, sb)
	logPath := filepath.Join(target.Container, strconv.FormatUint(uint64(attempt), 10)+".log")
	// The kubelet makes the container's log directory; runtimes do not
	// (CRI-O fails the create without it).
	if dir := sbCfg.GetLogDirectory(); dir != "" && filepath.IsAbs(dir) {
		if err := os.MkdirAll(filepath.Join(dir, target.Container), 0o755); err != nil {
			return runtime.Container{}, fmt.Errorf("%s: log directory: %w", what, err)
		}
	}
	created, err := r.client.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{
		PodSandboxId: sb.GetId(),
		Config: &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: target.Container, Attempt: attempt},
			Image:    &runtimeapi.ImageSpec{Image: archivePath, UserSpecifiedImage: archivePath},
			Labels: map[string]string{
				labelContainerName: target.Container,
				labelPodName:       target.Pod,
				labelPodNamespace:  target.Namespace,
				labelPodUID:        sb.GetMetadata().GetUid(),
			},
			LogPath: logPath,
			// The pod's namespaces, as the kubelet gives every container.
			// Without them the runtime joins the pod's PID namespace, where
			// the checkpointed PIDs may be taken.
			Linux: &runtimeapi.LinuxContainerConfig{
				SecurityContext: &runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: nsOpts},
			},
		},
		SandboxConfig: sbCfg,
	})
	if err != nil {
		if strings.Contains(err.Error(), "restore via CreateContainer is disabled") {
			// containerd 2.3 has the feature behind a setting.
			return runtime.Container{}, fmt.Errorf("%s: %w: %s (set enable_experimental_restore_via_create = true "+
				"in containerd's [plugins.'io.containerd.cri.v1.runtime'] section, or use `ckpt restore` "+
				"on the embedded runtime)", what, runtime.ErrUnsupported, status.Convert(err).Message())
		}
		return runtime.Container{}, r.callError(what, err)
	}
	id := created.GetContainerId()
	started := false
	defer func() {
		if started {
			return
		}
		// Undo the create; ctx may be spent, so use a short one of our own.
		cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer ccancel()
		_, _ = r.client.RemoveContainer(cctx, &runtimeapi.RemoveContainerRequest{ContainerId: id})
	}()
	if _, err := r.client.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: id}); err != nil {
		return runtime.Container{}, fmt.Errorf("%w%s", r.callError(what+": start container "+id, err),
			restoreHint(v.GetRuntimeName(), status.Convert(err).Message(), sb))
	}
	started = true

	st, err := r.client.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id, Verbose: true})
	if err != nil {
		return runtime.Container{}, r.callError(what+": status of container "+id, err)
	}
	s := st.GetStatus()
	return runtime.Container{
		ID:        id,
		Namespace: target.Namespace,
		Pod:       target.Pod,
		Name:      target.Container,
		Image:     s.GetImage().GetImage(),
		State:     state(s.GetState()),
		Pid:       pidFromInfo(st.GetInfo()),
		CreatedAt: time.Unix(0, s.GetCreatedAt()),
	}, nil
}

// restoreHint adds what to do about a known runtime bug to a failed
// start: CRI-O 1.34 cannot restore into a sandbox made before it last
// restarted (CRIU: "No mapping for ... mountpoint", the sandbox's
// /run/.containerenv). CRI-O removes CRIU's log with the container, so the
// cause cannot be read back; the hint names the sandbox's age instead.
func restoreHint(runtimeName, msg string, sb *runtimeapi.PodSandbox) string {
	if runtimeName != "cri-o" || !strings.Contains(msg, "criu failed") {
		return ""
	}
	return fmt.Sprintf(" (if sandbox %.12s, created %s, is older than CRI-O's last restart, this is CRI-O's "+
		"bug with sandboxes created before CRI-O restarted: CRIU finds no mapping for their mounts; "+
		"restore into a new sandbox: delete the pod and let the kubelet make it again, or make one with `crictl runp`)",
		sb.GetId(), time.Unix(0, sb.GetCreatedAt()).UTC().Format(time.RFC3339))
}

// noSandboxMessage explains that CRI restores into an existing sandbox,
// and how to get one.
func noSandboxMessage(what string, t runtime.Ref) string {
	return fmt.Sprintf("%s: pod does not exist: there is no ready pod sandbox for %s/%s. "+
		"Restore through CRI creates the container in an existing sandbox: let the kubelet run pod %s in "+
		"namespace %s first, or make one with `crictl runp` and a sandbox config whose labels are the "+
		"kubelet's (io.kubernetes.pod.namespace=%s, io.kubernetes.pod.name=%s, io.kubernetes.pod.uid=...)",
		what, t.Namespace, t.Pod, t.Pod, t.Namespace, t.Namespace, t.Pod)
}

// nextAttempt is one more than the highest attempt of containers named name
// in the sandbox, or 0 when there are none.
func (r *Runtime) nextAttempt(ctx context.Context, sandboxID, name string) (uint32, error) {
	resp, err := r.client.ListContainers(ctx, &runtimeapi.ListContainersRequest{
		Filter: &runtimeapi.ContainerFilter{
			PodSandboxId:  sandboxID,
			LabelSelector: map[string]string{labelContainerName: name},
		},
	})
	if err != nil {
		return 0, err
	}
	var next uint32
	for _, c := range resp.GetContainers() {
		if a := c.GetMetadata().GetAttempt(); a >= next {
			next = a + 1
		}
	}
	return next, nil
}

// sandboxConfig returns the config the sandbox was created with, read from
// the runtime's verbose status (containerd and CRI-O report it), or a
// minimal one built from what the sandbox list says; and the namespace
// options its containers get: the sandbox's, with the kubelet's default of
// a PID namespace per container.
func (r *Runtime) sandboxConfig(ctx context.Context, sb *runtimeapi.PodSandbox) (*runtimeapi.PodSandboxConfig, *runtimeapi.NamespaceOption) {
	cfg := &runtimeapi.PodSandboxConfig{
		Metadata:    sb.GetMetadata(),
		Labels:      sb.GetLabels(),
		Annotations: sb.GetAnnotations(),
	}
	ns := &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_CONTAINER}
	st, err := r.client.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: sb.GetId(), Verbose: true})
	if err != nil {
		return cfg, ns
	}
	if full, err := sandboxConfigFromInfo(st.GetInfo()); err == nil {
		cfg = full
	}
	if o := st.GetStatus().GetLinux().GetNamespaces().GetOptions(); o != nil {
		ns = o
	} else if o := cfg.GetLinux().GetSecurityContext().GetNamespaceOptions(); o != nil {
		ns = o
	}
	return cfg, ns
}

// sandboxConfigFromInfo parses the "config" member of info["info"].
func sandboxConfigFromInfo(info map[string]string) (*runtimeapi.PodSandboxConfig, error) {
	raw, ok := info["info"]
	if !ok {
		return nil, errors.New("no verbose info")
	}
	var v struct {
		Config *runtimeapi.PodSandboxConfig `json:"config"`
	}
	if err := json.Unmarshal([]byte(raw), &v); err != nil {
		return nil, fmt.Errorf("parse sandbox info: %w", err)
	}
	if v.Config == nil || v.Config.GetMetadata() == nil {
		return nil, errors.New("sandbox info has no config")
	}
	return v.Config, nil
}

// restoreSupported says whether runtime name at version restores checkpoint
// archives through CreateContainer. Unknown runtimes get the benefit of the
// doubt: the runtime's own error is then passed on.
func restoreSupported(name, version string) error {
	if name != "containerd" {
		return nil
	}
	major, minor, ok := parseVersion(version)
	if !ok {
		return nil
	}
	switch {
	case major >= 3 || (major == 2 && minor >= 4):
		return fmt.Errorf("%w: containerd %s cannot restore a checkpoint through CRI "+
			"(containerd 2.4+ removed restore via CreateContainer); restore the archive with "+
			"`ckpt restore` on the embedded runtime (runc + CRIU) instead", runtime.ErrUnsupported, version)
	case major < 2:
		return fmt.Errorf("%w: containerd %s cannot restore a checkpoint through CRI "+
			"(only containerd 2.0 to 2.3 can); restore the archive with `ckpt restore` on the "+
			"embedded runtime (runc + CRIU) instead", runtime.ErrUnsupported, version)
	}
	return nil
}

// parseVersion reads major and minor from "v2.4.2", "2.3.0+unknown",
// "1.7.27-1" and the like.
func parseVersion(s string) (major, minor int, ok bool) {
	s = strings.TrimPrefix(strings.TrimSpace(s), "v")
	end := strings.IndexFunc(s, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	if end >= 0 {
		s = s[:end]
	}
	parts := strings.Split(s, ".")
	if len(parts) < 2 {
		return 0, 0, false
	}
	major, err1 := strconv.Atoi(parts[0])
	minor, err2 := strconv.Atoi(parts[1])
	if err1 != nil || err2 != nil || major < 0 || minor < 0 {
		return 0, 0, false
	}
	return major, minor, true
}
