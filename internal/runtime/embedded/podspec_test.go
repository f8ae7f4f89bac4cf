package embedded

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ckpt-dev/ckpt/internal/runtime"
)

func ptr[T any](v T) *T { return &v }

// imageRoot is an image root with an /etc/passwd and /etc/group.
func imageRoot(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	os.WriteFile(filepath.Join(root, "etc", "passwd"), []byte("root:x:0:0::/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\napp:x:1000:1001::/home/app:/bin/sh\n"), 0o644)
	os.WriteFile(filepath.Join(root, "etc", "group"), []byte("root:x:0:\nnogroup:x:65534:\napp:x:1001:\nextra:x:3000:app\n"), 0o644)
	return root
}

func specFor(t *testing.T, img Image, pod *corev1.Pod) (*specs.Spec, error) {
	t.Helper()
	rec := &record{ID: "c0ffee", Namespace: pod.Namespace, Pod: pod.Name, Name: pod.Spec.Containers[0].Name, Image: img.Name}
	return buildContainerSpec(specInput{
		Rec: rec, Pod: pod, Container: pod.Spec.Containers[0], Image: img, Rootfs: "/rootfs", CriuConfig: "/criu.conf",
		Sandbox: sandboxNS{ID: "sb", PausePid: 4242, Hosts: "/pod/etc-hosts", Hostname: "/pod/hostname", ResolvConf: "/pod/resolv.conf"},
		Volumes: map[string]string{"data": "/pod/volumes/data"}, TerminationLog: "/ctr/termination-log",
	})
}

func testPod(c corev1.Container, psc *corev1.PodSecurityContext) *corev1.Pod {
	if c.Name == "" {
		c.Name = "app"
	}
	if c.Image == "" {
		c.Image = "img"
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "uid-1"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{c}, SecurityContext: psc,
			Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}},
	}
}

func TestBuildContainerSpecUser(t *testing.T) {
	root := imageRoot(t)
	cases := []struct {
		name      string
		imageUser string
		ctr       *corev1.SecurityContext
		pod       *corev1.PodSecurityContext
		uid, gid  uint32
		gids      []uint32
		wantErr   string
	}{
		{name: "image default is root", uid: 0, gid: 0},
		{name: "image user by name", imageUser: "nobody", uid: 65534, gid: 65534},
		{name: "image user with groups", imageUser: "app", uid: 1000, gid: 1001, gids: []uint32{3000}},
		{name: "image uid:gid", imageUser: "77:88", uid: 77, gid: 88},
		{name: "unknown name", imageUser: "ghost", wantErr: "ghost"},
		{name: "runAsUser wins", imageUser: "nobody", ctr: &corev1.SecurityContext{RunAsUser: ptr(int64(1000))}, uid: 1000, gid: 1001, gids: []uint32{3000}},
		{name: "runAsUser unknown uid", ctr: &corev1.SecurityContext{RunAsUser: ptr(int64(4321))}, uid: 4321, gid: 0},
		{name: "runAsGroup", ctr: &corev1.SecurityContext{RunAsUser: ptr(int64(5)), RunAsGroup: ptr(int64(6))}, uid: 5, gid: 6},
		{name: "pod level", pod: &corev1.PodSecurityContext{RunAsUser: ptr(int64(9)), RunAsGroup: ptr(int64(10))}, uid: 9, gid: 10},
		{name: "container over pod", pod: &corev1.PodSecurityContext{RunAsUser: ptr(int64(9))}, ctr: &corev1.SecurityContext{RunAsUser: ptr(int64(11))}, uid: 11, gid: 0},
		{name: "supplemental and fsGroup", imageUser: "nobody", pod: &corev1.PodSecurityContext{SupplementalGroups: []int64{20, 21}, FSGroup: ptr(int64(30))}, uid: 65534, gid: 65534, gids: []uint32{20, 21, 30}},
		{name: "nonroot ok", imageUser: "65534", ctr: &corev1.SecurityContext{RunAsNonRoot: ptr(true)}, uid: 65534, gid: 65534},
		{name: "nonroot with root image", ctr: &corev1.SecurityContext{RunAsNonRoot: ptr(true)}, wantErr: "image will run as root"},
		{name: "nonroot with named user", imageUser: "nobody", ctr: &corev1.SecurityContext{RunAsNonRoot: ptr(true)}, wantErr: "non-numeric user (nobody)"},
		{name: "nonroot with runAsUser 0", ctr: &corev1.SecurityContext{RunAsNonRoot: ptr(true), RunAsUser: ptr(int64(0))}, wantErr: "runAsUser breaks non-root policy"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			img := Image{Name: "img", RootFS: root, Entrypoint: []string{"/bin/app"}, User: c.imageUser}
			s, err := specFor(t, img, testPod(corev1.Container{SecurityContext: c.ctr}, c.pod))
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("error %v, want %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			u := s.Process.User
			if u.UID != c.uid || u.GID != c.gid || !slices.Equal(u.AdditionalGids, c.gids) {
				t.Errorf("user %d:%d %v, want %d:%d %v", u.UID, u.GID, u.AdditionalGids, c.uid, c.gid, c.gids)
			}
		})
	}
}

// A symlinked /etc/passwd that points out of the image is not followed.
func TestResolveUserStaysInImage(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	os.Symlink("/etc/passwd", filepath.Join(root, "etc", "passwd"))
	if _, err := resolveUser(root, "root"); err == nil {
		t.Fatal("resolved a name through a symlink to the host's /etc/passwd")
	}
	if u, err := resolveUser(root, "0"); err != nil || u.Uid != 0 {
		t.Fatalf("numeric uid: %+v %v", u, err)
	}
}

func TestBuildContainerSpecSecurity(t *testing.T) {
	root := imageRoot(t)
	img := Image{Name: "img", RootFS: root, Entrypoint: []string{"/bin/app"}}
	cases := []struct {
		name  string
		sc    *corev1.SecurityContext
		check func(t *testing.T, s *specs.Spec)
	}{
		{"defaults as containerd", nil, func(t *testing.T, s *specs.Spec) {
			if !slices.Equal(s.Process.Capabilities.Bounding, defaultCaps) || len(s.Process.Capabilities.Inheritable) != 0 {
				t.Errorf("caps %v", s.Process.Capabilities)
			}
			if s.Process.NoNewPrivileges || s.Root.Readonly || s.Linux.Seccomp != nil {
				t.Errorf("nnp %v ro %v seccomp %v", s.Process.NoNewPrivileges, s.Root.Readonly, s.Linux.Seccomp != nil)
			}
			if !slices.Contains(s.Linux.MaskedPaths, "/proc/kcore") || !slices.Contains(s.Linux.ReadonlyPaths, "/proc/sys") {
				t.Errorf("masked %v ro %v", s.Linux.MaskedPaths, s.Linux.ReadonlyPaths)
			}
			if len(s.Process.Rlimits) != 1 || s.Process.Rlimits[0].Type != "RLIMIT_NOFILE" || s.Process.Rlimits[0].Hard != 1024 {
				t.Errorf("rlimits %v", s.Process.Rlimits)
			}
		}},
		{"add and drop", &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN", "CAP_SYS_TIME"}, Drop: []corev1.Capability{"chown", "NET_RAW"}}}, func(t *testing.T, s *specs.Spec) {
			c := s.Process.Capabilities.Effective
			if !slices.Contains(c, "CAP_NET_ADMIN") || !slices.Contains(c, "CAP_SYS_TIME") || slices.Contains(c, "CAP_CHOWN") || slices.Contains(c, "CAP_NET_RAW") || !slices.Contains(c, "CAP_KILL") {
				t.Errorf("caps %v", c)
			}
		}},
		{"drop all add one", &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_BIND_SERVICE"}, Drop: []corev1.Capability{"ALL"}}}, func(t *testing.T, s *specs.Spec) {
			if !slices.Equal(s.Process.Capabilities.Bounding, []string{"CAP_NET_BIND_SERVICE"}) {
				t.Errorf("caps %v", s.Process.Capabilities.Bounding)
			}
		}},
		{"add all", &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"ALL"}}}, func(t *testing.T, s *specs.Spec) {
			if !slices.Contains(s.Process.Capabilities.Bounding, "CAP_SYS_ADMIN") {
				t.Errorf("caps %v", s.Process.Capabilities.Bounding)
			}
		}},
		{"no escalation, read-only root, RuntimeDefault", &corev1.SecurityContext{AllowPrivilegeEscalation: ptr(false), ReadOnlyRootFilesystem: ptr(true),
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}}, func(t *testing.T, s *specs.Spec) {
			if !s.Process.NoNewPrivileges || !s.Root.Readonly || s.Linux.Seccomp == nil || s.Linux.Seccomp.DefaultAction != specs.ActErrno {
				t.Errorf("nnp %v ro %v seccomp %+v", s.Process.NoNewPrivileges, s.Root.Readonly, s.Linux.Seccomp)
			}
		}},
		{"privileged", &corev1.SecurityContext{Privileged: ptr(true), SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}}, func(t *testing.T, s *specs.Spec) {
			if !slices.Contains(s.Process.Capabilities.Bounding, "CAP_SYS_ADMIN") || len(s.Linux.MaskedPaths) != 0 || s.Linux.Seccomp != nil {
				t.Errorf("privileged spec: caps %v masked %v seccomp %v", s.Process.Capabilities.Bounding, s.Linux.MaskedPaths, s.Linux.Seccomp != nil)
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, err := specFor(t, img, testPod(corev1.Container{SecurityContext: c.sc}, nil))
			if err != nil {
				t.Fatal(err)
			}
			c.check(t, s)
		})
	}
}

func TestBuildContainerSpecSandboxAndMounts(t *testing.T) {
	img := Image{Name: "img", RootFS: imageRoot(t), Entrypoint: []string{"/bin/app"}, Cmd: []string{"serve"}, Env: []string{"A=image", "B=image"}, WorkingDir: "/srv"}
	c := corev1.Container{
		Args: []string{"run"}, Env: []corev1.EnvVar{{Name: "B", Value: "pod"}},
		VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/data", ReadOnly: true, SubPath: "sub"}},
	}
	s, err := specFor(t, img, testPod(c, nil))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(s.Process.Args, []string{"/bin/app", "run"}) || s.Process.Cwd != "/srv" {
		t.Errorf("args %v cwd %s", s.Process.Args, s.Process.Cwd)
	}
	if !slices.Contains(s.Process.Env, "A=image") || !slices.Contains(s.Process.Env, "B=pod") || slices.Contains(s.Process.Env, "B=image") {
		t.Errorf("env %v", s.Process.Env)
	}
	ns := map[specs.LinuxNamespaceType]string{}
	for _, n := range s.Linux.Namespaces {
		ns[n.Type] = n.Path
	}
	want := map[specs.LinuxNamespaceType]string{specs.PIDNamespace: "", specs.MountNamespace: "",
		specs.NetworkNamespace: "/proc/4242/ns/net", specs.IPCNamespace: "/proc/4242/ns/ipc", specs.UTSNamespace: "/proc/4242/ns/uts"}
	if len(ns) != len(want) {
		t.Errorf("namespaces %v", ns)
	}
	for k, v := range want {
		if p, ok := ns[k]; !ok || p != v {
			t.Errorf("namespace %s = %q (set %v), want %q", k, p, ok, v)
		}
	}
	if s.Hostname != "" || s.Hooks != nil {
		t.Errorf("hostname %q hooks %v (the sandbox owns the UTS namespace; no hooks ever)", s.Hostname, s.Hooks)
	}
	mounts := map[string]specs.Mount{}
	for _, m := range s.Mounts {
		mounts[m.Destination] = m
	}
	if m := mounts["/data"]; m.Source != "/pod/volumes/data/sub" || !slices.Contains(m.Options, "ro") {
		t.Errorf("volume mount %+v", m)
	}
	for dst, src := range map[string]string{"/etc/hosts": "/pod/etc-hosts", "/etc/hostname": "/pod/hostname", "/etc/resolv.conf": "/pod/resolv.conf", "/dev/termination-log": "/ctr/termination-log"} {
		if mounts[dst].Source != src {
			t.Errorf("%s mounted from %q, want %q", dst, mounts[dst].Source, src)
		}
	}
	if a := s.Annotations; a[annotationSandboxName] != "p" || a[annotationSandboxNS] != "ns" || a[annotationCtrName] != "app" || a[annotationSandboxID] != "sb" {
		t.Errorf("annotations %v", a)
	}
	if s.Linux.CgroupsPath != "/ckpt/c0ffee" {
		t.Errorf("cgroup %s", s.Linux.CgroupsPath)
	}
}

func TestBuildContainerSpecResources(t *testing.T) {
	img := Image{Name: "img", RootFS: imageRoot(t), Entrypoint: []string{"/bin/app"}}
	q := resource.MustParse
	cases := []struct {
		name          string
		r             corev1.ResourceRequirements
		shares        uint64
		quota, memory int64
	}{
		{"best effort", corev1.ResourceRequirements{}, 2, 0, 0},
		{"request", corev1.ResourceRequirements{Requests: corev1.ResourceList{"cpu": q("250m")}}, 256, 0, 0},
		{"limit defaults request", corev1.ResourceRequirements{Limits: corev1.ResourceList{"cpu": q("1500m"), "memory": q("64Mi")}}, 1536, 150000, 64 << 20},
		{"both", corev1.ResourceRequirements{Requests: corev1.ResourceList{"cpu": q("100m")}, Limits: corev1.ResourceList{"cpu": q("2")}}, 102, 200000, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, err := specFor(t, img, testPod(corev1.Container{Resources: c.r}, nil))
			if err != nil {
				t.Fatal(err)
			}
			r := s.Linux.Resources
			if r.CPU == nil || r.CPU.Shares == nil || *r.CPU.Shares != c.shares {
				t.Errorf("shares %+v, want %d", r.CPU, c.shares)
			}
			var quota int64
			if r.CPU.Quota != nil {
				quota = *r.CPU.Quota
			}
			if quota != c.quota {
				t.Errorf("quota %d, want %d", quota, c.quota)
			}
			var mem int64
			if r.Memory != nil && r.Memory.Limit != nil {
				mem = *r.Memory.Limit
				if *r.Memory.Swap != mem {
					t.Errorf("swap %d, want the memory limit", *r.Memory.Swap)
				}
			}
			if mem != c.memory {
				t.Errorf("memory %d, want %d", mem, c.memory)
			}
		})
	}
}

func TestHostNetworkSpec(t *testing.T) {
	img := Image{Name: "img", RootFS: imageRoot(t), Entrypoint: []string{"/bin/app"}}
	pod := testPod(corev1.Container{}, nil)
	pod.Spec.HostNetwork = true
	rec := &record{ID: "x", Name: "app"}
	s, err := buildContainerSpec(specInput{Rec: rec, Pod: pod, Container: pod.Spec.Containers[0], Image: img, Sandbox: sandboxNS{PausePid: 7, HostNetwork: true}})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range s.Linux.Namespaces {
		if n.Type == specs.NetworkNamespace || n.Type == specs.UTSNamespace {
			t.Errorf("hostNetwork container has a %s namespace", n.Type)
		}
	}
}

func TestHostsFileAndHostname(t *testing.T) {
	pod := testPod(corev1.Container{}, nil)
	pod.Spec.Hostname, pod.Spec.Subdomain = "web", "sub"
	host, domain := podHostname(pod, "cluster.local")
	if host != "web" || domain != "sub.ns.svc.cluster.local" {
		t.Errorf("hostname %q domain %q", host, domain)
	}
	b, err := hostsFile(pod, "cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(b), "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n") || !strings.Contains(string(b), "127.0.0.1\tweb.sub.ns.svc.cluster.local\tweb\n") {
		t.Errorf("hosts file:\n%s", b)
	}
	pod.Spec.Hostname, pod.Name = "", strings.Repeat("a", 70)
	if h, d := podHostname(pod, ""); len(h) != 63 || d != "" {
		t.Errorf("long pod name gave hostname %q domain %q", h, d)
	}
}

func TestRestorePolicy(t *testing.T) {
	base := func() *corev1.Pod { return testPod(corev1.Container{}, nil) }
	cases := []struct {
		name   string
		mutate func(*corev1.Pod)
		policy RestorePolicy
		want   string
	}{
		{"plain pod", func(*corev1.Pod) {}, RestorePolicy{}, ""},
		{"hostNetwork", func(p *corev1.Pod) { p.Spec.HostNetwork = true }, RestorePolicy{}, "spec.hostNetwork is refused on restore (allow it with ckpt serve --restore-allow-host-network)"},
		{"hostNetwork allowed", func(p *corev1.Pod) { p.Spec.HostNetwork = true }, RestorePolicy{AllowHostNetwork: true}, ""},
		{"hostPath", func(p *corev1.Pod) {
			p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "h", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}})
		}, RestorePolicy{}, "spec.volumes[1].hostPath (/) is refused on restore (allow it with ckpt serve --restore-allow-host-path)"},
		{"privileged", func(p *corev1.Pod) {
			p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{Privileged: ptr(true)}
		}, RestorePolicy{AllowAddedCapabilities: true}, "spec.containers[0].securityContext.privileged is refused on restore (allow it with ckpt serve --restore-allow-privileged)"},
		{"added caps", func(p *corev1.Pod) {
			p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"SYS_ADMIN"}}}
		}, RestorePolicy{AllowPrivileged: true}, "--restore-allow-added-capabilities"},
		{"dropped caps are fine", func(p *corev1.Pod) {
			p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}}
		}, RestorePolicy{}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := base()
			c.mutate(p)
			err := c.policy.Check(p)
			if c.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.want) || !errors.Is(err, runtime.ErrInvalid) {
				t.Fatalf("error %v, want ErrInvalid with %q", err, c.want)
			}
		})
	}
}

// The pod.json ckpt writes is read back by the manifest rules unchanged.
func TestPodJSONRoundTrip(t *testing.T) {
	m, err := ParseManifest([]byte(goodManifest + "    resources:\n      limits:\n        memory: 64Mi\n    ports:\n    - containerPort: 80\n      hostPort: 8080\n"))
	if err != nil {
		t.Fatal(err)
	}
	pod, _ := StaticPod(m, "node1")
	if pod.Name != "counter-node1" || pod.UID == "" || pod.Annotations[annotationConfigSource] != "file" {
		t.Fatalf("static pod %s uid %s annotations %v", pod.Name, pod.UID, pod.Annotations)
	}
	data, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseManifest(data)
	if err != nil {
		t.Fatalf("pod.json refused: %v\n%s", err, data)
	}
	if back.Name != pod.Name || back.Spec.Containers[0].Ports[0].HostPort != 8080 {
		t.Errorf("round trip changed the pod: %+v", back)
	}
	// The hash follows the manifest, not the time it was seen.
	again, h2 := StaticPod(m, "node1")
	if _, h1 := StaticPod(m, "node1"); h1 != h2 || again.UID != pod.UID {
		t.Error("the same manifest hashed differently")
	}
	m.Spec.Containers[0].Image = "other"
	if _, h3 := StaticPod(m, "node1"); h3 == h2 {
		t.Error("a changed manifest kept its hash")
	}
}

func TestRestartBackoff(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var b *backoff
	var delays []time.Duration
	now := t0
	for i := 0; i < 8; i++ {
		finished := now
		at, next := nextRestart(b, finished, now)
		delays = append(delays, at.Sub(finished))
		b, now = &next, at
	}
	want := []time.Duration{0, 10 * time.Second, 20 * time.Second, 40 * time.Second, 80 * time.Second, 160 * time.Second, 5 * time.Minute, 5 * time.Minute}
	if !slices.Equal(delays, want) {
		t.Errorf("delays %v, want %v", delays, want)
	}
	// Ten minutes without a restart forget the back-off.
	if at, _ := nextRestart(b, now.Add(11*time.Minute), now.Add(11*time.Minute)); !at.Equal(now.Add(11 * time.Minute)) {
		t.Errorf("back-off not reset after 10 min: restart at %v", at)
	}
	for _, c := range []struct {
		policy corev1.RestartPolicy
		code   int
		want   bool
	}{{"Always", 0, true}, {"Always", 1, true}, {"OnFailure", 0, false}, {"OnFailure", 2, true}, {"Never", 1, false}, {"", 1, false}} {
		if got := shouldRestart(c.policy, c.code); got != c.want {
			t.Errorf("shouldRestart(%q, %d) = %v", c.policy, c.code, got)
		}
	}
}
