package e2e

import (
	"context"
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ckpt-dev/ckpt/internal/auth/authtest"
	"github.com/ckpt-dev/ckpt/pkg/client"
)

// endpoint is one route of the API, with what the kubelet-style authorizer
// is asked for it and what an authorized caller gets.
type endpoint struct {
	name        string
	method      string
	path        func(id string) string // id names the caller, for unique targets
	verb        string
	subresource string
	okStatus    int
}

// identity is one kind of caller.
type identity struct {
	name   string
	token  string           // bearer token, "" = none
	cert   *tls.Certificate // client certificate, nil = none
	status int              // 0 = the endpoint's okStatus; -1 = TLS handshake refused
	user   string           // named in the 403 answer
}

// TestAuthorizationMatrix runs every endpoint against every kind of caller
// on a real `ckpt serve` over HTTPS, with real TokenReview and
// SubjectAccessReview webhook servers and a client CA.
func TestAuthorizationMatrix(t *testing.T) {
	needE2E(t)
	allowed := map[string]bool{"e2e-admin": true, "admin": true, "cert-user": true}
	hooks := authtest.StartWebhooks(t, func(user, verb, subresource string) bool { return allowed[user] })
	ca := authtest.NewCA(t)
	common := []string{
		"--authorization-mode", "Webhook", "--authentication-token-webhook", "--kubeconfig", hooks.Kubeconfig,
		"--client-ca-file", ca.File,
		// Ask the webhooks every time, so that each cell is decided afresh.
		"--authorization-webhook-cache-authorized-ttl", "0s", "--authorization-webhook-cache-unauthorized-ttl", "0s",
		"--authentication-token-webhook-cache-ttl", "0s",
	}
	a := newAgent(t, withHTTPS(), withArgs(append([]string{"--anonymous-auth=true"}, common...)...))
	closed := newAgent(t, withHTTPS(), withArgs(append([]string{"--anonymous-auth=false"}, common...)...))
	a.addPod("counter", counterManifest("counter", nil))
	a.waitRunning("counter-n1", "counter")
	keepArchive, resp := a.checkpoint("default/counter-n1/counter", "")
	if keepArchive == "" {
		t.Fatalf("checkpoint: %d %s", resp.status, resp.body)
	}
	keep := filepath.Base(keepArchive)

	// Archives the authorized callers delete, one each.
	victims := map[string]string{}
	endpoints := []endpoint{
		{"checkpoint", "POST", func(string) string { return "/checkpoint/default/counter-n1/counter" }, "create", "checkpoint", 200},
		{"list", "GET", func(string) string { return "/checkpoints" }, "list", "checkpoint", 200},
		{"download", "GET", func(string) string { return "/checkpoints/" + keep }, "get", "checkpoint", 200},
		{"delete", "DELETE", func(id string) string {
			if v := victims[id]; v != "" {
				return "/checkpoints/" + v
			}
			return "/checkpoints/" + keep
		}, "delete", "checkpoint", 200},
		{"restore", "POST", func(id string) string { return "/restore/default/restored-" + id + "/counter?archive=" + keep }, "create", "restore", 201},
		// Stops what the restore row just restored for the same caller.
		{"stop", "POST", func(id string) string { return "/stop/default/restored-" + id + "/counter" }, "create", "stop", 200},
		{"healthz", "GET", func(string) string { return "/healthz" }, "get", "healthz", 200}, // then proxy, as the kubelet
		{"metrics", "GET", func(string) string { return "/metrics" }, "get", "metrics", 200},
	}
	certUser := ca.ClientCert(t, "cert-user", "ops")
	certNobody := ca.ClientCert(t, "cert-nobody")
	otherCA := authtest.NewCA(t)
	certForeign := otherCA.ClientCert(t, "admin")
	identities := []identity{
		{name: "anonymous", status: 403, user: "system:anonymous"},
		{name: "bad-token", token: "not-a-known-token", status: 401},
		{name: "token-no-permission", token: authtest.Token("nobody"), status: 403, user: "nobody"},
		{name: "cert-no-permission", cert: &certNobody, status: 403, user: "cert-nobody"},
		{name: "cert-unknown-ca", cert: &certForeign, status: -1},
		{name: "token-authorized", token: authtest.Token("admin")},
		{name: "cert-authorized", cert: &certUser},
	}

	for _, id := range identities {
		if id.status == 0 {
			// A fresh archive for this caller to delete.
			v, resp := a.checkpoint("default/counter-n1/counter", "")
			if v == "" {
				t.Fatalf("checkpoint: %d %s", resp.status, resp.body)
			}
			victims[id.name] = filepath.Base(v)
		}
		c := a.api(id.token, id.cert)
		for _, e := range endpoints {
			t.Run(id.name+"/"+e.name, func(t *testing.T) {
				ctrsBefore := len(a.containerDirs())
				if id.status == -1 {
					// VerifyClientCertIfGiven: a certificate from another
					// CA ends the handshake before any HTTP.
					_, err := rawCall(context.Background(), c, e.method, e.path(id.name), nil)
					if err == nil || !strings.Contains(err.Error(), "unknown certificate authority") {
						t.Fatalf("certificate of an unknown CA: %v, want the handshake refused", err)
					}
					return
				}
				status, body := call(t, c, e.method, e.path(id.name))
				want := id.status
				if want == 0 {
					want = e.okStatus
				}
				if status != want {
					t.Fatalf("%s %s: %d %q, want %d", e.method, e.path(id.name), status, body, want)
				}
				switch want {
				case 401:
					if body != "Unauthorized" {
						t.Errorf("401 body %q", body)
					}
				case 403:
					for _, s := range []string{"user=" + id.user, "verb=" + e.verb, "resource=nodes", "subresource=" + e.subresource} {
						if !strings.Contains(body, s) {
							t.Errorf("403 body %q lacks %q", body, s)
						}
					}
				}
				if want >= 400 {
					// A refused request changed nothing.
					if _, err := os.Stat(filepath.Join(a.rootDir, "checkpoints", keep)); err != nil {
						t.Errorf("archive gone after a refused %s: %v", e.name, err)
					}
					if n := len(a.containerDirs()); n != ctrsBefore {
						t.Errorf("%d containers after a refused %s, want %d", n, e.name, ctrsBefore)
					}
				}
			})
		}
	}

	// Anonymous auth off: no credential is 401 on every endpoint, a
	// valid credential still works.
	for _, e := range endpoints {
		t.Run("anonymous-disabled/"+e.name, func(t *testing.T) {
			status, body := call(t, closed.api("", nil), e.method, e.path("x"))
			if status != 401 || body != "Unauthorized" {
				t.Fatalf("%s %s without credentials: %d %q, want 401", e.method, e.path("x"), status, body)
			}
		})
	}
	if status, body := call(t, closed.api("", &certUser), "GET", "/checkpoints"); status != 200 {
		t.Errorf("client certificate with anonymous auth off: %d %q", status, body)
	}

	// The authorizer saw each endpoint with the kubelet's attributes.
	seen := map[string]bool{}
	for _, r := range hooks.SubjectAccessReviews() {
		if ra := r.ResourceAttributes; ra != nil && ra.Resource == "nodes" {
			seen[ra.Verb+" "+ra.Subresource] = true
		}
	}
	for _, e := range endpoints {
		if !seen[e.verb+" "+e.subresource] {
			t.Errorf("no SubjectAccessReview for %s (%s %s)", e.name, e.verb, e.subresource)
		}
	}
}

// call sends one request through c and returns the status and (at most
// 200 bytes of a successful) body.
func call(t *testing.T, c *client.Client, method, path string) (int, string) {
	t.Helper()
	resp, err := rawCall(context.Background(), c, method, path, nil)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	if len(resp.body) > 200 && resp.status < 300 {
		resp.body = resp.body[:200] // an archive or metrics
	}
	return resp.status, resp.body
}
