package embedded

import (
	"fmt"
	"net"
	"path"
	"strings"

	"github.com/moby/sys/capability"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
)

// validatePodSpec checks the values of the fields ckpt supports. Errors
// carry the field path and the reason, as the API server's do.
func validatePodSpec(spec *corev1.PodSpec) error {
	switch spec.RestartPolicy {
	case "", corev1.RestartPolicyNever, corev1.RestartPolicyAlways, corev1.RestartPolicyOnFailure:
	default:
		return fmt.Errorf("spec.restartPolicy %q: must be Always, OnFailure or Never", spec.RestartPolicy)
	}
	if h := spec.Hostname; h != "" {
		if errs := validation.IsDNS1123Label(h); len(errs) > 0 {
			return fmt.Errorf("spec.hostname %q: %s", h, strings.Join(errs, "; "))
		}
	}
	if d := spec.Subdomain; d != "" {
		if errs := validation.IsDNS1123Label(d); len(errs) > 0 {
			return fmt.Errorf("spec.subdomain %q: %s", d, strings.Join(errs, "; "))
		}
	}
	if g := spec.TerminationGracePeriodSeconds; g != nil && *g < 0 {
		return fmt.Errorf("spec.terminationGracePeriodSeconds %d: must be >= 0", *g)
	}
	if err := validatePodSecurity(spec.SecurityContext); err != nil {
		return err
	}
	vols, err := validateVolumes(spec.Volumes)
	if err != nil {
		return err
	}
	if len(spec.Containers) == 0 {
		return fmt.Errorf("spec.containers is empty")
	}
	seen := map[string]bool{}
	hostPorts := map[string]string{}
	type entry struct {
		f string
		c *corev1.Container
	}
	var all []entry
	for i := range spec.InitContainers {
		all = append(all, entry{fmt.Sprintf("spec.initContainers[%d]", i), &spec.InitContainers[i]})
	}
	for i := range spec.Containers {
		all = append(all, entry{fmt.Sprintf("spec.containers[%d]", i), &spec.Containers[i]})
	}
	for _, e := range all {
		c, f := e.c, e.f
		if c.Name == "" {
			return fmt.Errorf("%s.name is required", f)
		}
		if errs := validation.IsDNS1123Label(c.Name); len(errs) > 0 {
			return fmt.Errorf("%s.name %q: %s", f, c.Name, strings.Join(errs, "; "))
		}
		if seen[c.Name] {
			return fmt.Errorf("%s.name: duplicate container name %q in spec.containers", f, c.Name)
		}
		seen[c.Name] = true
		if c.Image == "" {
			return fmt.Errorf("%s.image is required", f)
		}
		for _, e := range c.Env {
			if errs := validation.IsEnvVarName(e.Name); len(errs) > 0 {
				return fmt.Errorf("%s.env %q: %s", f, e.Name, strings.Join(errs, "; "))
			}
		}
		if c.WorkingDir != "" && !path.IsAbs(c.WorkingDir) {
			return fmt.Errorf("%s.workingDir %q: must be an absolute path", f, c.WorkingDir)
		}
		if p := c.TerminationMessagePath; p != "" && !path.IsAbs(p) {
			return fmt.Errorf("%s.terminationMessagePath %q: must be an absolute path", f, p)
		}
		if err := validatePorts(f, c.Ports, hostPorts, spec.HostNetwork); err != nil {
			return err
		}
		if err := validateMounts(f, c.VolumeMounts, vols); err != nil {
			return err
		}
		if err := validateResources(f, c.Resources); err != nil {
			return err
		}
		if err := validateSecurity(f, c.SecurityContext); err != nil {
			return err
		}
		for kind, p := range map[string]*corev1.Probe{"livenessProbe": c.LivenessProbe, "readinessProbe": c.ReadinessProbe} {
			if err := validateProbe(f+"."+kind, p, kind == "livenessProbe"); err != nil {
				return err
			}
		}
	}
	return nil
}

func validatePorts(f string, ports []corev1.ContainerPort, hostPorts map[string]string, hostNetwork bool) error {
	names := map[string]bool{}
	for j, p := range ports {
		pf := fmt.Sprintf("%s.ports[%d]", f, j)
		if p.ContainerPort < 1 || p.ContainerPort > 65535 {
			return fmt.Errorf("%s.containerPort %d: must be between 1 and 65535", pf, p.ContainerPort)
		}
		if p.HostPort < 0 || p.HostPort > 65535 {
			return fmt.Errorf("%s.hostPort %d: must be between 1 and 65535", pf, p.HostPort)
		}
		if p.Name != "" {
			if errs := validation.IsValidPortName(p.Name); len(errs) > 0 {
				return fmt.Errorf("%s.name %q: %s", pf, p.Name, strings.Join(errs, "; "))
			}
			if names[p.Name] {
				return fmt.Errorf("%s.name %q: duplicate port name", pf, p.Name)
			}
			names[p.Name] = true
		}
		switch p.Protocol {
		case "", corev1.ProtocolTCP, corev1.ProtocolUDP:
		default:
			return fmt.Errorf("%s.protocol %q: ckpt supports TCP and UDP", pf, p.Protocol)
		}
		if p.HostIP != "" {
			if net.ParseIP(p.HostIP) == nil {
				return fmt.Errorf("%s.hostIP %q: not an IP address", pf, p.HostIP)
			}
			if p.HostPort == 0 {
				return fmt.Errorf("%s.hostIP %q: needs a hostPort", pf, p.HostIP)
			}
		}
		if hostNetwork && p.HostPort != 0 && p.HostPort != p.ContainerPort {
			return fmt.Errorf("%s.hostPort %d: must equal containerPort %d with spec.hostNetwork", pf, p.HostPort, p.ContainerPort)
		}
		if p.HostPort != 0 {
			key := fmt.Sprintf("%s/%d", protocolOf(p), p.HostPort)
			if other, dup := hostPorts[key]; dup {
				return fmt.Errorf("%s.hostPort %d/%s: already used by %s", pf, p.HostPort, protocolOf(p), other)
			}
			hostPorts[key] = pf
		}
	}
	return nil
}

func protocolOf(p corev1.ContainerPort) corev1.Protocol {
	if p.Protocol == "" {
		return corev1.ProtocolTCP
	}
	return p.Protocol
}

// hostPathTypes are the hostPath types the kubelet checks.
var hostPathTypes = map[corev1.HostPathType]bool{
	corev1.HostPathUnset: true, corev1.HostPathDirectoryOrCreate: true, corev1.HostPathDirectory: true,
	corev1.HostPathFileOrCreate: true, corev1.HostPathFile: true, corev1.HostPathSocket: true,
	corev1.HostPathCharDev: true, corev1.HostPathBlockDev: true,
}

func validateVolumes(vols []corev1.Volume) (map[string]bool, error) {
	names := map[string]bool{}
	for i, v := range vols {
		f := fmt.Sprintf("spec.volumes[%d]", i)
		if errs := validation.IsDNS1123Label(v.Name); len(errs) > 0 {
			return nil, fmt.Errorf("%s.name %q: %s", f, v.Name, strings.Join(errs, "; "))
		}
		if names[v.Name] {
			return nil, fmt.Errorf("%s.name %q: duplicate volume name", f, v.Name)
		}
		names[v.Name] = true
		switch {
		case v.EmptyDir != nil && v.HostPath != nil:
			return nil, fmt.Errorf("%s: may not specify more than one volume type", f)
		case v.EmptyDir != nil:
			switch v.EmptyDir.Medium {
			case corev1.StorageMediumDefault, corev1.StorageMediumMemory:
			default:
				return nil, fmt.Errorf("%s.emptyDir.medium %q: ckpt supports \"\" and Memory", f, v.EmptyDir.Medium)
			}
			if l := v.EmptyDir.SizeLimit; l != nil && l.Sign() < 0 {
				return nil, fmt.Errorf("%s.emptyDir.sizeLimit %s: must not be negative", f, l.String())
			}
		case v.HostPath != nil:
			p := v.HostPath.Path
			if p == "" || !path.IsAbs(p) {
				return nil, fmt.Errorf("%s.hostPath.path %q: must be an absolute path", f, p)
			}
			if path.Clean(p) != p || strings.Contains(p, "/../") {
				return nil, fmt.Errorf("%s.hostPath.path %q: must be a clean path", f, p)
			}
			if t := v.HostPath.Type; t != nil && !hostPathTypes[*t] {
				return nil, fmt.Errorf("%s.hostPath.type %q: unknown type", f, *t)
			}
		default:
			return nil, fmt.Errorf("%s: a volume type is required (ckpt supports emptyDir and hostPath)", f)
		}
	}
	return names, nil
}

func validateMounts(f string, mounts []corev1.VolumeMount, vols map[string]bool) error {
	seen := map[string]bool{}
	for j, m := range mounts {
		mf := fmt.Sprintf("%s.volumeMounts[%d]", f, j)
		if !vols[m.Name] {
			return fmt.Errorf("%s.name %q: not found in spec.volumes", mf, m.Name)
		}
		if !path.IsAbs(m.MountPath) {
			return fmt.Errorf("%s.mountPath %q: must be an absolute path", mf, m.MountPath)
		}
		if clean := path.Clean(m.MountPath); seen[clean] {
			return fmt.Errorf("%s.mountPath %q: must be unique", mf, m.MountPath)
		} else {
			seen[clean] = true
		}
		if sp := m.SubPath; sp != "" {
			if path.IsAbs(sp) {
				return fmt.Errorf("%s.subPath %q: must be a relative path", mf, sp)
			}
			for _, part := range strings.Split(sp, "/") {
				if part == ".." {
					return fmt.Errorf("%s.subPath %q: must not contain '..'", mf, sp)
				}
			}
		}
	}
	return nil
}

func validateResources(f string, r corev1.ResourceRequirements) error {
	check := func(kind string, l corev1.ResourceList) error {
		for name, q := range l {
			if q.Sign() < 0 {
				return fmt.Errorf("%s.resources.%s.%s %s: must be greater than or equal to 0", f, kind, name, q.String())
			}
		}
		return nil
	}
	if err := check("limits", r.Limits); err != nil {
		return err
	}
	if err := check("requests", r.Requests); err != nil {
		return err
	}
	for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		lim, hasLim := r.Limits[name]
		req, hasReq := r.Requests[name]
		if hasLim && hasReq && req.Cmp(lim) > 0 {
			return fmt.Errorf("%s.resources.requests.%s %s: must be less than or equal to %s limit %s", f, name, req.String(), name, lim.String())
		}
	}
	if m, ok := r.Limits[corev1.ResourceMemory]; ok && m.Sign() > 0 && m.Value() < minMemoryLimit {
		return fmt.Errorf("%s.resources.limits.memory %s: ckpt needs at least %s", f, m.String(), resource.NewQuantity(minMemoryLimit, resource.BinarySI))
	}
	return nil
}

// minMemoryLimit keeps runc and CRIU able to run in the container's cgroup.
const minMemoryLimit = 6 << 20

func validatePodSecurity(sc *corev1.PodSecurityContext) error {
	if sc == nil {
		return nil
	}
	if err := validateIDs("spec.securityContext", sc.RunAsUser, sc.RunAsGroup); err != nil {
		return err
	}
	for i, g := range sc.SupplementalGroups {
		if g < 0 || g > 1<<31-1 {
			return fmt.Errorf("spec.securityContext.supplementalGroups[%d] %d: must be between 0 and 2147483647", i, g)
		}
	}
	if g := sc.FSGroup; g != nil && (*g < 0 || *g > 1<<31-1) {
		return fmt.Errorf("spec.securityContext.fsGroup %d: must be between 0 and 2147483647", *g)
	}
	return validateSeccomp("spec.securityContext", sc.SeccompProfile)
}

func validateSecurity(f string, sc *corev1.SecurityContext) error {
	if sc == nil {
		return nil
	}
	f += ".securityContext"
	if err := validateIDs(f, sc.RunAsUser, sc.RunAsGroup); err != nil {
		return err
	}
	if sc.Capabilities != nil {
		for kind, list := range map[string][]corev1.Capability{"add": sc.Capabilities.Add, "drop": sc.Capabilities.Drop} {
			for i, c := range list {
				if _, err := capName(string(c)); err != nil {
					return fmt.Errorf("%s.capabilities.%s[%d] %q: %v", f, kind, i, c, err)
				}
			}
		}
	}
	if sc.Privileged != nil && *sc.Privileged && sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation {
		return fmt.Errorf("%s.allowPrivilegeEscalation: cannot be false when privileged is true", f)
	}
	return validateSeccomp(f, sc.SeccompProfile)
}

func validateIDs(f string, uid, gid *int64) error {
	if uid != nil && (*uid < 0 || *uid > 1<<31-1) {
		return fmt.Errorf("%s.runAsUser %d: must be between 0 and 2147483647", f, *uid)
	}
	if gid != nil && (*gid < 0 || *gid > 1<<31-1) {
		return fmt.Errorf("%s.runAsGroup %d: must be between 0 and 2147483647", f, *gid)
	}
	return nil
}

func validateSeccomp(f string, p *corev1.SeccompProfile) error {
	if p == nil {
		return nil
	}
	switch p.Type {
	case corev1.SeccompProfileTypeRuntimeDefault, corev1.SeccompProfileTypeUnconfined:
		return nil
	case corev1.SeccompProfileTypeLocalhost:
		return fmt.Errorf("%s.seccompProfile.type Localhost is not supported (use RuntimeDefault or Unconfined)", f)
	default:
		return fmt.Errorf("%s.seccompProfile.type %q: must be RuntimeDefault, Unconfined or Localhost", f, p.Type)
	}
}

// capName turns a Kubernetes capability name (NET_ADMIN, or CAP_NET_ADMIN
// as containerd also accepts) into the OCI name, or "ALL".
func capName(c string) (string, error) {
	u := strings.ToUpper(c)
	if u == "ALL" {
		return u, nil
	}
	u = "CAP_" + strings.TrimPrefix(u, "CAP_")
	for _, known := range capability.ListKnown() {
		if "CAP_"+strings.ToUpper(known.String()) == u {
			return u, nil
		}
	}
	return "", fmt.Errorf("unknown capability")
}

func validateProbe(f string, p *corev1.Probe, liveness bool) error {
	if p == nil {
		return nil
	}
	n := 0
	for _, set := range []bool{p.Exec != nil, p.HTTPGet != nil, p.TCPSocket != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		return fmt.Errorf("%s: must have exactly one of exec, httpGet and tcpSocket", f)
	}
	if p.Exec != nil && len(p.Exec.Command) == 0 {
		return fmt.Errorf("%s.exec.command: required", f)
	}
	checkPort := func(pf string, port intstr.IntOrString) error {
		if port.Type != intstr.Int {
			return fmt.Errorf("%s %q: named ports are not supported (give the number)", pf, port.String())
		}
		if v := port.IntValue(); v < 1 || v > 65535 {
			return fmt.Errorf("%s %d: must be between 1 and 65535", pf, v)
		}
		return nil
	}
	if p.HTTPGet != nil {
		if err := checkPort(f+".httpGet.port", p.HTTPGet.Port); err != nil {
			return err
		}
		if p.HTTPGet.Path != "" && !strings.HasPrefix(p.HTTPGet.Path, "/") {
			return fmt.Errorf("%s.httpGet.path %q: must start with /", f, p.HTTPGet.Path)
		}
	}
	if p.TCPSocket != nil {
		if err := checkPort(f+".tcpSocket.port", p.TCPSocket.Port); err != nil {
			return err
		}
	}
	for name, v := range map[string]int32{"initialDelaySeconds": p.InitialDelaySeconds, "periodSeconds": p.PeriodSeconds,
		"timeoutSeconds": p.TimeoutSeconds, "failureThreshold": p.FailureThreshold, "successThreshold": p.SuccessThreshold} {
		if v < 0 {
			return fmt.Errorf("%s.%s %d: must be greater than or equal to 0", f, name, v)
		}
	}
	if liveness && p.SuccessThreshold > 1 {
		return fmt.Errorf("%s.successThreshold %d: must be 1 for a liveness probe", f, p.SuccessThreshold)
	}
	return nil
}
