package embedded

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/opencontainers/runtime-tools/generate"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	corev1 "k8s.io/api/core/v1"

	rt "github.com/ckpt-dev/ckpt/internal/runtime"
)

// DefaultPauseImage is the pod sandbox image (the project's examples/pause).
const DefaultPauseImage = "localhost/pause:3.10"

// podRecord is what ckpt keeps about a pod sandbox, in
// <state>/pods/<id>/meta.json; the validated Pod is beside it in pod.json.
type podRecord struct {
	ID        string    `json:"id"` // the pod directory; containers name it as PodUID
	UID       string    `json:"uid"`
	Namespace string    `json:"namespace"`
	Name      string    `json:"name"`
	Origin    string    `json:"origin"`
	Hash      string    `json:"hash,omitempty"` // of the manifest, for manifest pods
	SandboxID string    `json:"sandboxID"`      // the pause container
	CreatedAt time.Time `json:"createdAt"`
}

// Files in a pod's directory.
const (
	filePodMeta    = "meta.json"
	filePod        = "pod.json"
	filePodHosts   = "etc-hosts"
	filePodHostnm  = "hostname"
	filePodResolv  = "resolv.conf"
	dirPodVolumes  = "volumes"
	pauseContainer = "POD"
)

func (r *Runtime) podsDir() string         { return filepath.Join(r.cfg.StateDir, "pods") }
func (r *Runtime) podDir(id string) string { return filepath.Join(r.podsDir(), id) }

func (r *Runtime) loadPods() ([]*podRecord, error) {
	entries, err := os.ReadDir(r.podsDir())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []*podRecord
	for _, e := range entries {
		var p podRecord
		if e.IsDir() && readJSON(filepath.Join(r.podDir(e.Name()), filePodMeta), &p) == nil {
			out = append(out, &p)
		}
	}
	return out, nil
}

func (r *Runtime) loadPod(id string) (*podRecord, *corev1.Pod, error) {
	var p podRecord
	if err := readJSON(filepath.Join(r.podDir(id), filePodMeta), &p); err != nil {
		return nil, nil, fmt.Errorf("load pod %s: %w", id, err)
	}
	var pod corev1.Pod
	if err := readJSON(filepath.Join(r.podDir(id), filePod), &pod); err != nil {
		return nil, nil, fmt.Errorf("load pod %s: %w", id, err)
	}
	return &p, &pod, nil
}

// sandboxOf returns what a container needs to join the sandbox of pod p.
func (r *Runtime) sandboxOf(ctx context.Context, p *podRecord, pod *corev1.Pod) (sandboxNS, error) {
	rec, err := r.loadRecord(p.SandboxID)
	if err != nil {
		return sandboxNS{}, err
	}
	c := r.container(ctx, rec)
	if c.State != rt.StateRunning || c.Pid <= 0 {
		return sandboxNS{}, fmt.Errorf("the sandbox of pod %s/%s is %s", p.Namespace, p.Name, c.State)
	}
	dir := r.podDir(p.ID)
	return sandboxNS{
		ID: p.SandboxID, PausePid: c.Pid, HostNetwork: pod.Spec.HostNetwork,
		Hosts: filepath.Join(dir, filePodHosts), Hostname: filepath.Join(dir, filePodHostnm),
		ResolvConf: filepath.Join(dir, filePodResolv),
	}, nil
}

// podHostname returns the pod's hostname and domain as the kubelet
// computes them (GeneratePodHostNameAndDomain).
func podHostname(pod *corev1.Pod, clusterDomain string) (host, domain string) {
	host = pod.Name
	if pod.Spec.Hostname != "" {
		host = pod.Spec.Hostname
	}
	if len(host) > 63 {
		host = strings.TrimRight(host[:63], "-.")
	}
	if pod.Spec.Subdomain != "" && clusterDomain != "" {
		domain = fmt.Sprintf("%s.%s.svc.%s", pod.Spec.Subdomain, pod.Namespace, clusterDomain)
	}
	return host, domain
}

// hostsFile is the kubelet's managed /etc/hosts. The pod's only address is
// loopback, so its hostname maps to 127.0.0.1 where the kubelet would
// write the pod IP.
func hostsFile(pod *corev1.Pod, clusterDomain string) ([]byte, error) {
	if pod.Spec.HostNetwork {
		host, err := readBounded("/etc/hosts", 1<<20)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		return append([]byte("# Kubernetes-managed hosts file (host network).\n"), host...), nil
	}
	host, domain := podHostname(pod, clusterDomain)
	var b strings.Builder
	b.WriteString("# Kubernetes-managed hosts file.\n")
	b.WriteString("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n")
	if domain != "" {
		fmt.Fprintf(&b, "127.0.0.1\t%s.%s\t%s\n", host, domain, host)
	} else {
		fmt.Fprintf(&b, "127.0.0.1\t%s\n", host)
	}
	return []byte(b.String()), nil
}

// createSandbox starts a pod's sandbox: a pause container holding the
// pod's network, IPC and UTS namespaces with lo up, and the pod's files.
// ports are the hostPorts to forward into it. On error nothing is left.
func (r *Runtime) createSandbox(ctx context.Context, pod *corev1.Pod, origin, hash string, ports []corev1.ContainerPort) (_ *podRecord, err error) {
	p := &podRecord{
		ID: newID(), UID: string(pod.UID), Namespace: pod.Namespace, Name: pod.Name,
		Origin: origin, Hash: hash, CreatedAt: time.Now().UTC(),
	}
	dir := r.podDir(p.ID)
	if err := os.MkdirAll(filepath.Join(dir, dirPodVolumes), 0o700); err != nil {
		return nil, fmt.Errorf("create sandbox of pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	defer func() {
		if err != nil {
			r.removePod(context.WithoutCancel(ctx), p)
		}
	}()
	podJSON, err := json.Marshal(pod)
	if err != nil {
		return nil, err
	}
	hosts, err := hostsFile(pod, r.cfg.ClusterDomain)
	if err != nil {
		return nil, err
	}
	host, _ := podHostname(pod, r.cfg.ClusterDomain)
	if pod.Spec.HostNetwork {
		host, _ = os.Hostname()
	}
	resolv, _ := readBounded("/etc/resolv.conf", 1<<20)
	for name, data := range map[string][]byte{filePod: podJSON, filePodHosts: hosts, filePodHostnm: []byte(host + "\n"), filePodResolv: resolv} {
		mode := os.FileMode(0o644)
		if name == filePod {
			mode = 0o600
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, mode); err != nil {
			return nil, err
		}
	}
	if err := r.prepareVolumes(pod, dir); err != nil {
		return nil, fmt.Errorf("pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}

	img, err := r.images.Resolve(r.cfg.PauseImage)
	if err != nil {
		return nil, fmt.Errorf("pod %s/%s: the pod sandbox image %s is not on this node (import it: ckpt image import pause.tar, built by `make images`): %w",
			pod.Namespace, pod.Name, r.cfg.PauseImage, err)
	}
	rec := &record{
		ID: newID(), Namespace: pod.Namespace, Pod: pod.Name, Name: pauseContainer, Image: r.cfg.PauseImage,
		ImageID: img.ID, Origin: origin, CreatedAt: time.Now().UTC(), PodUID: p.ID, Kind: kindSandbox,
	}
	p.SandboxID = rec.ID
	// Written before the pause container, so that a failure removes it too.
	if err := writeJSONAtomic(filepath.Join(dir, filePodMeta), p); err != nil {
		return nil, err
	}
	fwd := forwardSpecs(ports, pod.Spec.HostNetwork)
	if err := checkHostPorts(fwd); err != nil {
		return nil, fmt.Errorf("pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	c, err := r.create(ctx, rec, img, func(rootfs, criuConf string) ([]byte, error) {
		s, err := buildSandboxSpec(rec, pod, img, rootfs, host)
		if err != nil {
			return nil, err
		}
		return marshalSpec(s)
	}, nil, fwd)
	if err != nil {
		return nil, fmt.Errorf("pod %s/%s: start sandbox: %w", pod.Namespace, pod.Name, err)
	}
	if !pod.Spec.HostNetwork {
		if err := loopbackUp(c.Pid); err != nil {
			return nil, fmt.Errorf("pod %s/%s: bring lo up in the sandbox: %w", pod.Namespace, pod.Name, err)
		}
	}
	return p, nil
}

// buildSandboxSpec is the pause container's spec: new pid, mount, ipc, net
// and uts namespaces (net and uts are the host's with hostNetwork), a
// read-only root, no capabilities.
func buildSandboxSpec(rec *record, pod *corev1.Pod, img Image, rootfs, hostname string) (*specs.Spec, error) {
	g, err := generate.New("linux")
	if err != nil {
		return nil, err
	}
	args, err := processArgs(img, corev1.Container{})
	if err != nil {
		return nil, fmt.Errorf("pause image: %w", err)
	}
	g.SetProcessArgs(args)
	g.SetRootPath(rootfs)
	g.SetRootReadonly(true)
	g.SetProcessNoNewPrivileges(true)
	g.Config.Process.Capabilities = &specs.LinuxCapabilities{Bounding: []string{}, Effective: []string{}, Permitted: []string{}}
	g.Config.Linux.Seccomp = nil
	g.Config.Linux.MaskedPaths = append([]string(nil), defaultMaskedPaths...)
	g.Config.Linux.ReadonlyPaths = append([]string(nil), defaultReadonlyPaths...)
	g.SetLinuxCgroupsPath(path.Join(defaultContainerCgroup, rec.ID))
	g.SetLinuxResourcesCPUShares(minShares)
	g.ClearLinuxNamespaces()
	for _, ns := range []specs.LinuxNamespaceType{specs.PIDNamespace, specs.MountNamespace, specs.IPCNamespace} {
		g.AddOrReplaceLinuxNamespace(string(ns), "")
	}
	g.Config.Hostname = ""
	if !pod.Spec.HostNetwork {
		g.AddOrReplaceLinuxNamespace(string(specs.NetworkNamespace), "")
		g.AddOrReplaceLinuxNamespace(string(specs.UTSNamespace), "")
		g.SetHostname(hostname)
	}
	g.Config.Annotations = map[string]string{
		annotationManager:     managerName,
		annotationCtrType:     "sandbox",
		annotationSandboxName: pod.Name,
		annotationSandboxNS:   pod.Namespace,
		annotationSandboxUID:  string(pod.UID),
		annotationSandboxID:   rec.ID,
	}
	return g.Config, nil
}

// loopbackUp sets lo up in the network namespace of pid (runc already does
// for a namespace it creates; this makes it so whatever runc does).
func loopbackUp(pid int) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	ns, err := netns.GetFromPid(pid)
	if err != nil {
		return err
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return err
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return err
	}
	return h.LinkSetUp(lo)
}

// removePod removes every container of a pod, its sandbox and its files.
func (r *Runtime) removePod(ctx context.Context, p *podRecord) error {
	recs, err := r.loadRecords()
	if err != nil {
		return err
	}
	var errs []error
	for _, rec := range recs {
		if rec.PodUID == p.ID && rec.Kind != kindSandbox {
			if err := r.removeContainer(ctx, rec.ID); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if p.SandboxID != "" {
		if _, err := r.loadRecord(p.SandboxID); err == nil {
			if err := r.removeContainer(ctx, p.SandboxID); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("remove pod %s/%s: %w", p.Namespace, p.Name, errors.Join(errs...))
	}
	r.cleanupVolumes(r.podDir(p.ID))
	return os.RemoveAll(r.podDir(p.ID))
}

// removeIfEmpty removes a pod whose last container is gone.
func (r *Runtime) removeIfEmpty(ctx context.Context, podID string) error {
	if podID == "" {
		return nil
	}
	recs, err := r.loadRecords()
	if err != nil {
		return err
	}
	for _, rec := range recs {
		if rec.PodUID == podID && rec.Kind != kindSandbox {
			return nil
		}
	}
	p, _, err := r.loadPod(podID)
	if err != nil {
		var meta podRecord
		if readJSON(filepath.Join(r.podDir(podID), filePodMeta), &meta) != nil {
			return nil
		}
		p = &meta
	}
	return r.removePod(ctx, p)
}

// cleanupVolumes unmounts the pod's memory-backed emptyDirs.
func (r *Runtime) cleanupVolumes(dir string) {
	entries, _ := os.ReadDir(filepath.Join(dir, dirPodVolumes))
	for _, e := range entries {
		p := filepath.Join(dir, dirPodVolumes, e.Name())
		for i := 0; i < 10 && syscall.Unmount(p, syscall.MNT_DETACH) == nil; i++ {
		}
	}
}

// RemoveEmptyPods removes the sandboxes of pods that have no container
// left and were created more than olderThan ago (a pod being created has
// none for a moment). An agent stopped while it created a pod leaves one.
func (r *Runtime) RemoveEmptyPods(ctx context.Context, olderThan time.Duration) []error {
	pods, err := r.loadPods()
	if err != nil {
		return []error{err}
	}
	recs, err := r.loadRecords()
	if err != nil {
		return []error{err}
	}
	used := map[string]bool{}
	for _, rec := range recs {
		if rec.Kind != kindSandbox {
			used[rec.PodUID] = true
		}
	}
	var errs []error
	for _, p := range pods {
		if !used[p.ID] && time.Since(p.CreatedAt) > olderThan {
			if err := r.removePod(ctx, p); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errs
}
