package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ckpt-dev/ckpt/pkg/client"
)

const benchToken = "ckptbench-token"

// agent is one `ckpt serve` on a loopback port.
type agent struct {
	bin, root, manifests, logPath string
	port                          int
	cmd                           *exec.Cmd
	api                           *client.Client
}

// startAgent runs `ckpt serve` with its state under dir; extra are more
// serve flags (e.g. --container-runtime-endpoint).
func startAgent(ctx context.Context, bin, dir string, extra ...string) (*agent, error) {
	a := &agent{bin: bin, root: filepath.Join(dir, "root"), logPath: filepath.Join(dir, "agent.log")}
	tokens := filepath.Join(dir, "tokens.csv")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := os.WriteFile(tokens, []byte(benchToken+",bench,1000,\"system:masters\"\n"), 0o600); err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	a.port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	if a.api, err = client.New(client.Config{Server: fmt.Sprintf("http://127.0.0.1:%d", a.port), Token: benchToken}); err != nil {
		return nil, err
	}
	args := []string{"--root-dir", a.root, "serve", "--address", "127.0.0.1", "--port", strconv.Itoa(a.port),
		"--plain-http", "--token-auth-file", tokens, "--hostname-override", benchNode}
	args = append(args, extra...)
	logf, err := os.OpenFile(a.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	a.cmd = exec.Command(bin, args...)
	a.cmd.Stdout, a.cmd.Stderr = logf, logf
	if err := a.cmd.Start(); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if a.api.Healthz(ctx) == nil {
			return a, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	a.stop()
	return nil, fmt.Errorf("ckpt serve did not become healthy; see %s", a.logPath)
}

// withManifests is startAgent for the embedded runtime with static pods.
func startEmbeddedAgent(ctx context.Context, bin, dir string) (*agent, error) {
	m := filepath.Join(dir, "manifests")
	if err := os.MkdirAll(m, 0o755); err != nil {
		return nil, err
	}
	a, err := startAgent(ctx, bin, dir, "--pod-manifest-path", m, "--file-check-frequency", "500ms")
	if a != nil {
		a.manifests = m
	}
	return a, err
}

func (a *agent) stop() {
	if a == nil || a.cmd == nil || a.cmd.Process == nil {
		return
	}
	a.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { a.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		a.cmd.Process.Kill()
		<-done
	}
	a.cmd = nil
}

// checkpoint checkpoints a container and returns the archive's path.
func (a *agent) checkpoint(ctx context.Context, ns, pod, ctr string) (string, error) {
	return a.api.Checkpoint(ctx, client.Ref{Namespace: ns, Pod: pod, Container: ctr}, client.CheckpointOptions{Timeout: 10 * time.Minute})
}

// restore restores an archive kept by the agent.
func (a *agent) restore(ctx context.Context, ns, pod, ctr, archiveName string) (id string, err error) {
	r, err := a.api.Restore(ctx, client.Ref{Namespace: ns, Pod: pod, Container: ctr}, client.RestoreSource{Archive: archiveName})
	return r.ID, err
}

// restoreLazy restores an archive kept by the agent with ?lazy=true.
func (a *agent) restoreLazy(ctx context.Context, ns, pod, ctr, archiveName string) error {
	_, err := a.api.Restore(ctx, client.Ref{Namespace: ns, Pod: pod, Container: ctr}, client.RestoreSource{Archive: archiveName, Lazy: true})
	return err
}

// resetPeakRSS starts a new peak RSS window (clear_refs 5 resets VmHWM).
func (a *agent) resetPeakRSS() {
	os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", a.cmd.Process.Pid), []byte("5"), 0)
}

// peakRSS returns the agent's VmHWM in bytes.
func (a *agent) peakRSS() int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", a.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func (a *agent) ckpt(ctx context.Context, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, a.bin, append([]string{"--root-dir", a.root}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ckpt %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// benchNode is the agent's node name: static pods are named <name>-<node>.
const benchNode = "bench"

// staticPod is the name the agent gives the pod of manifest name.
func staticPod(name string) string { return name + "-" + benchNode }

// addCounterPod writes a static pod running the counter with mib MiB (and
// fileMiB MiB of changed files in its root filesystem) and waits until it
// counts (the memory is touched before the first line). It returns the
// container's full ID; the pod is staticPod(name).
func (a *agent) addCounterPod(ctx context.Context, name string, mib, fileMiB int) (string, error) {
	return a.addCounterPodEvery(ctx, name, mib, fileMiB, time.Second)
}

// addCounterPodEvery is addCounterPod with a counter that ticks every
// interval.
func (a *agent) addCounterPodEvery(ctx context.Context, name string, mib, fileMiB int, interval time.Duration) (string, error) {
	manifest := fmt.Sprintf("apiVersion: v1\nkind: Pod\nmetadata:\n  name: %s\n  namespace: default\nspec:\n  containers:\n  - name: counter\n    image: localhost/counter:latest\n    env:\n    - name: COUNTER_MEM_MIB\n      value: \"%d\"\n    - name: COUNTER_FILE_MIB\n      value: \"%d\"\n    - name: COUNTER_INTERVAL\n      value: %s\n", name, mib, fileMiB, interval)
	pod := staticPod(name)
	if err := os.WriteFile(filepath.Join(a.manifests, name+".yaml"), []byte(manifest), 0o644); err != nil {
		return "", err
	}
	deadline := time.Now().Add(5 * time.Minute)
	for time.Now().Before(deadline) {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		out, _ := a.ckpt(ctx, "ps")
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			if len(f) < 5 || f[1] != pod || f[2] != "counter" || !strings.Contains(line, " running ") {
				continue
			}
			m, _ := filepath.Glob(filepath.Join(a.root, "ckpt", "containers", f[3]+"*"))
			if len(m) != 1 {
				continue
			}
			if b, _ := os.ReadFile(filepath.Join(m[0], "container.log")); strings.Contains(string(b), "count 1") {
				return filepath.Base(m[0]), nil
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return "", fmt.Errorf("pod %s did not start counting; see %s", pod, a.logPath)
}

func (a *agent) removePod(ctx context.Context, name string) {
	os.Remove(filepath.Join(a.manifests, name+".yaml"))
	a.ckpt(ctx, "rm", "default/"+staticPod(name)+"/counter")
}
