// Package kubee2e runs ckpt against a real Kubernetes: etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler and a kubelet v1.37 on a private
// containerd, all on loopback, started by hack/start-kube.sh. ckpt is
// deployed from deploy/ with the image `make image` builds, and driven by
// the kubectl-checkpoint plugin and by its API, side by side with the
// kubelet's own checkpoint endpoint.
package kubee2e

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var (
	repoRoot = "../../.."
	env      map[string]string // DIR/kube.env
	plugin   string            // the kubectl-checkpoint binary
	imageTar string            // ckpt's OCI image archive
	skipWhy  string
	setupErr error
)

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Getenv(helperEnv) != "" {
		return m.Run() // a helper process inside the cluster's namespace
	}
	switch {
	case testing.Short():
		skipWhy = "end-to-end test: skipped in -short mode"
	case os.Getuid() != 0:
		skipWhy = "needs root: it runs a kubelet, containerd, runc and CRIU"
	}
	if skipWhy != "" {
		return m.Run()
	}
	tmp, err := os.MkdirTemp("", "ckpt-kube-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)
	if setupErr = prepare(tmp); setupErr != nil {
		return m.Run()
	}
	start := time.Now()
	dir, err := os.MkdirTemp("", "ckpt-kube.")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	os.Remove(dir) // start-kube.sh makes it
	cmd := exec.Command(filepath.Join(repoRoot, "hack/start-kube.sh"), dir)
	cmd.Env = append(os.Environ(), "CKPT_IMAGES="+os.Getenv("CKPT_IMAGES"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		setupErr = fmt.Errorf("hack/start-kube.sh: %v\n%s", err, stderr.String())
		return m.Run()
	}
	fmt.Fprintf(os.Stderr, "cluster up in %s\n", time.Since(start).Round(time.Second))
	defer func() {
		stop := exec.Command(filepath.Join(repoRoot, "hack/stop-kube.sh"), dir)
		if out, err := stop.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "hack/stop-kube.sh: %v\n%s", err, out)
		}
	}()
	if env, setupErr = readEnv(strings.TrimSpace(stdout.String())); setupErr != nil {
		return m.Run()
	}
	code := m.Run()
	if code != 0 {
		for _, l := range []string{"kubelet", "kube-apiserver", "kube-controller-manager"} {
			if b, err := os.ReadFile(filepath.Join(dir, "logs", l+".log")); err == nil {
				fmt.Fprintf(os.Stderr, "--- %s.log (last 3 KiB)\n%s\n", l, tail(b, 3072))
			}
		}
	}
	return code
}

// prepare builds the plugin and, unless given, the images.
func prepare(tmp string) error {
	if os.Getenv("CKPT_IMAGES") == "" {
		dir := filepath.Join(tmp, "images")
		if out, err := exec.Command(filepath.Join(repoRoot, "hack/build-images.sh"), dir).CombinedOutput(); err != nil {
			return fmt.Errorf("build images: %v\n%s", err, out)
		}
		os.Setenv("CKPT_IMAGES", dir)
	}
	imageTar = os.Getenv("CKPT_IMAGE_ARCHIVE")
	if imageTar == "" {
		imageTar = filepath.Join(repoRoot, "_output/ckpt-image.tar")
		if _, err := os.Stat(imageTar); err != nil {
			imageTar = filepath.Join(tmp, "ckpt-image.tar")
			if out, err := exec.Command(filepath.Join(repoRoot, "hack/build-ckpt-image.sh"), imageTar).CombinedOutput(); err != nil {
				return fmt.Errorf("make image: %v\n%s", err, out)
			}
		}
	}
	plugin = filepath.Join(tmp, "kubectl-checkpoint")
	if out, err := exec.Command("go", "build", "-o", plugin, filepath.Join(repoRoot, "cmd/kubectl-checkpoint")).CombinedOutput(); err != nil {
		return fmt.Errorf("build kubectl-checkpoint: %v\n%s", err, out)
	}
	return nil
}

func readEnv(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]string{}
	s := bufio.NewScanner(f)
	for s.Scan() {
		if k, v, ok := strings.Cut(s.Text(), "="); ok {
			out[k] = v
		}
	}
	return out, s.Err()
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

func needCluster(t *testing.T) {
	t.Helper()
	if skipWhy != "" {
		t.Skip(skipWhy)
	}
	if setupErr != nil {
		t.Fatal(setupErr)
	}
}
