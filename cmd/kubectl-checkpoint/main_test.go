package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestPickContainer(t *testing.T) {
	pod := func(ann map[string]string, names ...string) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p", Annotations: ann}}
		for _, n := range names {
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: n})
		}
		p.Spec.InitContainers = []corev1.Container{{Name: "init"}}
		return p
	}
	for _, c := range []struct {
		name    string
		pod     *corev1.Pod
		flag    string
		want    string
		wantErr string
	}{
		{"only container", pod(nil, "app"), "", "app", ""},
		{"named", pod(nil, "app", "side"), "side", "side", ""},
		{"init container", pod(nil, "app"), "init", "init", ""},
		{"missing", pod(nil, "app"), "nope", "", `no container "nope"`},
		{"ambiguous", pod(nil, "app", "side"), "", "", "choose one with -c"},
		{"default annotation", pod(map[string]string{"kubectl.kubernetes.io/default-container": "side"}, "app", "side"), "", "side", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := pickContainer(c.pod, c.flag)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err %v, want %q", err, c.wantErr)
				}
				return
			}
			if err != nil || got != c.want {
				t.Fatalf("got %q %v, want %q", got, err, c.want)
			}
		})
	}
}

// fakeAPI is an API server with one pod on node n1, a node whose kubelet
// is at kubelet, and a node proxy that records what reaches it.
type fakeAPI struct {
	mu   sync.Mutex
	seen []string
}

func (f *fakeAPI) handler() http.Handler {
	mux := http.NewServeMux()
	writeJSON := func(w http.ResponseWriter, v any) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(v)
	}
	mux.HandleFunc("GET /api/v1/namespaces/work/pods/web", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, corev1.Pod{TypeMeta: metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"},
			ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "work"},
			Spec:       corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "app"}}}})
	})
	mux.HandleFunc("/api/v1/nodes/n1/proxy/", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.seen = append(f.seen, r.Method+" "+r.URL.Path+" "+r.Header.Get("Authorization"))
		f.mu.Unlock()
		writeJSON(w, map[string][]string{"items": {"/var/lib/kubelet/checkpoints/x.tar"}})
	})
	return mux
}

func kubeconfig(t *testing.T, server string) string {
	p := filepath.Join(t.TempDir(), "kubeconfig")
	os.WriteFile(p, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: %q, insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: user-token}}]
contexts: [{name: x, context: {cluster: c, user: u, namespace: work}}]
current-context: x
`, server)), 0o600)
	return p
}

func TestCheckpointThroughNodeProxy(t *testing.T) {
	f := &fakeAPI{}
	srv := httptest.NewTLSServer(f.handler())
	defer srv.Close()
	var out, errb bytes.Buffer
	cmd := newRootCommand(&out, &errb)
	cmd.SetArgs([]string{"--kubeconfig", kubeconfig(t, srv.URL), "web", "--timeout", "30s"})
	if err := cmd.Execute(); err != nil {
		t.Fatalf("%v: %s", err, errb.String())
	}
	if got := strings.TrimSpace(out.String()); got != "/var/lib/kubelet/checkpoints/x.tar" {
		t.Errorf("printed %q", got)
	}
	want := "POST /api/v1/nodes/n1/proxy/checkpoint/work/web/app Bearer user-token"
	if len(f.seen) != 1 || f.seen[0] != want {
		t.Errorf("proxy saw %v, want [%s]", f.seen, want)
	}
	if !strings.Contains(errb.String(), "archive on node n1") {
		t.Errorf("stderr %q", errb.String())
	}
}

func TestUnknownSubcommandAndFlag(t *testing.T) {
	for _, args := range [][]string{{"web", "extra"}, {"--bogus", "web"}, {"ls", "x"}, {"--via", "carrier-pigeon", "web"}} {
		cmd := newRootCommand(&bytes.Buffer{}, &bytes.Buffer{})
		cmd.SetArgs(append([]string{"--kubeconfig", "/nonexistent"}, args...))
		if err := cmd.Execute(); err == nil {
			t.Errorf("%v: no error", args)
		}
	}
}

// --token is the caller: the kubeconfig's client certificate is not sent
// beside it (the API server would authenticate the certificate first).
func TestTokenReplacesKubeconfigCredentials(t *testing.T) {
	p := filepath.Join(t.TempDir(), "kubeconfig")
	os.WriteFile(p, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {client-certificate-data: Y2VydA==, client-key-data: a2V5}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`), 0o600)
	o := &options{kubeconfig: p, token: "sa-token"}
	cfg, err := o.restConfig()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.CertData != nil || cfg.KeyData != nil || cfg.BearerToken != "sa-token" {
		t.Fatalf("cert %q key %q token %q", cfg.CertData, cfg.KeyData, cfg.BearerToken)
	}
	o.token = ""
	if cfg, err = o.restConfig(); err != nil || string(cfg.CertData) != "cert" {
		t.Fatalf("without --token the kubeconfig's certificate is used: %v %q", err, cfg.CertData)
	}
}
