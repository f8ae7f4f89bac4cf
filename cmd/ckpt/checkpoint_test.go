package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ckpt-dev/ckpt/internal/runtime"
	"github.com/ckpt-dev/ckpt/internal/server"
)

// stubCheckpointer stands in for the checkpoint service; the HTTP server,
// TLS and the client are real.
type stubCheckpointer struct {
	mu      sync.Mutex
	err     error
	ref     runtime.Ref
	timeout time.Duration
}

func (s *stubCheckpointer) Checkpoint(_ context.Context, ref runtime.Ref, opts runtime.CheckpointOptions) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ref, s.timeout = ref, opts.Timeout
	if s.err != nil {
		return "", s.err
	}
	return "/var/lib/kubelet/checkpoints/checkpoint-" + ref.Pod + "_" + ref.Namespace + "-" + ref.Container + "-x.tar", nil
}

// tokenGuard accepts only "Bearer s3cret".
type tokenGuard struct{}

func (tokenGuard) Wrap(_, _ string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer s3cret" {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(http.StatusUnauthorized)
			w.Write([]byte("Unauthorized"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

func startServer(t *testing.T, c server.Checkpointer) (url, caFile string) {
	t.Helper()
	dir := t.TempDir()
	tlsCfg, err := server.TLSConfig("", "", dir, "node1", nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(server.New(server.Options{CheckpointEnabled: true}, c, tokenGuard{}, nil))
	srv.TLS = tlsCfg
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.URL, filepath.Join(dir, server.SelfSignedCertName)
}

func runCLI(args ...string) (stdout, stderr string, err error) {
	root := newRootCommand()
	var out, errb bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetArgs(args)
	err = root.Execute()
	return out.String(), errb.String(), err
}

func TestCheckpointCommand(t *testing.T) {
	stub := &stubCheckpointer{}
	url, ca := startServer(t, stub)

	out, errOut, err := runCLI("checkpoint", "default/web/app", "--server", url, "--cacert", ca, "--token", "s3cret", "--timeout", "1m30s")
	if err != nil {
		t.Fatalf("checkpoint: %v (stderr %q)", err, errOut)
	}
	if want := "/var/lib/kubelet/checkpoints/checkpoint-web_default-app-x.tar\n"; out != want {
		t.Errorf("stdout = %q, want %q", out, want)
	}
	if errOut != "" {
		t.Errorf("stderr is not a terminal, yet got %q", errOut)
	}
	if stub.timeout != 90*time.Second {
		t.Errorf("server got timeout %v, want 1m30s", stub.timeout)
	}
	if want := (runtime.Ref{Namespace: "default", Pod: "web", Container: "app"}); stub.ref != want {
		t.Errorf("server got %+v", stub.ref)
	}
}

func TestCheckpointCommandErrors(t *testing.T) {
	stub := &stubCheckpointer{err: runtime.ErrPodNotFound}
	url, ca := startServer(t, stub)
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name string
		args []string
		want string
	}{
		{"server message", []string{"--token-file", tokenFile}, "server answered 404 Not Found: pod does not exist"},
		{"no token", nil, "server answered 401 Unauthorized: Unauthorized"},
		{"bad name", []string{"--token", "s3cret", "--timeout", "1s"}, "server answered 400 Bad Request: invalid"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			target := "default/web/app"
			if c.name == "bad name" {
				target = "default/Web/app"
			}
			args := append([]string{"checkpoint", target, "--server", url, "--cacert", ca}, c.args...)
			out, _, err := runCLI(args...)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want %q", err, c.want)
			}
			if out != "" {
				t.Errorf("stdout = %q on failure", out)
			}
		})
	}

	// Without the CA the self-signed server is not trusted...
	if _, _, err := runCLI("checkpoint", "default/web/app", "--server", url, "--token", "s3cret"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("untrusted server: err = %v", err)
	}
	// ...unless verification is explicitly skipped.
	stub.mu.Lock()
	stub.err = nil
	stub.mu.Unlock()
	if _, _, err := runCLI("checkpoint", "default/web/app", "--server", url, "--token", "s3cret", "--insecure-skip-tls-verify"); err != nil {
		t.Errorf("--insecure-skip-tls-verify: %v", err)
	}
}

// podStub also checkpoints whole pods.
type podStub struct {
	stubCheckpointer
	pod  string
	opts runtime.CheckpointOptions
}

func (s *podStub) CheckpointPod(_ context.Context, ns, pod string, opts runtime.CheckpointOptions) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pod, s.opts = ns+"/"+pod, opts
	return "/var/lib/kubelet/checkpoints/checkpoint-" + pod + "_" + ns + "-x.tar", nil
}

// NAMESPACE/POD asks for the pod route, POST /checkpoint/NS/POD.
func TestCheckpointPodCommand(t *testing.T) {
	stub := &podStub{}
	url, ca := startServer(t, stub)
	out, _, err := runCLI("checkpoint", "default/web", "--server", url, "--cacert", ca, "--token", "s3cret", "--tcp-established", "--timeout", "90s")
	if err != nil || strings.TrimSpace(out) != "/var/lib/kubelet/checkpoints/checkpoint-web_default-x.tar" {
		t.Fatalf("out %q, err %v", out, err)
	}
	if stub.pod != "default/web" || !stub.opts.TCPEstablished || stub.opts.Timeout != 90*time.Second || stub.ref != (runtime.Ref{}) {
		t.Errorf("server got pod %q %+v, container %+v", stub.pod, stub.opts, stub.ref)
	}

	url, ca = startServer(t, &stubCheckpointer{})
	_, _, err = runCLI("checkpoint", "default/web", "--server", url, "--cacert", ca, "--token", "s3cret")
	// This server has no pod route: a 404 naming the pod call.
	if err == nil || !strings.Contains(err.Error(), "checkpoint pod default/web: server answered 404") {
		t.Fatalf("err = %v", err)
	}
}

func TestCheckpointCommandUsage(t *testing.T) {
	for _, args := range [][]string{
		{"checkpoint", "default"},
		{"checkpoint", "default/web/"},
		{"checkpoint", "default/web/app/x"},
		{"checkpoint", "default/../app"},
		{"checkpoint", "default//app"},
		{"checkpoint", "a/b/c", "--token", "x", "--token-file", "y"},
		{"checkpoint", "a/b/c", "--cert", "x"},
		{"checkpoint", "a/b/c", "--server", "ftp://x"},
		{"checkpoint", "a/b/c", "--server", "127.0.0.1:10250"},
		{"checkpoint", "a/b/c", "--timeout", "-1s", "--server", "http://127.0.0.1:1"},
	} {
		if _, _, err := runCLI(args...); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
}

// TestMain keeps a user's client config and root dir out of the tests.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ckpt-cmd-test-")
	if err != nil {
		panic(err)
	}
	os.Setenv("CKPT_CONFIG", filepath.Join(dir, "config.yaml"))
	os.Setenv("CKPT_ROOT_DIR", filepath.Join(dir, "root"))
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
