package embedded

import (
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/moby/sys/capability"
	"github.com/moby/sys/user"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/opencontainers/runtime-tools/generate"
	"github.com/opencontainers/runtime-tools/generate/seccomp"
	corev1 "k8s.io/api/core/v1"
)

// Paths containerd masks and makes read-only in every unprivileged
// container (pkg/oci's defaults).
var (
	defaultMaskedPaths = []string{
		"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
		"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
		"/sys/devices/virtual/powercap", "/proc/scsi",
	}
	defaultReadonlyPaths = []string{
		"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
	}
)

// sandboxNS is what a container needs of its pod's sandbox: the namespaces
// of the pause process to join, and the pod's files.
type sandboxNS struct {
	// ID is the pause container's ID (containerd's sandbox ID).
	ID string
	// PausePid is the pause process; its /proc/<pid>/ns/{net,ipc,uts} are joined.
	PausePid    int
	HostNetwork bool
	// Hosts, Hostname and ResolvConf are the pod's files, bind-mounted
	// like the kubelet and containerd mount theirs; empty means none.
	Hosts, Hostname, ResolvConf string
}

// specInput is everything one container's spec is built from.
type specInput struct {
	Rec        *record
	Pod        *corev1.Pod
	Container  corev1.Container
	Image      Image
	Rootfs     string
	CriuConfig string
	Sandbox    sandboxNS
	// Volumes maps a volume name to its directory (or file) on the host.
	Volumes map[string]string
	// TerminationLog is the host file mounted at terminationMessagePath.
	TerminationLog string
	// Shm, when set, is bound at /dev/shm instead of a tmpfs, and
	// ContainerEnv at /run/.containerenv: a restored foreign container
	// had them bound from outside (see podBinds).
	Shm, ContainerEnv string
	// Cgroup mounts the container's cgroups read-only at /sys/fs/cgroup,
	// as containerd's default spec does (a restored foreign container).
	Cgroup bool
}

// buildContainerSpec builds the OCI runtime spec of one container of a pod
// the way containerd's CRI plugin does: its default spec, the image's
// config, then the Pod's fields. It is used both for new containers and for
// restored ones, so a restored container gets exactly what its Pod allows.
func buildContainerSpec(in specInput) (*specs.Spec, error) {
	c := in.Container
	g, err := generate.New("linux")
	if err != nil {
		return nil, err
	}
	g.HostSpecific = false
	args, err := processArgs(in.Image, c)
	if err != nil {
		return nil, err
	}
	g.SetProcessArgs(args)
	g.ClearProcessEnv()
	g.Config.Process.Env = mergeEnv(in.Image.Env, c.Env)
	cwd := firstNonEmpty(c.WorkingDir, in.Image.WorkingDir, "/")
	if !path.IsAbs(cwd) {
		return nil, fmt.Errorf("workingDir %q is not an absolute path", cwd)
	}
	g.SetProcessCwd(cwd)
	g.SetRootPath(in.Rootfs)
	g.SetHostname("")
	g.Config.Hostname = ""
	g.SetLinuxCgroupsPath(path.Join(defaultContainerCgroup, in.Rec.ID))

	// Namespaces: mount of its own; pid of its own unless the pod shares
	// it; net, ipc and uts of the pod.
	g.ClearLinuxNamespaces()
	g.AddOrReplaceLinuxNamespace(string(specs.MountNamespace), "")
	if in.Sandbox.PausePid <= 0 {
		return nil, fmt.Errorf("the pod sandbox has no pause process")
	}
	nsPath := func(kind string) string { return fmt.Sprintf("/proc/%d/ns/%s", in.Sandbox.PausePid, kind) }
	if in.Pod.Spec.ShareProcessNamespace != nil && *in.Pod.Spec.ShareProcessNamespace {
		g.AddOrReplaceLinuxNamespace(string(specs.PIDNamespace), nsPath("pid"))
	} else {
		g.AddOrReplaceLinuxNamespace(string(specs.PIDNamespace), "")
	}
	g.AddOrReplaceLinuxNamespace(string(specs.IPCNamespace), nsPath("ipc"))
	if !in.Sandbox.HostNetwork {
		g.AddOrReplaceLinuxNamespace(string(specs.NetworkNamespace), nsPath("net"))
		g.AddOrReplaceLinuxNamespace(string(specs.UTSNamespace), nsPath("uts"))
	}

	sc := effectiveSecurity(in.Pod.Spec.SecurityContext, c.SecurityContext)
	if err := applyUser(&g, in.Image, sc, in.Pod.Spec.SecurityContext, in.Pod.Name, c.Name); err != nil {
		return nil, err
	}
	if err := applySecurity(&g, sc); err != nil {
		return nil, err
	}
	applyResources(&g, c.Resources)

	if in.Cgroup {
		g.AddMount(specs.Mount{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"nosuid", "noexec", "nodev", "relatime", "ro"}})
	}
	for _, m := range podFileMounts(in) {
		g.RemoveMount(m.Destination)
		g.AddMount(m)
	}
	for _, vm := range c.VolumeMounts {
		src, ok := in.Volumes[vm.Name]
		if !ok {
			return nil, fmt.Errorf("volumeMounts %q: volume is not prepared", vm.Name)
		}
		if vm.SubPath != "" {
			src = path.Join(src, vm.SubPath)
		}
		opts := []string{"rbind", "rprivate"}
		if vm.ReadOnly {
			opts = append(opts, "ro")
		}
		g.AddMount(specs.Mount{Destination: vm.MountPath, Type: "bind", Source: src, Options: opts})
	}

	g.Config.Annotations = containerAnnotations(in.Rec, in.Pod, in.Sandbox.ID, in.CriuConfig)
	return g.Config, nil
}

// podFileMounts are the files every container of a pod gets, as the kubelet
// and containerd mount them.
func podFileMounts(in specInput) []specs.Mount {
	var out []specs.Mount
	bind := func(dst, src string) {
		if src != "" {
			out = append(out, specs.Mount{Destination: dst, Type: "bind", Source: src, Options: []string{"rbind", "rprivate", "rw"}})
		}
	}
	bind("/etc/hosts", in.Sandbox.Hosts)
	bind("/etc/hostname", in.Sandbox.Hostname)
	bind("/etc/resolv.conf", in.Sandbox.ResolvConf)
	tmp := firstNonEmpty(in.Container.TerminationMessagePath, corev1.TerminationMessagePathDefault)
	bind(tmp, in.TerminationLog)
	bind("/dev/shm", in.Shm)
	bind("/run/.containerenv", in.ContainerEnv)
	return out
}

func containerAnnotations(rec *record, pod *corev1.Pod, sandboxID, criuConfig string) map[string]string {
	a := map[string]string{
		annotationManager:     managerName,
		annotationCtrName:     rec.Name,
		annotationCtrType:     "container",
		annotationSandboxName: rec.Pod,
		annotationSandboxNS:   rec.Namespace,
		annotationSandboxUID:  string(pod.UID),
		annotationSandboxID:   sandboxID,
		annotationImageName:   rec.Image,
		annotationCriuConfig:  criuConfig,
	}
	return a
}

// effectiveSecurity merges the pod's security context under the
// container's, as the kubelet does (the container's fields win).
func effectiveSecurity(pod *corev1.PodSecurityContext, ctr *corev1.SecurityContext) corev1.SecurityContext {
	var sc corev1.SecurityContext
	if ctr != nil {
		sc = *ctr.DeepCopy()
	}
	if pod == nil {
		return sc
	}
	if sc.RunAsUser == nil {
		sc.RunAsUser = pod.RunAsUser
	}
	if sc.RunAsGroup == nil {
		sc.RunAsGroup = pod.RunAsGroup
	}
	if sc.RunAsNonRoot == nil {
		sc.RunAsNonRoot = pod.RunAsNonRoot
	}
	if sc.SeccompProfile == nil {
		sc.SeccompProfile = pod.SeccompProfile
	}
	return sc
}

// applyUser sets the process user from runAsUser/runAsGroup or the image's
// User, resolved in the image's /etc/passwd and /etc/group, with the
// supplemental groups and fsGroup added, and checks runAsNonRoot.
func applyUser(g *generate.Generator, img Image, sc corev1.SecurityContext, psc *corev1.PodSecurityContext, pod, ctr string) error {
	spec := img.User
	if sc.RunAsUser != nil {
		spec = strconv.FormatInt(*sc.RunAsUser, 10)
	}
	if sc.RunAsGroup != nil {
		u, _, _ := strings.Cut(spec, ":")
		if u == "" {
			u = "0"
		}
		spec = u + ":" + strconv.FormatInt(*sc.RunAsGroup, 10)
	}
	if sc.RunAsNonRoot != nil && *sc.RunAsNonRoot {
		if err := verifyNonRoot(spec, sc.RunAsUser != nil, pod, ctr); err != nil {
			return err
		}
	}
	eu, err := resolveUser(img.RootFS, spec)
	if err != nil {
		return fmt.Errorf("resolve user %q in the image: %w", spec, err)
	}
	if sc.RunAsNonRoot != nil && *sc.RunAsNonRoot && eu.Uid == 0 {
		return fmt.Errorf("container has runAsNonRoot and image will run as root (pod: %q, container: %s)", pod, ctr)
	}
	g.SetProcessUID(uint32(eu.Uid))
	g.SetProcessGID(uint32(eu.Gid))
	g.ClearProcessAdditionalGids()
	gids := []int64{}
	for _, id := range eu.Sgids {
		gids = append(gids, int64(id))
	}
	if psc != nil {
		gids = append(gids, psc.SupplementalGroups...)
		if psc.FSGroup != nil {
			gids = append(gids, *psc.FSGroup)
		}
	}
	seen := map[int64]bool{int64(eu.Gid): true}
	for _, id := range gids {
		if !seen[id] {
			seen[id] = true
			g.AddProcessAdditionalGid(uint32(id))
		}
	}
	return nil
}

// verifyNonRoot is the kubelet's check for runAsNonRoot before the image's
// user is looked up: a name cannot be verified.
func verifyNonRoot(spec string, fromContext bool, pod, ctr string) error {
	u, _, _ := strings.Cut(spec, ":")
	if u == "" {
		return fmt.Errorf("container has runAsNonRoot and image will run as root (pod: %q, container: %s)", pod, ctr)
	}
	uid, err := strconv.ParseInt(u, 10, 64)
	if err != nil {
		return fmt.Errorf("container has runAsNonRoot and image has non-numeric user (%s), cannot verify user is non-root (pod: %q, container: %s)", u, pod, ctr)
	}
	if uid == 0 {
		if fromContext {
			return fmt.Errorf("container's runAsUser breaks non-root policy (pod: %q, container: %s)", pod, ctr)
		}
		return fmt.Errorf("container has runAsNonRoot and image will run as root (pod: %q, container: %s)", pod, ctr)
	}
	return nil
}

// maxPasswdBytes bounds /etc/passwd and /etc/group read from an image.
const maxPasswdBytes = 4 << 20

// resolveUser resolves a user spec (name, uid, uid:gid, name:group) in the
// image's /etc/passwd and /etc/group, read inside the image root so that
// no symlink leads out of it. Missing files are fine for numeric IDs.
func resolveUser(rootfs, spec string) (*user.ExecUser, error) {
	defaults := &user.ExecUser{Uid: 0, Gid: 0, Home: "/"}
	if rootfs == "" {
		return user.GetExecUser(spec, defaults, nil, nil)
	}
	root, err := os.OpenRoot(rootfs)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	open := func(name string) io.Reader {
		f, err := root.Open(name)
		if err != nil {
			return nil
		}
		data, err := io.ReadAll(io.LimitReader(f, maxPasswdBytes))
		f.Close()
		if err != nil {
			return nil
		}
		return strings.NewReader(string(data))
	}
	passwd, group := open("etc/passwd"), open("etc/group")
	return user.GetExecUser(spec, defaults, passwd, group)
}

// applySecurity sets capabilities, privilege escalation, the read-only root,
// privileged mode and seccomp as containerd's CRI plugin does.
func applySecurity(g *generate.Generator, sc corev1.SecurityContext) error {
	privileged := sc.Privileged != nil && *sc.Privileged
	caps := append([]string(nil), defaultCaps...)
	if privileged {
		caps = allCaps()
	} else if sc.Capabilities != nil {
		var err error
		if caps, err = tweakCapabilities(caps, sc.Capabilities.Add, sc.Capabilities.Drop); err != nil {
			return err
		}
	}
	g.Config.Process.Capabilities = &specs.LinuxCapabilities{
		Bounding: caps, Effective: caps, Permitted: caps,
	}
	// Kubernetes sets no_new_privs only when allowPrivilegeEscalation is false.
	g.SetProcessNoNewPrivileges(sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation)
	g.SetRootReadonly(sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem)
	g.Config.Linux.Seccomp = nil
	if privileged {
		// All devices through the cgroup, /sys writable, nothing masked.
		g.Config.Linux.Resources.Devices = []specs.LinuxDeviceCgroup{{Allow: true, Access: "rwm"}}
		for i, m := range g.Config.Mounts {
			if m.Destination == "/sys" {
				g.Config.Mounts[i].Options = []string{"nosuid", "noexec", "nodev", "rw"}
			}
		}
		return nil
	}
	g.Config.Linux.MaskedPaths = append([]string(nil), defaultMaskedPaths...)
	g.Config.Linux.ReadonlyPaths = append([]string(nil), defaultReadonlyPaths...)
	if sc.SeccompProfile != nil && sc.SeccompProfile.Type == corev1.SeccompProfileTypeRuntimeDefault {
		g.Config.Linux.Seccomp = seccomp.DefaultProfile(g.Config)
	}
	return nil
}

// tweakCapabilities applies add and drop over the defaults, the way
// containerd does: ALL in add starts from every capability, ALL in drop
// starts from none, and the additions come last.
func tweakCapabilities(basics []string, add, drop []corev1.Capability) ([]string, error) {
	norm := func(list []corev1.Capability) ([]string, error) {
		var out []string
		for _, c := range list {
			n, err := capName(string(c))
			if err != nil {
				return nil, fmt.Errorf("capability %q: %w", c, err)
			}
			out = append(out, n)
		}
		return out, nil
	}
	adds, err := norm(add)
	if err != nil {
		return nil, err
	}
	drops, err := norm(drop)
	if err != nil {
		return nil, err
	}
	if slices.Contains(adds, "ALL") {
		basics = allCaps()
	}
	var out []string
	if !slices.Contains(drops, "ALL") {
		for _, c := range basics {
			if !slices.Contains(drops, c) {
				out = append(out, c)
			}
		}
	}
	for _, c := range adds {
		if c != "ALL" && !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	if out == nil {
		out = []string{}
	}
	return out, nil
}

func allCaps() []string {
	var out []string
	for _, c := range capability.ListKnown() {
		out = append(out, "CAP_"+strings.ToUpper(c.String()))
	}
	return out
}

// CPU conversions of the kubelet (pkg/kubelet/cm).
const (
	minShares      = 2
	maxShares      = 262144
	sharesPerCPU   = 1024
	milliCPUToCPU  = 1000
	quotaPeriod    = 100000
	minQuotaPeriod = 1000
)

func milliCPUToShares(milli int64) uint64 {
	if milli == 0 {
		return minShares
	}
	s := milli * sharesPerCPU / milliCPUToCPU
	if s < minShares {
		return minShares
	}
	if s > maxShares {
		return maxShares
	}
	return uint64(s)
}

func milliCPUToQuota(milli int64) int64 {
	if milli == 0 {
		return 0
	}
	q := milli * quotaPeriod / milliCPUToCPU
	if q < minQuotaPeriod {
		q = minQuotaPeriod
	}
	return q
}

// applyResources sets the cgroup limits as the kubelet asks containerd to:
// requests.cpu as shares, limits.cpu as a CFS quota, limits.memory as the
// memory limit (and, without swap, the memory+swap limit). A request left
// out defaults to the limit, as the API server defaults it.
func applyResources(g *generate.Generator, r corev1.ResourceRequirements) {
	cpuReq, hasReq := r.Requests[corev1.ResourceCPU]
	cpuLim, hasLim := r.Limits[corev1.ResourceCPU]
	if !hasReq && hasLim {
		cpuReq = cpuLim
	}
	g.SetLinuxResourcesCPUShares(milliCPUToShares(cpuReq.MilliValue()))
	if hasLim && cpuLim.MilliValue() > 0 {
		g.SetLinuxResourcesCPUPeriod(quotaPeriod)
		g.SetLinuxResourcesCPUQuota(milliCPUToQuota(cpuLim.MilliValue()))
	}
	if m, ok := r.Limits[corev1.ResourceMemory]; ok && m.Value() > 0 {
		g.SetLinuxResourcesMemoryLimit(m.Value())
		g.SetLinuxResourcesMemorySwap(m.Value())
	}
}
