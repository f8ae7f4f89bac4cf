package embedded

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	corev1 "k8s.io/api/core/v1"

	"github.com/ckpt-dev/ckpt/internal/archive"
	"github.com/ckpt-dev/ckpt/internal/runtime"
)

// The external mounts of the containerd and Podman fixtures are all ones a
// restored pod provides; what each needs beyond a Pod's spec is found.
func TestArchiveExternalMounts(t *testing.T) {
	cases := []struct {
		fixture string
		want    podBinds
	}{
		{"containerd-2.4.2-cri-counter.tar", podBinds{Shm: true, Cgroup: true, SharePID: true, RootMode: 0o755}},
		{"podman-4.3.1-export-counter.tar", podBinds{Shm: true, ContainerEnv: true, Cgroup: true, RootMode: 0o555}},
	}
	for _, c := range cases {
		t.Run(c.fixture, func(t *testing.T) {
			f, err := os.Open(filepath.Join("..", "..", "archive", "testdata", c.fixture))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			dir := t.TempDir()
			if _, err := archive.Extract(f, dir, archive.DefaultLimits(), nil); err != nil {
				t.Fatal(err)
			}
			root, err := os.OpenRoot(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer root.Close()
			got, err := archiveExternalMounts(root, "")
			if err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Errorf("binds %+v, want %+v", got, c.want)
			}
		})
	}
}

func TestExternalMountAllowlist(t *testing.T) {
	cases := []struct {
		mp, key string
		ok      bool
	}{
		{"/etc/hosts", "/etc/hosts", true},
		{"/etc/hostname", "/etc/hostname", true},
		{"/etc/resolv.conf", "/etc/resolv.conf", true},
		{"/dev/termination-log", "/dev/termination-log", true},
		{"/custom/term", "/custom/term", true},
		{"/dev/shm", "/dev/shm", true},
		{"/run/.containerenv", "/run/.containerenv", true},
		{"/sys/fs/cgroup/memory", "/sys/fs/cgroup/memory", true},
		{"/proc/keys", "/dev/null", true},
		{"/etc/passwd", "/dev/null", false},
		{"/data", "/data", false},
		{"/var/run/secrets/kubernetes.io/serviceaccount", "/var/run/secrets/kubernetes.io/serviceaccount", false},
		{"/etc/hosts", "/host/etc/hosts", false},
		{"/sys/fs/cgroup/a/b", "/sys/fs/cgroup/a/b", false},
	}
	for _, c := range cases {
		var b podBinds
		err := b.allow(c.mp, c.key, "/custom/term")
		if (err == nil) != c.ok {
			t.Errorf("%s (key %s): %v, want ok=%v", c.mp, c.key, err, c.ok)
		}
		if err != nil && (!errors.Is(err, runtime.ErrInvalid) || !strings.Contains(err.Error(), c.mp)) {
			t.Errorf("%s: %v does not name the mount as invalid", c.mp, err)
		}
	}
}

// A restored foreign container gets /dev/shm and /run/.containerenv bound
// from ckpt's own files, the cgroup mount, and the pod's pid namespace
// when the pod shares it.
func TestForeignSpecMounts(t *testing.T) {
	pod := testPod(corev1.Container{Command: []string{"/bin/sh"}}, nil)
	pod.Spec.ShareProcessNamespace = ptr(true)
	rec := &record{ID: "c0ffee", Namespace: pod.Namespace, Pod: pod.Name, Name: pod.Spec.Containers[0].Name}
	in := specInput{Rec: rec, Pod: pod, Container: pod.Spec.Containers[0], Image: Image{RootFS: imageRoot(t)}, Rootfs: "/rootfs",
		Sandbox: sandboxNS{PausePid: 4242}}
	dir := t.TempDir()
	if err := (podBinds{Shm: true, ContainerEnv: true, Cgroup: true}).prepare(dir, &in); err != nil {
		t.Fatal(err)
	}
	s, err := buildContainerSpec(in)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]specs.Mount{}
	for _, m := range s.Mounts {
		if _, dup := got[m.Destination]; dup {
			t.Errorf("two mounts at %s", m.Destination)
		}
		got[m.Destination] = m
	}
	for dst, src := range map[string]string{"/dev/shm": filepath.Join(dir, "shm"), "/run/.containerenv": filepath.Join(dir, "containerenv")} {
		if m := got[dst]; m.Type != "bind" || m.Source != src {
			t.Errorf("%s: %+v, want a bind of %s", dst, m, src)
		}
		if _, err := os.Stat(src); err != nil {
			t.Error(err)
		}
	}
	if got["/sys/fs/cgroup"].Type != "cgroup" {
		t.Errorf("no cgroup mount: %+v", got["/sys/fs/cgroup"])
	}
	for _, n := range s.Linux.Namespaces {
		if n.Type == specs.PIDNamespace && n.Path != "/proc/4242/ns/pid" {
			t.Errorf("pid namespace %q, want the pause's", n.Path)
		}
	}
}
