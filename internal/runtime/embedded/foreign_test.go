package embedded

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	lib "github.com/checkpoint-restore/checkpointctl/lib"

	"github.com/ckpt-dev/ckpt/internal/archive"
	"github.com/ckpt-dev/ckpt/internal/runtime"
)

// Archives of containerd and Podman carry no pod.json: the pod is derived
// from spec.dump's process (args, env, cwd) and config.dump's image, and
// nothing else of their spec (namespace paths, mounts, capabilities).
func TestForeignArchivePod(t *testing.T) {
	cases := []struct {
		fixture, ns, pod, ctr, image string
		env                          string
	}{
		{"containerd-2.4.2-cri-counter.tar", "default", "counter-pod", "counter", "localhost/busybox-counter:latest", "HOSTNAME=counter-pod"},
		{"podman-4.3.1-export-counter.tar", "default", "pct1", "pct1", "localhost/counter-imported:latest", "container=podman"},
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
			var cfg lib.ContainerConfig
			if err := readJSONIn(root, lib.ConfigDumpFile, maxPodJSON, &cfg); err != nil {
				t.Fatal(err)
			}
			pod, name, err := archivedPod(root, &cfg)
			if err != nil {
				t.Fatal(err)
			}
			pod, ctr, err := retarget(pod, name, RestoreOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if pod.Namespace != c.ns || pod.Name != c.pod || ctr.Name != c.ctr || ctr.Image != c.image {
				t.Errorf("derived %s/%s/%s image %s", pod.Namespace, pod.Name, ctr.Name, ctr.Image)
			}
			if !slices.Equal(ctr.Command, []string{"/bin/counter.sh"}) || ctr.WorkingDir != "/" {
				t.Errorf("process %v in %s", ctr.Command, ctr.WorkingDir)
			}
			found := false
			for _, e := range ctr.Env {
				found = found || e.Name+"="+e.Value == c.env
			}
			if !found {
				t.Errorf("env %v lacks %s", ctr.Env, c.env)
			}
			if pod.Spec.HostNetwork || ctr.SecurityContext != nil || len(pod.Spec.Volumes) > 0 || len(ctr.VolumeMounts) > 0 {
				t.Errorf("derived pod took more than args, env and cwd: %+v", pod.Spec)
			}
		})
	}
}

// A restore whose image is not on the node fails before anything runs,
// naming the image.
func TestRestoreMissingImage(t *testing.T) {
	for _, b := range []string{"runc", "criu"} {
		if _, err := lookBinary("", b); err != nil {
			t.Skipf("needs %s", b)
		}
	}
	rt, err := New(Config{StateDir: t.TempDir(), Shim: "/bin/false"}, dirImages{})
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join("..", "..", "archive", "testdata", "containerd-2.4.2-cri-counter.tar"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_, err = rt.Restore(context.Background(), f, RestoreOptions{Source: "fixture"})
	if err == nil || !strings.Contains(err.Error(), `image "localhost/busybox-counter:latest" is not on this node`) || !errors.Is(err, runtime.ErrInvalid) {
		t.Fatalf("restore without the image: %v", err)
	}
	if left, _ := os.ReadDir(rt.podsDir()); len(left) > 0 {
		t.Errorf("pods left: %v", left)
	}
}
