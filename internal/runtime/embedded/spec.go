package embedded

import (
	"fmt"
	"path"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	corev1 "k8s.io/api/core/v1"
)

// Annotations that checkpointctl reads to name the container, pod and
// namespace. Anything other than "libpod" or "cri-o" as io.container.manager
// is read the way containerd writes it.
const (
	annotationManager      = "io.container.manager"
	annotationCtrName      = "io.kubernetes.cri.container-name"
	annotationCtrType      = "io.kubernetes.cri.container-type"
	annotationSandboxName  = "io.kubernetes.cri.sandbox-name"
	annotationSandboxNS    = "io.kubernetes.cri.sandbox-namespace"
	annotationImageName    = "io.kubernetes.cri.image-name"
	annotationCriuConfig   = "org.criu.config"
	managerName            = "ckpt"
	defaultPath            = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	defaultContainerCgroup = "/ckpt"
)

var defaultCaps = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
	"CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
	"CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

// processArgs applies the Kubernetes rules for command and args over the
// image's entrypoint and cmd.
func processArgs(img Image, c corev1.Container) ([]string, error) {
	var args []string
	switch {
	case len(c.Command) > 0:
		args = append(append(args, c.Command...), c.Args...)
	case len(c.Args) > 0:
		args = append(append(args, img.Entrypoint...), c.Args...)
	default:
		args = append(append(args, img.Entrypoint...), img.Cmd...)
	}
	if len(args) == 0 {
		return nil, fmt.Errorf("no command: the image has no entrypoint or cmd and the container sets no command")
	}
	return args, nil
}

// mergeEnv returns the image's environment overridden by the container's.
func mergeEnv(imageEnv []string, env []corev1.EnvVar) []string {
	out := []string{}
	index := map[string]int{}
	set := func(kv string) {
		k, _, _ := strings.Cut(kv, "=")
		if i, ok := index[k]; ok {
			out[i] = kv
			return
		}
		index[k] = len(out)
		out = append(out, kv)
	}
	set("PATH=" + defaultPath)
	for _, kv := range imageEnv {
		set(kv)
	}
	for _, e := range env {
		set(e.Name + "=" + e.Value)
	}
	return out
}

// buildSpec returns the OCI runtime spec of one container.
func buildSpec(rec *record, img Image, c corev1.Container, rootfs, criuConfig string) (*specs.Spec, error) {
	args, err := processArgs(img, c)
	if err != nil {
		return nil, err
	}
	cwd := c.WorkingDir
	if cwd == "" {
		cwd = img.WorkingDir
	}
	if cwd == "" {
		cwd = "/"
	}
	if !path.IsAbs(cwd) {
		return nil, fmt.Errorf("workingDir %q is not an absolute path", cwd)
	}
	caps := append([]string(nil), defaultCaps...)
	s := &specs.Spec{
		Version: specs.Version,
		Process: &specs.Process{
			Args: args,
			Env:  mergeEnv(img.Env, c.Env),
			Cwd:  cwd,
			Capabilities: &specs.LinuxCapabilities{
				Bounding: caps, Effective: caps, Permitted: caps,
			},
			Rlimits:         []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 1024, Soft: 1024}},
			NoNewPrivileges: true,
		},
		Root:     &specs.Root{Path: rootfs},
		Hostname: rec.Pod,
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
			{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
		},
		Annotations: map[string]string{
			annotationManager:     managerName,
			annotationCtrName:     rec.Name,
			annotationCtrType:     "container",
			annotationSandboxName: rec.Pod,
			annotationSandboxNS:   rec.Namespace,
			annotationImageName:   rec.Image,
			annotationCriuConfig:  criuConfig,
		},
		Linux: &specs.Linux{
			CgroupsPath: path.Join(defaultContainerCgroup, rec.ID),
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace}, {Type: specs.MountNamespace}, {Type: specs.IPCNamespace},
				{Type: specs.UTSNamespace}, {Type: specs.NetworkNamespace},
			},
			MaskedPaths: []string{
				"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
				"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
			},
			ReadonlyPaths: []string{
				"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
			},
		},
	}
	return s, nil
}
