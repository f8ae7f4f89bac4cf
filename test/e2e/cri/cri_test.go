package crie2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/ckpt-dev/ckpt/internal/archive"
	"github.com/ckpt-dev/ckpt/internal/runtime"
	"github.com/ckpt-dev/ckpt/internal/runtime/cri"
	"github.com/ckpt-dev/ckpt/internal/trust"
	"github.com/ckpt-dev/ckpt/pkg/client"
)

// pod is a pod sandbox with one counter container, made over CRI the way the
// kubelet makes them (same labels, log layout).
type pod struct {
	ns, name, uid string
	sandboxID     string
	containerID   string
	logPath       string // the container's CRI log on the host
	sbConfig      *runtimeapi.PodSandboxConfig
}

// criClient is a raw CRI client for setting up what the kubelet would.
func criClient(t *testing.T, rt *criRuntime) runtimeapi.RuntimeServiceClient {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+rt.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return runtimeapi.NewRuntimeServiceClient(conn)
}

var kubeletNamespaces = &runtimeapi.NamespaceOption{
	Network: runtimeapi.NamespaceMode_POD,
	Pid:     runtimeapi.NamespaceMode_CONTAINER,
	Ipc:     runtimeapi.NamespaceMode_POD,
}

// startPod runs a sandbox named name in namespace "default", labelled as the
// kubelet labels it, and removes it at the end of the test.
func startPod(t *testing.T, rt *criRuntime, c runtimeapi.RuntimeServiceClient, name string) *pod {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := &pod{ns: "default", name: name, uid: "uid-" + name}
	logDir := filepath.Join(tmpRoot, "pods-"+rt.name, p.ns+"_"+p.name+"_"+p.uid)
	sbCfg := &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: p.name, Namespace: p.ns, Uid: p.uid},
		Hostname:     p.name,
		LogDirectory: logDir,
		Labels: map[string]string{
			"io.kubernetes.pod.name": p.name, "io.kubernetes.pod.namespace": p.ns, "io.kubernetes.pod.uid": p.uid,
		},
		// The kubelet's defaults: pod network and IPC, a PID namespace per container.
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: kubeletNamespaces},
		},
	}
	sb, err := c.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: sbCfg})
	if err != nil {
		t.Fatalf("run pod sandbox %s: %v", name, err)
	}
	p.sandboxID = sb.GetPodSandboxId()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := c.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: p.sandboxID}); err != nil {
			t.Errorf("stop pod sandbox: %v", err)
		}
		if _, err := c.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.sandboxID}); err != nil {
			t.Errorf("remove pod sandbox: %v", err)
		}
	})
	p.sbConfig = sbCfg
	return p
}

// startCounterPod runs a pod (see startPod) with a running "counter" container.
func startCounterPod(t *testing.T, rt *criRuntime, c runtimeapi.RuntimeServiceClient, name string) *pod {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := startPod(t, rt, c, name)
	// The kubelet makes the container's log directory; CRI-O needs it.
	if err := os.MkdirAll(filepath.Join(p.sbConfig.GetLogDirectory(), "counter"), 0o755); err != nil {
		t.Fatal(err)
	}
	ctr, err := c.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{
		PodSandboxId: p.sandboxID,
		Config: &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: "counter"},
			Image:    &runtimeapi.ImageSpec{Image: "localhost/counter:latest"},
			Envs:     []*runtimeapi.KeyValue{{Key: "COUNTER_INTERVAL", Value: []byte("200ms")}},
			Labels: map[string]string{
				"io.kubernetes.container.name": "counter",
				"io.kubernetes.pod.name":       p.name, "io.kubernetes.pod.namespace": p.ns, "io.kubernetes.pod.uid": p.uid,
			},
			LogPath: "counter/0.log",
			Linux: &runtimeapi.LinuxContainerConfig{
				SecurityContext: &runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: kubeletNamespaces},
			},
		},
		SandboxConfig: p.sbConfig,
	})
	if err != nil {
		t.Fatalf("create counter container: %v", err)
	}
	p.containerID = ctr.GetContainerId()
	if _, err := c.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: p.containerID}); err != nil {
		t.Fatalf("start counter container: %v", err)
	}
	p.logPath = filepath.Join(p.sbConfig.GetLogDirectory(), "counter", "0.log")
	waitCount(t, p.logPath, 1)
	return p
}

var countLine = regexp.MustCompile(`count (\d+)$`)

// lastCount is the highest counter value in a CRI log, or -1.
func lastCount(path string) int {
	f, err := os.Open(path)
	if err != nil {
		return -1
	}
	defer f.Close()
	n := -1
	s := bufio.NewScanner(f)
	for s.Scan() {
		if m := countLine.FindStringSubmatch(s.Text()); m != nil {
			if v, _ := strconv.Atoi(m[1]); v > n {
				n = v
			}
		}
	}
	return n
}

// waitCount waits until the counter's log shows at least n.
func waitCount(t *testing.T, path string, n int) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for lastCount(path) < n {
		if time.Now().After(deadline) {
			t.Fatalf("counter log %s never reached %d (last %d)", path, n, lastCount(path))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// checkArchive checks a checkpoint archive the way a user would: tar lists the
// CRI-O/containerd layout, and checkpointctl reads it.
func checkArchive(t *testing.T, rt *criRuntime, archive string) {
	t.Helper()
	out, err := exec.Command("tar", "tf", archive).CombinedOutput()
	if err != nil {
		t.Fatalf("tar tf %s: %v\n%s", archive, err, out)
	}
	names := map[string]bool{}
	for _, l := range strings.Split(string(out), "\n") {
		names[strings.TrimPrefix(l, "./")] = true
	}
	for _, want := range []string{"checkpoint/", "config.dump", "spec.dump"} {
		if !names[want] {
			t.Errorf("archive lacks %s; tar lists:\n%s", want, out)
		}
	}
	show, err := exec.Command("checkpointctl", "show", archive).CombinedOutput()
	if err != nil {
		t.Fatalf("checkpointctl show %s: %v\n%s", archive, err, show)
	}
	for _, want := range []string{"counter", "localhost/counter:latest", rt.engine} {
		if !strings.Contains(string(show), want) {
			t.Errorf("checkpointctl show lacks %q:\n%s", want, show)
		}
	}
}

// checkSigned: the agent added checksums.sha256 (containerd writes none)
// and signed it with its node key; every member matches.
func checkSigned(t *testing.T, path, pubFile string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := archive.Check(f, archive.Limits{})
	if err != nil {
		t.Fatalf("archive %s: %v", path, err)
	}
	key, err := trust.ReadPublicKeyFile(pubFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := (trust.Policy{Keys: trust.NewKeyring(key)}).Verify(m); err != nil {
		t.Fatalf("archive %s: %v", path, err)
	}
	if len(m.Sums) < 3 {
		t.Errorf("checksums.sha256 lists %d members", len(m.Sums))
	}
}

// checkStillRunning checks that checkpointing left the container running and
// counting.
func checkStillRunning(t *testing.T, c runtimeapi.RuntimeServiceClient, p *pod) {
	t.Helper()
	st, err := c.ContainerStatus(context.Background(), &runtimeapi.ContainerStatusRequest{ContainerId: p.containerID})
	if err != nil {
		t.Fatal(err)
	}
	if got := st.GetStatus().GetState(); got != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Fatalf("container is %v after the checkpoint, want RUNNING", got)
	}
	before := lastCount(p.logPath)
	waitCount(t, p.logPath, before+2)
}

func TestCheckpointThroughCRI(t *testing.T) { forEachRuntime(t, checkpointThroughCRI) }

func checkpointThroughCRI(t *testing.T, rt *criRuntime) {
	c := criClient(t, rt)
	p := startCounterPod(t, rt, c, "cri-backend")

	r, err := cri.New(context.Background(), "unix://"+rt.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := r.Healthy(ctx); err != nil {
		t.Fatalf("Healthy: %v", err)
	}

	// Lookup, as the kubelet resolves namespace/pod/container.
	for _, tc := range []struct {
		ref runtime.Ref
		err error
	}{
		{runtime.Ref{Namespace: p.ns, Pod: p.name, Container: "counter"}, nil},
		{runtime.Ref{Namespace: p.ns, Pod: p.name, Container: "nope"}, runtime.ErrContainerNotFound},
		{runtime.Ref{Namespace: p.ns, Pod: "no-such-pod", Container: "counter"}, runtime.ErrPodNotFound},
		{runtime.Ref{Namespace: "kube-system", Pod: p.name, Container: "counter"}, runtime.ErrPodNotFound},
	} {
		got, err := r.Lookup(ctx, tc.ref)
		if !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) {
			t.Errorf("Lookup(%s) error = %v, want %v", tc.ref, err, tc.err)
			continue
		}
		if err == nil && (got.ID != p.containerID || got.State != runtime.StateRunning || got.Pid <= 0) {
			t.Errorf("Lookup(%s) = %+v, want running container %s with a pid", tc.ref, got, p.containerID)
		}
	}

	ctr, err := r.Lookup(ctx, runtime.Ref{Namespace: p.ns, Pod: p.name, Container: "counter"})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(tmpRoot, "out-backend-"+rt.name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(dir, "checkpoint.tar")
	if _, err := r.Checkpoint(ctx, ctr, archive, runtime.CheckpointOptions{}); err != nil {
		t.Fatalf("Checkpoint: %v", err)
	}
	fi, err := os.Stat(archive)
	if err != nil {
		t.Fatalf("no archive: %v", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		t.Errorf("archive mode %v: readable by others", fi.Mode())
	}
	checkArchive(t, rt, archive)
	checkStillRunning(t, c, p)

	// A container the runtime does not know.
	_, err = r.Checkpoint(ctx, runtime.Container{ID: "0000000000000000"}, filepath.Join(dir, "none.tar"), runtime.CheckpointOptions{})
	if !errors.Is(err, runtime.ErrContainerNotFound) {
		t.Errorf("checkpoint of an unknown container: %v, want ErrContainerNotFound", err)
	}
}

// TestRestoreThroughCRI restores a checkpoint through CRI CreateContainer
// where the runtime can (CRI-O; containerd 2.1-2.3: set CONTAINERD_VERSION
// and CKPT_CONTAINERD_BIN for hack/start-containerd.sh) and checks that the
// counter goes on from the archive's last count; on containerd 2.4+, the
// default, it checks the clear refusal.
func TestRestoreThroughCRI(t *testing.T) { forEachRuntime(t, restoreThroughCRI) }

func restoreThroughCRI(t *testing.T, rt *criRuntime) {
	c := criClient(t, rt)
	p := startCounterPod(t, rt, c, "cri-restore")
	r, err := cri.New(context.Background(), rt.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	v, err := c.Version(ctx, &runtimeapi.VersionRequest{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("runtime %s %s", v.GetRuntimeName(), v.GetRuntimeVersion())

	ctr, err := r.Lookup(ctx, runtime.Ref{Namespace: p.ns, Pod: p.name, Container: "counter"})
	if err != nil {
		t.Fatal(err)
	}
	waitCount(t, p.logPath, 10)
	archive := filepath.Join(tmpRoot, "restore-src-"+rt.name+".tar")
	if _, err := r.Checkpoint(ctx, ctr, archive, runtime.CheckpointOptions{}); err != nil {
		t.Fatalf("Checkpoint: %v", err)
	}

	if !restoresThroughCRI(v.GetRuntimeName(), v.GetRuntimeVersion()) {
		_, err = r.Restore(ctx, archive, runtime.Ref{Namespace: p.ns, Pod: p.name, Container: "restored"})
		if !errors.Is(err, runtime.ErrUnsupported) {
			t.Fatalf("Restore on containerd %s: %v, want ErrUnsupported", v.GetRuntimeVersion(), err)
		}
		for _, want := range []string{"containerd 2.4+", "cannot restore a checkpoint through CRI", "ckpt restore"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q lacks %q", err, want)
			}
		}
		list, err := c.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{
			LabelSelector: map[string]string{"io.kubernetes.container.name": "restored"},
		}})
		if err != nil {
			t.Fatal(err)
		}
		if n := len(list.GetContainers()); n != 0 {
			t.Errorf("Restore left %d containers behind", n)
		}
		return
	}
	k := archivedCount(t, archive)

	// No ready sandbox: the message says what to create.
	_, err = r.Restore(ctx, archive, runtime.Ref{Namespace: p.ns, Pod: "no-such-pod", Container: "counter"})
	if !errors.Is(err, runtime.ErrPodNotFound) {
		t.Fatalf("Restore into a pod without a sandbox: %v, want ErrPodNotFound", err)
	}
	for _, want := range []string{"pod does not exist", "no ready pod sandbox for default/no-such-pod", "kubelet", "crictl runp", "io.kubernetes.pod.name=no-such-pod"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}

	target := startPod(t, rt, c, "cri-restore-target")
	for _, tc := range []struct {
		name   string
		target runtime.Ref
		want   *pod
	}{
		// The names the archive recorded: the original's pod, a new attempt.
		{"archive's names", runtime.Ref{}, p},
		{"another pod", runtime.Ref{Namespace: target.ns, Pod: target.name, Container: "counter"}, target},
	} {
		t.Run(tc.name, func(t *testing.T) {
			restoreStart := time.Now()
			restored, err := r.Restore(ctx, archive, tc.target)
			if err != nil {
				// runc names CRIU's log in its error: show its end.
				if m := regexp.MustCompile(`log file: (\S+\.log)`).FindStringSubmatch(err.Error()); m != nil {
					if b, rerr := os.ReadFile(m[1]); rerr == nil {
						t.Logf("%s:\n%s", m[1], tail(b, 3000))
					}
				}
				t.Fatalf("Restore: %v", err)
			}
			defer func() {
				if _, err := c.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: restored.ID, Timeout: 5}); err != nil {
					t.Errorf("stop restored container: %v", err)
				}
			}()
			if restored.State != runtime.StateRunning || restored.ID == "" ||
				restored.Namespace != tc.want.ns || restored.Pod != tc.want.name || restored.Name != "counter" {
				t.Fatalf("restored container %+v, want running default/%s/counter", restored, tc.want.name)
			}
			st, err := c.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: restored.ID})
			if err != nil {
				t.Fatal(err)
			}
			if st.GetStatus().GetLabels()["io.kubernetes.pod.name"] != tc.want.name {
				t.Errorf("restored container's labels %v, want pod %s", st.GetStatus().GetLabels(), tc.want.name)
			}
			logPath := st.GetStatus().GetLogPath()
			// The kubelet asks for <pod log dir>/<container>/<attempt>.log.
			// CRI-O ignores that on restore and logs to <pod log dir>/<id>.log
			// (docs/kubernetes.md): the kubelet still finds it by the status.
			logDir := tc.want.sbConfig.GetLogDirectory()
			want := filepath.Join(logDir, "counter", strconv.Itoa(int(st.GetStatus().GetMetadata().GetAttempt()))+".log")
			if v.GetRuntimeName() == "cri-o" {
				want = filepath.Join(logDir, restored.ID+".log")
			}
			if logPath != want {
				t.Errorf("restored container logs to %s, want %s (update docs/kubernetes.md if the runtime changed)", logPath, want)
			}
			resumesAt(t, rt, logPath, restoreStart, k)
		})
	}
}

// archivedCount is K: the last count in the container log the archive
// holds (CRI-O keeps it as io.kubernetes.cri-o.LogPath, ckpt as
// container.log), cut where CRIU froze the process.
func archivedCount(t *testing.T, archive string) int {
	t.Helper()
	for _, member := range []string{"io.kubernetes.cri-o.LogPath", "container.log"} {
		out, err := exec.Command("tar", "xOf", archive, member).Output()
		if err != nil {
			continue
		}
		k := -1
		for _, line := range strings.Split(string(out), "\n") {
			if m := countLine.FindStringSubmatch(line); m != nil {
				k, _ = strconv.Atoi(m[1])
			}
		}
		if k < 0 {
			t.Fatalf("archive %s: %s has no count", archive, member)
		}
		return k
	}
	t.Fatalf("archive %s holds no container log", archive)
	return 0
}

// resumesAt checks that the counts a restored container logged since
// since go on from the archive's last count k: k+1, k+2 where the archive's
// log is cut at the freeze (CRI-O), and for containerd, which copies the log
// after the dump (so it may hold a count or two the checkpoint does not),
// two consecutive counts from k-2 to k+1. A fresh start would print 0.
func resumesAt(t *testing.T, rt *criRuntime, logPath string, since time.Time, k int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		counts := countsSince(t, logPath, since)
		if len(counts) >= 2 {
			ok := counts[0] == k+1 && counts[1] == k+2
			want := fmt.Sprintf("%d %d", k+1, k+2)
			if rt.engine == "containerd" {
				ok = counts[0] >= k-2 && counts[0] <= k+1 && counts[1] == counts[0]+1
				want = fmt.Sprintf("two consecutive counts from %d to %d", k-2, k+1)
			}
			if !ok {
				t.Fatalf("archive's log ends at %d; restored container printed %v first, want %s (log %s)", k, counts, want, logPath)
			}
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("restored container printed no two counts in 30s (log %s: %v)", logPath, countsSince(t, logPath, since))
}

// countsSince are the counter values in a CRI log's lines stamped at or
// after since.
func countsSince(t *testing.T, path string, since time.Time) []int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var counts []int
	for _, line := range strings.Split(string(b), "\n") {
		stamp, rest, ok := strings.Cut(line, " ")
		ts, err := time.Parse(time.RFC3339Nano, stamp)
		if !ok || err != nil || ts.Before(since) {
			continue
		}
		if m := countLine.FindStringSubmatch(rest); m != nil {
			n, _ := strconv.Atoi(m[1])
			counts = append(counts, n)
		}
	}
	return counts
}

// restoresThroughCRI reports whether a runtime restores through
// CreateContainer: CRI-O, and containerd 2.1 to 2.3.
func restoresThroughCRI(name, version string) bool {
	if name == "cri-o" {
		return true
	}
	parts := strings.SplitN(strings.TrimPrefix(version, "v"), ".", 3)
	if len(parts) < 2 {
		return false
	}
	major, _ := strconv.Atoi(parts[0])
	minor, _ := strconv.Atoi(parts[1])
	return major == 2 && minor >= 1 && minor <= 3
}

// TestCheckpointTimeoutThroughCRI gives a checkpoint less time than it
// takes: the error says so and the container keeps running, and the next
// checkpoint works.
func TestCheckpointTimeoutThroughCRI(t *testing.T) { forEachRuntime(t, checkpointTimeoutThroughCRI) }

func checkpointTimeoutThroughCRI(t *testing.T, rt *criRuntime) {
	c := criClient(t, rt)
	p := startCounterPod(t, rt, c, "cri-timeout")
	r, err := cri.New(context.Background(), rt.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctr, err := r.Lookup(context.Background(), runtime.Ref{Namespace: p.ns, Pod: p.name, Container: "counter"})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(tmpRoot, "out-timeout-"+rt.name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(context.Background(), time.Millisecond)
	_, err = r.Checkpoint(short, ctr, filepath.Join(dir, "short.tar"), runtime.CheckpointOptions{})
	cancel()
	if !errors.Is(err, runtime.ErrTimeout) || !strings.Contains(err.Error(), "did not finish within 1s") {
		t.Fatalf("checkpoint with 1ms: %v, want ErrTimeout saying it did not finish within 1s", err)
	}
	// The runtime may still be at it: wait until it is done with the container.
	time.Sleep(2 * time.Second)
	checkStillRunning(t, c, p)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	archive := filepath.Join(dir, "after.tar")
	if _, err := r.Checkpoint(ctx, ctr, archive, runtime.CheckpointOptions{}); err != nil {
		t.Fatalf("checkpoint after the timeout: %v", err)
	}
	checkArchive(t, rt, archive)
	checkStillRunning(t, c, p)
}

// TestServeCheckpointThroughCRI drives `ckpt serve --container-runtime-endpoint`
// over its kubelet-compatible HTTP API.
func TestServeCheckpointThroughCRI(t *testing.T) { forEachRuntime(t, serveCheckpointThroughCRI) }

func serveCheckpointThroughCRI(t *testing.T, rt *criRuntime) {
	if ckptErr != nil {
		t.Fatal(ckptErr)
	}
	c := criClient(t, rt)
	p := startCounterPod(t, rt, c, "cri-serve")

	rootDir := filepath.Join(tmpRoot, "serve-root-"+rt.name)
	tokens := filepath.Join(tmpRoot, "tokens-"+rt.name+".csv")
	const token = "e2e-cri-token"
	if err := os.WriteFile(tokens, []byte(token+`,e2e-user,e2e-uid,"system:masters"`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	serve := exec.Command(ckptBin, "serve", "--root-dir", rootDir,
		"--container-runtime-endpoint", "unix://"+rt.socket,
		"--address", "127.0.0.1", "--port", strconv.Itoa(port), "--plain-http",
		"--token-auth-file", tokens, "--authorization-mode", "AlwaysAllow",
		"--hostname-override", "e2e-node")
	logf, err := os.Create(filepath.Join(tmpRoot, "serve-"+rt.name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	serve.Stdout, serve.Stderr = logf, logf
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		// Only the process this test started, by its PID.
		serve.Process.Signal(syscall.SIGTERM)
		serve.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("ckpt serve log:\n%s", b)
		}
	}()
	api, err := client.New(client.Config{Server: base, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	waitHealthy(t, api)

	post := func(path string) (int, []byte) {
		resp, err := api.Raw(context.Background(), http.MethodPost, path, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b strings.Builder
		if _, err := bufio.NewReader(resp.Body).WriteTo(&b); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, []byte(b.String())
	}

	code, body := post(fmt.Sprintf("/checkpoint/%s/%s/counter?timeout=60", p.ns, p.name))
	if code != http.StatusOK {
		t.Fatalf("POST checkpoint: %d %s", code, body)
	}
	var res struct {
		Items []string `json:"items"`
	}
	if err := json.Unmarshal(body, &res); err != nil || len(res.Items) != 1 {
		t.Fatalf("response %s: %v", body, err)
	}
	archive := res.Items[0]
	dir := filepath.Join(rootDir, "checkpoints")
	name := regexp.MustCompile(`^checkpoint-` + p.name + `_` + p.ns + `-counter-\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(Z|[+-]\d\d:\d\d)\.tar$`)
	if filepath.Dir(archive) != dir || !name.MatchString(filepath.Base(archive)) {
		t.Errorf("archive %s: want %s/checkpoint-<pod>_<ns>-<container>-<RFC3339>.tar", archive, dir)
	}
	for path, want := range map[string]os.FileMode{archive: 0o600, dir: 0o700} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", path, fi.Mode().Perm(), want)
		}
	}
	checkArchive(t, rt, archive)
	checkSigned(t, archive, filepath.Join(rootDir, "pki", trust.PubKeyFile))
	checkStillRunning(t, c, p)

	// Restore through the CRI backend applies the node's signature rules
	// before the runtime sees the archive: containerd's own (unsigned)
	// archive is refused, the agent's passes them (and then meets what the
	// runtime can do).
	restore := func(query string, body io.Reader) (int, string) {
		resp, err := api.Raw(context.Background(), http.MethodPost, "/restore/"+p.ns+"/"+p.name+"/again"+query, body)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	fixture, err := os.Open(filepath.Join(repoRoot, "internal/archive/testdata/containerd-2.4.2-cri-counter.tar"))
	if err != nil {
		t.Fatal(err)
	}
	defer fixture.Close()
	if code, msg := restore("", fixture); code != http.StatusBadRequest || !strings.Contains(msg, "archive is not signed") {
		t.Errorf("restore of an unsigned archive through CRI: %d %q, want 400 archive is not signed", code, msg)
	}
	if code, msg := restore("?archive="+filepath.Base(archive), nil); strings.Contains(msg, "sign") {
		t.Errorf("restore of the agent's own archive through CRI: %d %q: refused for its signature", code, msg)
	} else {
		t.Logf("own archive through CRI: %d %s", code, strings.TrimSpace(msg))
	}

	for _, tc := range []struct {
		path string
		code int
		msg  string
	}{
		{fmt.Sprintf("/checkpoint/%s/%s/nope", p.ns, p.name), http.StatusNotFound, "container nope does not exist"},
		{fmt.Sprintf("/checkpoint/%s/no-such-pod/counter", p.ns), http.StatusNotFound, "pod does not exist"},
	} {
		code, body := post(tc.path)
		if code != tc.code || !strings.Contains(string(body), tc.msg) {
			t.Errorf("POST %s: %d %q, want %d with %q", tc.path, code, body, tc.code, tc.msg)
		}
	}

	// Restore over the API, as `ckpt restore ARCHIVE` without --pod and
	// --name asks: "_" keeps the archive's names.
	k := archivedCount(t, archive)
	archiveName := url.QueryEscape(filepath.Base(archive))
	v, err := c.Version(context.Background(), &runtimeapi.VersionRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if !restoresThroughCRI(v.GetRuntimeName(), v.GetRuntimeVersion()) {
		code, body := post("/restore/_/_/_?archive=" + archiveName)
		if code == http.StatusCreated || !strings.Contains(string(body), "cannot restore a checkpoint through CRI") {
			t.Errorf("POST restore on containerd 2.4: %d %s, want the refusal", code, body)
		}
		return
	}
	code, body = post("/restore/_/no-such-pod/_?archive=" + archiveName)
	if code != http.StatusNotFound || !strings.Contains(string(body), "crictl runp") {
		t.Errorf("POST restore into a pod without a sandbox: %d %s, want 404 saying how to make one", code, body)
	}
	restoreStart := time.Now()
	code, body = post("/restore/_/_/_?archive=" + archiveName)
	if code != http.StatusCreated {
		t.Fatalf("POST restore: %d %s", code, body)
	}
	var restored struct{ ID, Namespace, Pod, Container, State string }
	if err := json.Unmarshal(body, &restored); err != nil {
		t.Fatal(err)
	}
	if restored.Namespace != p.ns || restored.Pod != p.name || restored.Container != "counter" || restored.State != "running" {
		t.Fatalf("restored %+v, want the archive's %s/%s/counter running", restored, p.ns, p.name)
	}
	st, err := c.ContainerStatus(context.Background(), &runtimeapi.ContainerStatusRequest{ContainerId: restored.ID})
	if err != nil {
		t.Fatal(err)
	}
	resumesAt(t, rt, st.GetStatus().GetLogPath(), restoreStart, k)
	if _, err := c.StopContainer(context.Background(), &runtimeapi.StopContainerRequest{ContainerId: restored.ID, Timeout: 5}); err != nil {
		t.Errorf("stop restored container: %v", err)
	}

	// The same as a user types it: no --pod, no --name.
	tokenFile := filepath.Join(tmpRoot, "token-"+rt.name)
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(ckptBin, "restore", "--server", base, "--token-file", tokenFile, filepath.Base(archive)).CombinedOutput()
	if err != nil {
		t.Fatalf("ckpt restore %s: %v\n%s", filepath.Base(archive), err, out)
	}
	if want := "restored " + p.ns + "/" + p.name + "/counter ("; !strings.Contains(string(out), want) || !strings.Contains(string(out), "running") {
		t.Errorf("ckpt restore printed %q, want %q... running", out, want)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func waitHealthy(t *testing.T, api *client.Client) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		err := api.Healthz(context.Background())
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("ckpt serve never became healthy at %s (last: %v)", api, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
