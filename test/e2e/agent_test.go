package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ckpt-dev/ckpt/pkg/client"
)

const testToken = "e2e-token-0123456789"

// testNode is the agents' node name: a static pod "x" runs as "x-n1", as
// the kubelet names static pods.
const testNode = "n1"

// agent is one running `ckpt serve`.
type agent struct {
	t         *testing.T
	rootDir   string
	manifests string
	port      int
	https     bool
	extra     []string
	images    []string // more image archives to import before start
	cmd       *exec.Cmd
	logPath   string
	caPool    *x509.CertPool // the agent's self-signed certificate (HTTPS)
	netns     string         // run in this network namespace (ip netns exec)
	addr      string         // listen address (default 127.0.0.1)
}

type agentOption func(*agent)

func withHTTPS() agentOption { return func(a *agent) { a.https = true } }
func withArgs(args ...string) agentOption {
	return func(a *agent) { a.extra = append(a.extra, args...) }
}

// newAgent prepares a root dir with the example images imported and starts
// ckpt serve on a free loopback port. It is stopped (not its containers'
// removal, which the test's cleanup does) when the test ends.
func newAgent(t *testing.T, opts ...agentOption) *agent {
	t.Helper()
	needE2E(t)
	dir := t.TempDir()
	a := &agent{t: t, rootDir: filepath.Join(dir, "root"), manifests: filepath.Join(dir, "manifests"), logPath: filepath.Join(dir, "agent.log")}
	for _, o := range opts {
		o(a)
	}
	os.MkdirAll(a.manifests, 0o755)
	tokens := filepath.Join(dir, "tokens.csv")
	os.WriteFile(tokens, []byte(testToken+",e2e-admin,1000,\"system:masters\"\n"), 0o600)
	a.extra = append(a.extra, "--token-auth-file", tokens)
	for _, img := range []string{"counter", "pause", "busybox", "busybox-nobody"} {
		a.ckpt("image", "import", filepath.Join(imagesDir, img+".tar"))
	}
	for _, img := range a.images {
		a.ckpt("image", "import", img)
	}
	a.start()
	t.Cleanup(func() {
		a.stop()
		a.removeAll()
	})
	return a
}

// in makes a subtest the agent's test until the subtest ends, so that a
// failed wait fails the subtest, not its parent.
func (a *agent) in(t *testing.T) {
	parent := a.t
	a.t = t
	t.Cleanup(func() { a.t = parent })
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func (a *agent) start() {
	a.t.Helper()
	if a.port == 0 {
		a.port = freePort(a.t)
	}
	args := []string{"--root-dir", a.rootDir, "serve", "--address", a.host(), "--port", strconv.Itoa(a.port),
		"--pod-manifest-path", a.manifests, "--file-check-frequency", "500ms", "--hostname-override", testNode}
	if !a.https {
		args = append(args, "--plain-http")
	}
	args = append(args, a.extra...)
	logf, err := os.OpenFile(a.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		a.t.Fatal(err)
	}
	defer logf.Close()
	a.cmd = exec.Command(ckptBin, args...)
	if a.netns != "" {
		// nsenter, not `ip netns exec`: that also gives the agent a mount
		// namespace with a fresh /sys, which hides the cgroup v1 mounts
		// under /sys/fs/cgroup (and CRIU then cannot dump).
		a.cmd = exec.Command("nsenter", append([]string{"--net=/run/netns/" + a.netns, "--", ckptBin}, args...)...)
	}
	a.cmd.Stdout, a.cmd.Stderr = logf, logf
	if err := a.cmd.Start(); err != nil {
		a.t.Fatal(err)
	}
	if a.https && a.caPool == nil {
		a.waitFor(func() bool { _, err := os.Stat(filepath.Join(a.rootDir, "pki", "ckpt.crt")); return err == nil }, "self-signed certificate")
		pem, _ := os.ReadFile(filepath.Join(a.rootDir, "pki", "ckpt.crt"))
		a.caPool = x509.NewCertPool()
		a.caPool.AppendCertsFromPEM(pem)
	}
	a.waitFor(func() bool {
		resp, err := a.do("GET", "/healthz", testToken)
		return err == nil && resp.status == 200
	}, "agent healthy")
}

// stop ends the agent with SIGTERM (or SIGKILL when kill is set).
func (a *agent) stopWith(sig syscall.Signal) {
	if a.cmd == nil || a.cmd.Process == nil {
		return
	}
	a.cmd.Process.Signal(sig)
	a.cmd.Wait()
	a.cmd = nil
}

func (a *agent) stop() { a.stopWith(syscall.SIGTERM) }

func (a *agent) url(path string) string {
	scheme := "http"
	if a.https {
		scheme = "https"
	}
	return fmt.Sprintf("%s://%s%s", scheme, net.JoinHostPort(a.host(), strconv.Itoa(a.port)), path)
}

func (a *agent) host() string {
	if a.addr != "" {
		return a.addr
	}
	return "127.0.0.1"
}

type response struct {
	status int
	ctype  string
	body   string
}

// api returns a client of this agent's API with token and cert (either may
// be empty), trusting the agent's self-signed certificate.
func (a *agent) api(token string, cert *tls.Certificate) *client.Client {
	a.t.Helper()
	cfg := client.Config{Server: a.url(""), Token: token}
	if a.https {
		cfg.TLS = &tls.Config{RootCAs: a.caPool}
		if cert != nil {
			cfg.TLS.Certificates = []tls.Certificate{*cert}
		}
	}
	if a.netns != "" {
		// The agent's address is only reachable from its namespace.
		pid := a.cmd.Process.Pid
		tr := &http.Transport{DialContext: func(_ context.Context, _, addr string) (net.Conn, error) { return dialIn(pid, addr) }}
		tr.TLSClientConfig = cfg.TLS
		cfg.Transport = tr
	}
	c, err := client.New(cfg)
	if err != nil {
		a.t.Fatal(err)
	}
	return c
}

// do sends one request as it is (any path, any method) and returns the
// answer, whatever its status.
func (a *agent) do(method, path, token string) (response, error) {
	return a.send(method, path, token, nil)
}

// send is do with a request body.
func (a *agent) send(method, path, token string, body io.Reader) (response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	return rawCall(ctx, a.api(token, nil), method, path, body)
}

// rawCall sends one request through c.Raw and reads the answer.
func rawCall(ctx context.Context, c *client.Client, method, path string, body io.Reader) (response, error) {
	resp, err := c.Raw(ctx, method, path, body)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{resp.StatusCode, resp.Header.Get("Content-Type"), string(b)}, nil
}

// checkpoint POSTs a checkpoint and returns the archive path, or "" and
// the answer. It goes through the client's raw call, because its callers
// check the kubelet-compatible answer itself (status, type, body).
func (a *agent) checkpoint(ref string, query string) (string, response) {
	a.t.Helper()
	resp, err := a.do("POST", "/checkpoint/"+ref+query, testToken)
	if err != nil {
		a.t.Fatal(err)
	}
	if resp.status != 200 {
		return "", resp
	}
	var body struct{ Items []string }
	if err := json.Unmarshal([]byte(resp.body), &body); err != nil || len(body.Items) != 1 {
		a.t.Fatalf("checkpoint answer %q: %v", resp.body, err)
	}
	return body.Items[0], resp
}

// publicKeyFile is the agent's archive signing key, for other agents'
// --restore-trusted-keys.
func (a *agent) publicKeyFile() string {
	return filepath.Join(a.rootDir, "pki", "checkpoint-signing.pub")
}

// ckpt runs a ckpt CLI command against this agent's root dir.
func (a *agent) ckpt(args ...string) string {
	a.t.Helper()
	out, err := a.ckptErr(args...)
	if err != nil {
		a.t.Fatalf("ckpt %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (a *agent) ckptErr(args ...string) (string, error) {
	cmd := exec.Command(ckptBin, append([]string{"--root-dir", a.rootDir}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// addPod writes a manifest and waits for its containers to run.
func (a *agent) addPod(name, manifest string) {
	a.t.Helper()
	if err := os.WriteFile(filepath.Join(a.manifests, name+".yaml"), []byte(manifest), 0o644); err != nil {
		a.t.Fatal(err)
	}
}

func counterManifest(pod string, env map[string]string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: v1\nkind: Pod\nmetadata:\n  name: %s\n  namespace: default\nspec:\n  containers:\n  - name: counter\n    image: localhost/counter:latest\n    env:\n    - name: COUNTER_INTERVAL\n      value: 200ms\n", pod)
	for k, v := range env {
		fmt.Fprintf(&b, "    - name: %s\n      value: %q\n", k, v)
	}
	return b.String()
}

// psLine returns the `ckpt ps` line of a pod's container, or "".
func (a *agent) psLine(pod, ctr string) string {
	out, _ := a.ckptErr("ps")
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 6 && f[1] == pod && f[2] == ctr {
			return line
		}
	}
	return ""
}

func (a *agent) waitRunning(pod, ctr string) string {
	a.t.Helper()
	var line string
	a.waitFor(func() bool {
		line = a.psLine(pod, ctr)
		return strings.Contains(line, " running ")
	}, pod+"/"+ctr+" running")
	return strings.Fields(line)[3]
}

func (a *agent) waitFor(cond func() bool, what string) {
	a.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	log, _ := os.ReadFile(a.logPath)
	a.t.Fatalf("timed out waiting for %s; agent log:\n%s", what, log)
}

// containerLog returns the path of a container's log by its short ID.
func (a *agent) containerLog(shortID string) string {
	matches, _ := filepath.Glob(filepath.Join(a.rootDir, "ckpt", "containers", shortID+"*", "container.log"))
	if len(matches) != 1 {
		a.t.Fatalf("no log for container %s", shortID)
	}
	return matches[0]
}

// removeAll stops the agent's containers so that nothing outlives the test.
func (a *agent) removeAll() {
	os.RemoveAll(a.manifests)
	os.MkdirAll(a.manifests, 0o755)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, ckptBin, "--root-dir", a.rootDir, "rm", "--all").CombinedOutput()
	if err != nil {
		a.t.Logf("cleanup: ckpt rm --all: %v\n%s", err, out)
	}
}

// countsIn reads the counter values in a CRI log file.
func countsIn(t *testing.T, path string) []int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, line := range strings.Split(string(b), "\n") {
		_, msg, ok := strings.Cut(line, " stdout F count ")
		if !ok {
			continue
		}
		if n, err := strconv.Atoi(strings.TrimSpace(msg)); err == nil {
			out = append(out, n)
		}
	}
	return out
}

// keepsCounting checks that a container's log grows.
func keepsCounting(t *testing.T, logPath string) {
	t.Helper()
	before := len(countsIn(t, logPath))
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if len(countsIn(t, logPath)) > before+1 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("container stopped counting (log %s)", logPath)
}
