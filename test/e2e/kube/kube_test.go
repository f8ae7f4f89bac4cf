package kubee2e

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/ckpt-dev/ckpt/pkg/client"
)

func kubectl(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	out, err := kubectlErr(stdin, args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// inNetns is a command run in the cluster's network namespace, where the
// API server (127.0.0.1:6443) and the node (192.0.2.1) are.
func inNetns(name string, args ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"--net=" + env["CKPT_KUBE_NETNS"], name}, args...)...)
}

func kubectlErr(stdin string, args ...string) (string, error) {
	cmd := inNetns(env["KUBECTL"], append([]string{"--kubeconfig", env["KUBECONFIG"]}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// runPlugin runs kubectl-checkpoint with the admin kubeconfig.
func runPlugin(args ...string) (stdout, stderr string, err error) {
	cmd := inNetns(plugin, append([]string{"--kubeconfig", env["KUBECONFIG"]}, args...)...)
	var o, e strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

// overlay writes a kustomization over deploy/ that changes only what this
// machine needs: the runtime socket and checkpoints directory live in the
// test cluster's directory, the API server is on the namespace's loopback
// and the image is the imported one (never pulled). Port 10270 and the
// address stay: the cluster's network namespace is private.
func overlay(t *testing.T, ckptRoot string) string {
	t.Helper()
	deploy, _ := filepath.Abs(filepath.Join(repoRoot, "deploy"))
	b, err := os.ReadFile(filepath.Join(deploy, "daemonset.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var ds appsv1.DaemonSet
	if err := yaml.UnmarshalStrict(b, &ds); err != nil {
		t.Fatal(err)
	}
	spec := ds.Spec.Template.Spec
	c := spec.Containers[0]
	var args []string
	for _, a := range c.Args {
		switch {
		case strings.HasPrefix(a, "--root-dir="):
			a = "--root-dir=" + ckptRoot
		case strings.HasPrefix(a, "--container-runtime-endpoint="):
			a = "--container-runtime-endpoint=unix://" + env["CKPT_KUBE_CONTAINERD_SOCK"]
		}
		args = append(args, a)
	}
	ops := []map[string]any{
		{"op": "replace", "path": "/spec/template/spec/containers/0/args", "value": args},
		{"op": "replace", "path": "/spec/template/spec/containers/0/imagePullPolicy", "value": "Never"},
	}
	paths := map[string]string{ // volume name -> its path here
		"state":       ckptRoot,
		"checkpoints": filepath.Join(ckptRoot, "checkpoints"),
		"cri-socket":  env["CKPT_KUBE_CONTAINERD_SOCK"],
	}
	for i, m := range c.VolumeMounts {
		if p, ok := paths[m.Name]; ok {
			ops = append(ops, map[string]any{"op": "replace", "path": fmt.Sprintf("/spec/template/spec/containers/0/volumeMounts/%d/mountPath", i), "value": p})
		}
	}
	for i, v := range spec.Volumes {
		if p, ok := paths[v.Name]; ok && v.HostPath != nil {
			ops = append(ops, map[string]any{"op": "replace", "path": fmt.Sprintf("/spec/template/spec/volumes/%d/hostPath/path", i), "value": p})
		}
	}
	dsPatch, _ := json.Marshal(ops)

	b, err = os.ReadFile(filepath.Join(deploy, "kubeconfig.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cm corev1.ConfigMap
	if err := yaml.UnmarshalStrict(b, &cm); err != nil {
		t.Fatal(err)
	}
	kc := strings.ReplaceAll(cm.Data["kubeconfig"], "https://kubernetes.default.svc", env["CKPT_KUBE_APISERVER"])
	cmPatch, _ := json.Marshal([]map[string]any{{"op": "replace", "path": "/data/kubeconfig", "value": kc}})

	dir := filepath.Join(env["CKPT_KUBE_DIR"], "overlay")
	os.MkdirAll(dir, 0o700)
	rel, err := filepath.Rel(dir, deploy)
	if err != nil {
		t.Fatal(err)
	}
	k, _ := json.Marshal(map[string]any{
		"apiVersion": "kustomize.config.k8s.io/v1beta1",
		"kind":       "Kustomization",
		"resources":  []string{rel},
		"patches": []map[string]any{
			{"target": map[string]string{"kind": "DaemonSet", "name": "ckpt"}, "patch": string(dsPatch)},
			{"target": map[string]string{"kind": "ConfigMap", "name": "ckpt-kubeconfig"}, "patch": string(cmPatch)},
		},
	})
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), k, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

const counterPod = `apiVersion: v1
kind: Pod
metadata:
  name: counter
  namespace: default
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: counter
    image: localhost/counter:latest
    imagePullPolicy: Never
`

// Identities for the authorization cases: each ServiceAccount may look up
// pods and nodes (so the plugin gets as far as the node); "checkpointer"
// also has ckpt:checkpoint, "reader" ckpt:archive-reader.
const identities = `apiVersion: v1
kind: ServiceAccount
metadata: {name: checkpointer, namespace: default}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: reader, namespace: default}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: nobody, namespace: default}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: e2e:lookup}
rules:
- {apiGroups: [""], resources: ["pods", "nodes"], verbs: ["get", "list"]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: e2e:lookup}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: e2e:lookup}
subjects:
- {kind: ServiceAccount, name: checkpointer, namespace: default}
- {kind: ServiceAccount, name: reader, namespace: default}
- {kind: ServiceAccount, name: nobody, namespace: default}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: e2e:checkpoint}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: ckpt:checkpoint}
subjects:
- {kind: ServiceAccount, name: checkpointer, namespace: default}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: e2e:archive-reader}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: ckpt:archive-reader}
subjects:
- {kind: ServiceAccount, name: reader, namespace: default}
`

var archiveName = regexp.MustCompile(`^checkpoint-counter_default-counter-\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)\.tar$`)

func TestKubernetes(t *testing.T) {
	needCluster(t)
	ckptRoot := filepath.Join(env["CKPT_KUBE_DIR"], "ckpt")
	node := env["CKPT_KUBE_NODE"]
	kubeletURL := "https://" + env["CKPT_KUBE_NODE_IP"] + ":" + env["CKPT_KUBE_KUBELET_PORT"]
	agentURL := "https://" + env["CKPT_KUBE_NODE_IP"] + ":10270"

	t.Run("deploy", func(t *testing.T) {
		ctr := filepath.Join(envOr("CKPT_CONTAINERD_BIN", "/opt/ckpt/containerd/bin"), "ctr")
		if out, err := exec.Command(ctr, "--address", env["CKPT_KUBE_CONTAINERD_SOCK"], "-n", "k8s.io", "images", "import", imageTar).CombinedOutput(); err != nil {
			t.Fatalf("ctr images import %s: %v\n%s", imageTar, err, out)
		}
		start := time.Now()
		kubectl(t, "", "apply", "-k", overlay(t, ckptRoot))
		if out, err := kubectlErr("", "-n", "ckpt-system", "rollout", "status", "daemonset/ckpt", "--timeout=180s"); err != nil {
			desc, _ := kubectlErr("", "-n", "ckpt-system", "describe", "pods")
			logs, _ := kubectlErr("", "-n", "ckpt-system", "logs", "daemonset/ckpt")
			t.Fatalf("the DaemonSet did not roll out: %v\n%s\n%s\n%s", err, out, desc, logs)
		}
		phase := kubectl(t, "", "-n", "ckpt-system", "get", "pods", "-l", "app.kubernetes.io/name=ckpt", "-o", "jsonpath={.items[*].status.phase}")
		if phase != "Running" {
			t.Fatalf("agent pods are %q, want one Running", phase)
		}
		t.Logf("FIGURE deploy: DaemonSet pod Running %s after apply", time.Since(start).Round(time.Second))
	})
	if t.Failed() {
		return
	}

	t.Run("workload", func(t *testing.T) {
		kubectl(t, counterPod, "apply", "-f", "-")
		if out, err := kubectlErr("", "wait", "--for=condition=Ready", "pod/counter", "--timeout=120s"); err != nil {
			desc, _ := kubectlErr("", "describe", "pod", "counter")
			t.Fatalf("counter not Ready: %v\n%s\n%s", err, out, desc)
		}
	})
	if t.Failed() {
		return
	}

	kubectl(t, identities, "apply", "-f", "-")
	token := func(sa string) string {
		return strings.TrimSpace(kubectl(t, "", "create", "token", sa, "--duration=1h"))
	}
	tokens := map[string]string{"checkpointer": token("checkpointer"), "reader": token("reader"),
		"nobody": token("nobody"), "garbage": "not-a-token"}

	t.Run("kubectl checkpoint through the node proxy", func(t *testing.T) {
		stdout, stderr, err := runPlugin("counter")
		if err != nil {
			t.Fatalf("%v\n%s", err, stderr)
		}
		path := strings.TrimSpace(stdout)
		if filepath.Dir(path) != filepath.Join(env["CKPT_KUBE_DIR"], "kubelet", "checkpoints") || !archiveName.MatchString(filepath.Base(path)) {
			t.Fatalf("archive %q: want the kubelet's checkpoints directory and name", path)
		}
		if st, err := os.Stat(path); err != nil || st.Size() == 0 {
			t.Fatalf("archive %s: %v", path, err)
		}
		if !strings.Contains(stderr, "archive on node "+node) {
			t.Errorf("stderr %q does not say where the archive is", stderr)
		}
	})

	// The kubelet authorizes its callers as nodes/checkpoint; the plugin
	// reaches it with the caller's own token (--via=node).
	t.Run("authorization", func(t *testing.T) {
		for _, c := range []struct {
			who     string
			wantErr string
		}{
			{"checkpointer", ""},
			{"nobody", "403"},
			{"garbage", "Unauthorized"}, // the API server refuses it first
		} {
			t.Run(c.who, func(t *testing.T) {
				stdout, stderr, err := runPlugin("--via=node", "--node-cacert", env["CKPT_KUBE_CA"], "--token", tokens[c.who], "counter")
				if c.wantErr == "" {
					if err != nil || !archiveName.MatchString(filepath.Base(strings.TrimSpace(stdout))) {
						t.Fatalf("%v %q\n%s", err, stdout, stderr)
					}
					return
				}
				if err == nil || !strings.Contains(stderr, c.wantErr) {
					t.Fatalf("want an error with %q, got %v %q", c.wantErr, err, stderr)
				}
			})
		}
		// Through the node proxy the API server asks for nodes/proxy,
		// which no ckpt role grants.
		if _, stderr, err := runPlugin("--token", tokens["checkpointer"], "counter"); err == nil || !strings.Contains(stderr, "forbidden") {
			t.Errorf("node proxy with only ckpt:checkpoint: %v %q, want forbidden", err, stderr)
		}
		// Straight to each server, with pkg/client: the kubelet and ckpt
		// answer alike.
		for _, server := range []string{kubeletURL, agentURL} {
			for who, want := range map[string]int{"checkpointer": 200, "nobody": 403, "garbage": 401} {
				a := inCluster(t, helperRequest{Client: true, URL: server, Path: "/checkpoint/default/counter/counter",
					Token: tokens[who], CA: env["CKPT_KUBE_CA"], Insecure: server == agentURL})
				if a.Status != want {
					t.Errorf("%s as %s: %d %q, want %d", server, who, a.Status, a.Body, want)
				}
			}
		}
	})

	t.Run("kubelet and ckpt agree", func(t *testing.T) {
		post := func(base, path string) helperAnswer {
			return inCluster(t, helperRequest{URL: base, Path: path, Token: tokens["checkpointer"],
				CA: env["CKPT_KUBE_CA"], Insecure: base == agentURL})
		}
		var archives [2]string
		for _, c := range []struct {
			name, path string
		}{
			{"checkpoint", "/checkpoint/default/counter/counter"},
			{"trailing slash", "/checkpoint/default/counter/counter/"},
			{"timeout below the default", "/checkpoint/default/counter/counter?timeout=1"},
			{"no such pod", "/checkpoint/default/nopod/counter"},
			{"no such container", "/checkpoint/default/counter/nope"},
			{"no such namespace", "/checkpoint/elsewhere/counter/counter"},
		} {
			k, a := post(kubeletURL, c.path), post(agentURL, c.path)
			t.Logf("%s: kubelet %d %q, ckpt %d %q", c.name, k.Status, k.Body, a.Status, a.Body)
			if k.Status != a.Status {
				t.Errorf("%s: kubelet %d %q, ckpt %d %q", c.name, k.Status, k.Body, a.Status, a.Body)
				continue
			}
			if k.Status != 200 {
				if k.Body != a.Body {
					t.Errorf("%s: kubelet %q, ckpt %q", c.name, k.Body, a.Body)
				}
				continue
			}
			for i, body := range []string{k.Body, a.Body} {
				var items struct{ Items []string }
				if err := json.Unmarshal([]byte(body), &items); err != nil || len(items.Items) != 1 || !archiveName.MatchString(filepath.Base(items.Items[0])) {
					t.Errorf("%s: answer %q", c.name, body)
					continue
				}
				archives[i] = items.Items[0]
			}
		}
		// Both archives were written by the same containerd: the same entries.
		k, a := topLevel(t, archives[0]), topLevel(t, archives[1])
		for _, e := range k {
			if !slices.Contains(a, e) {
				t.Errorf("ckpt's archive lacks %s (kubelet's has %v, ckpt's %v)", e, k, a)
			}
		}
		if filepath.Dir(archives[1]) != filepath.Join(ckptRoot, "checkpoints") {
			t.Errorf("ckpt's archive %s is not in its checkpoints directory", archives[1])
		}
	})

	t.Run("kubectl checkpoint ls", func(t *testing.T) {
		args := []string{"--node-insecure-skip-tls-verify", "ls", "--node", node}
		stdout, stderr, err := runPlugin(append([]string{"--token", tokens["reader"]}, args...)...)
		if err != nil {
			t.Fatalf("%v\n%s", err, stderr)
		}
		if !strings.Contains(stdout, "checkpoint-counter_default-counter-") {
			t.Errorf("ls shows no archive of counter:\n%s", stdout)
		}
		// Download the first archive listed and compare it with the file.
		var name string
		for _, f := range strings.Fields(stdout) {
			if archiveName.MatchString(f) {
				name = f
				break
			}
		}
		out := filepath.Join(t.TempDir(), "got.tar")
		if _, stderr, err := runPlugin("--token", tokens["reader"], "--node-insecure-skip-tls-verify", "get", name, "--node", node, "-o", out); err != nil {
			t.Fatalf("get %s: %v\n%s", name, err, stderr)
		}
		got, err1 := os.ReadFile(out)
		want, err2 := os.ReadFile(filepath.Join(ckptRoot, "checkpoints", name))
		if err1 != nil || err2 != nil || len(got) == 0 || !bytes.Equal(got, want) {
			t.Errorf("downloaded %s differs from the node's file (%v, %v, %d vs %d bytes)", name, err1, err2, len(got), len(want))
		}
		// ckpt:checkpoint may checkpoint but not list.
		if _, stderr, err := runPlugin(append([]string{"--token", tokens["checkpointer"]}, args...)...); err == nil || !strings.Contains(stderr, "403") {
			t.Errorf("ls as checkpointer: %v %q, want 403", err, stderr)
		}
	})

	t.Run("access log", func(t *testing.T) {
		logs := kubectl(t, "", "-n", "ckpt-system", "logs", "daemonset/ckpt")
		if !strings.Contains(logs, "msg=HTTP method=POST path=/checkpoint/default/counter/counter user=system:serviceaccount:default:checkpointer status=200") {
			t.Errorf("no access log line for the checkpoint:\n%s", tail([]byte(logs), 2048))
		}
	})
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// topLevel lists an archive's top-level entries.
func topLevel(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	seen := map[string]bool{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		first, _, _ := strings.Cut(strings.TrimPrefix(h.Name, "./"), "/")
		seen[first] = true
	}
	var out []string
	for k := range seen {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

const helperEnv = "CKPT_KUBE_HELPER"

// helperRequest is one POST a helper process sends from inside the
// cluster's network namespace with pkg/client: a typed Checkpoint (Client)
// or client.Raw (so paths a typed call never sends, like a trailing slash,
// can be compared).
type helperRequest struct {
	Client   bool
	URL      string
	Path     string
	Token    string
	CA       string
	Insecure bool // ckpt's self-signed certificate
}

type helperAnswer struct {
	Status int
	Body   string
	Err    string
}

// inCluster runs req in a copy of this test binary inside the namespace.
func inCluster(t *testing.T, req helperRequest) helperAnswer {
	t.Helper()
	b, _ := json.Marshal(req)
	cmd := inNetns(os.Args[0], "-test.run=^TestHelperRequest$")
	cmd.Env = append(os.Environ(), helperEnv+"="+string(b))
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	_, js, ok := strings.Cut(string(out), "HELPER:")
	if !ok {
		t.Fatalf("helper said %q", out)
	}
	js, _, _ = strings.Cut(js, "\n")
	var a helperAnswer
	if err := json.Unmarshal([]byte(js), &a); err != nil {
		t.Fatal(err)
	}
	if a.Err != "" {
		t.Fatalf("helper: %s", a.Err)
	}
	return a
}

// TestHelperRequest is the helper process; it does nothing in a normal run.
func TestHelperRequest(t *testing.T) {
	spec := os.Getenv(helperEnv)
	if spec == "" {
		return
	}
	var req helperRequest
	var a helperAnswer
	defer func() {
		b, _ := json.Marshal(a)
		fmt.Printf("HELPER:%s\n", b)
	}()
	if err := json.Unmarshal([]byte(spec), &req); err != nil {
		a.Err = err.Error()
		return
	}
	tlsCfg := &tls.Config{InsecureSkipVerify: req.Insecure}
	if !req.Insecure {
		pem, err := os.ReadFile(req.CA)
		if err != nil {
			a.Err = err.Error()
			return
		}
		tlsCfg.RootCAs = x509.NewCertPool()
		tlsCfg.RootCAs.AppendCertsFromPEM(pem)
	}
	if req.Client {
		c, err := client.New(client.Config{Server: req.URL, Token: req.Token, TLS: tlsCfg})
		if err != nil {
			a.Err = err.Error()
			return
		}
		ref, err := client.ParseRef(strings.TrimPrefix(req.Path, "/checkpoint/"))
		if err != nil {
			a.Err = err.Error()
			return
		}
		p, err := c.Checkpoint(context.Background(), ref, client.CheckpointOptions{})
		var se *client.StatusError
		switch {
		case err == nil:
			a.Status, a.Body = 200, p
		case errors.As(err, &se):
			a.Status, a.Body = se.Status, se.Message
		default:
			a.Err = err.Error()
		}
		return
	}
	c, err := client.New(client.Config{Server: req.URL, Token: req.Token, TLS: tlsCfg})
	if err != nil {
		a.Err = err.Error()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	resp, err := c.Raw(ctx, http.MethodPost, req.Path, nil)
	if err != nil {
		a.Err = err.Error()
		return
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	a.Status, a.Body = resp.StatusCode, string(b)
}
