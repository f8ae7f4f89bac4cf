package embedded

import (
	"fmt"
	"strings"

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
	annotationSandboxUID   = "io.kubernetes.cri.sandbox-uid"
	annotationSandboxID    = "io.kubernetes.cri.sandbox-id"
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
