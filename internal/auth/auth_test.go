package auth

import (
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/ckpt-dev/ckpt/internal/auth/authtest"
)

const node = "node-1"

// fastBackoff keeps webhook retries short in tests.
var fastBackoff = &wait.Backoff{Duration: time.Millisecond, Factor: 1, Steps: 2}

// echo answers 200 with the authenticated user and groups.
var echo = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	name, ok := UserFrom(r.Context())
	if !ok {
		http.Error(w, "no user in context", http.StatusInternalServerError)
		return
	}
	_, _ = io.WriteString(w, name+"|"+strings.Join(GroupsFrom(r.Context()), ","))
})

// serve runs h behind TLS as the kubelet does with a client CA: client
// certificates are requested, and verified by the x509 authenticator.
func serve(t *testing.T, a *Auth, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{ClientCAs: a.ClientCAs(), ClientAuth: tls.RequestClientCert}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

type request struct {
	method string
	token  string
	cert   *tls.Certificate
}

func do(t *testing.T, srv *httptest.Server, req request) (int, string, http.Header) {
	t.Helper()
	client := srv.Client()
	if req.cert != nil {
		tr := client.Transport.(*http.Transport).Clone()
		tr.TLSClientConfig.Certificates = []tls.Certificate{*req.cert}
		client = &http.Client{Transport: tr}
	}
	method := req.method
	if method == "" {
		method = http.MethodPost
	}
	r, err := http.NewRequest(method, srv.URL+"/checkpoint/default/pod/ctr", nil)
	if err != nil {
		t.Fatal(err)
	}
	if req.token != "" {
		r.Header.Set("Authorization", "Bearer "+req.token)
	}
	resp, err := client.Do(r)
	if err != nil {
		t.Fatalf("%s: %v", method, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body), resp.Header
}

func TestWrapMatrix(t *testing.T) {
	hooks := authtest.StartWebhooks(t, func(user, verb, subresource string) bool {
		return user == "alice" || (user == "carol" && verb == "get")
	})
	ca := authtest.NewCA(t)
	other := authtest.NewCA(t)
	aliceCert := ca.ClientCert(t, "alice", "ops", "sre")
	bobCert := ca.ClientCert(t, "bob")
	strangerCert := other.ClientCert(t, "alice")
	tokens := authtest.WriteTokenFile(t,
		authtest.TokenUser{Token: "file-alice", User: "alice", UID: "1", Groups: []string{"ops", "sre"}},
		authtest.TokenUser{Token: "file-dave", User: "dave", UID: "2"},
	)

	base := Config{NodeName: node, retryBackoff: fastBackoff, AuthorizationMode: ModeAlwaysAllow,
		WebhookAuthnCacheTTL: time.Minute, WebhookAuthzAuthorizedTTL: time.Minute, WebhookAuthzUnauthorizedTTL: time.Minute}
	anon := func(c *Config) { c.AnonymousAuth = true }
	webhookAuthn := func(c *Config) { c.WebhookAuthn = true; c.Kubeconfig = hooks.Kubeconfig }
	webhookAuthz := func(c *Config) { c.AuthorizationMode = ModeWebhook; c.Kubeconfig = hooks.Kubeconfig }
	tokenFile := func(c *Config) { c.TokenAuthFile = tokens }
	clientCA := func(c *Config) { c.ClientCAFile = ca.File }

	tests := []struct {
		name        string
		config      []func(*Config)
		req         request
		verb        string // Wrap's verb argument
		subresource string
		failAuthz   bool
		wantCode    int
		wantBody    string
		wantSAR     bool // the webhook must have seen this request
		wantVerb    string
	}{
		{name: "anonymous allowed when on", config: []func(*Config){anon},
			wantCode: 200, wantBody: "system:anonymous|system:unauthenticated"},
		{name: "anonymous rejected when off", config: []func(*Config){tokenFile},
			wantCode: 401, wantBody: "Unauthorized"},
		{name: "anonymous forbidden by webhook", config: []func(*Config){anon, webhookAuthz}, subresource: "checkpoint",
			wantCode: 403, wantBody: "Forbidden (user=system:anonymous, verb=create, resource=nodes, subresource=checkpoint)",
			wantSAR: true, wantVerb: "create"},
		{name: "bad token never falls back to anonymous", config: []func(*Config){anon, webhookAuthn},
			req: request{token: "not-a-token"}, wantCode: 401, wantBody: "Unauthorized"},
		{name: "bad token against token file", config: []func(*Config){anon, tokenFile},
			req: request{token: "file-nobody"}, wantCode: 401, wantBody: "Unauthorized"},
		{name: "valid token without permission", config: []func(*Config){webhookAuthn, webhookAuthz}, subresource: "checkpoint",
			req: request{token: authtest.Token("bob")}, wantCode: 403,
			wantBody: "Forbidden (user=bob, verb=create, resource=nodes, subresource=checkpoint)", wantSAR: true, wantVerb: "create"},
		{name: "authorized token", config: []func(*Config){webhookAuthn, webhookAuthz}, subresource: "checkpoint",
			req: request{token: authtest.Token("alice")}, wantCode: 200,
			wantBody: "alice|" + authtest.Group + ",system:authenticated", wantSAR: true, wantVerb: "create"},
		{name: "webhook token with AlwaysAllow", config: []func(*Config){webhookAuthn}, subresource: "restore",
			req: request{token: authtest.Token("bob")}, wantCode: 200, wantBody: "bob|" + authtest.Group + ",system:authenticated"},
		{name: "token file user", config: []func(*Config){tokenFile}, subresource: "checkpoint",
			req: request{token: "file-alice"}, wantCode: 200, wantBody: "alice|ops,sre,system:authenticated"},
		{name: "token file user authorized by webhook", config: []func(*Config){tokenFile, webhookAuthz}, subresource: "checkpoint",
			req: request{token: "file-alice"}, wantCode: 200, wantBody: "alice|ops,sre,system:authenticated", wantSAR: true, wantVerb: "create"},
		{name: "token file user forbidden by webhook", config: []func(*Config){tokenFile, webhookAuthz}, subresource: "metrics",
			req: request{method: http.MethodGet, token: "file-dave"}, wantCode: 403,
			wantBody: "Forbidden (user=dave, verb=get, resource=nodes, subresource=metrics)", wantSAR: true, wantVerb: "get"},
		{name: "token file first, webhook second", config: []func(*Config){tokenFile, webhookAuthn},
			req: request{token: authtest.Token("erin")}, wantCode: 200, wantBody: "erin|" + authtest.Group + ",system:authenticated"},
		{name: "client certificate", config: []func(*Config){clientCA, webhookAuthz}, subresource: "checkpoint",
			req: request{cert: &aliceCert}, wantCode: 200, wantBody: "alice|ops,sre,system:authenticated", wantSAR: true, wantVerb: "create"},
		{name: "client certificate without permission", config: []func(*Config){clientCA, webhookAuthz}, subresource: "checkpoint",
			req: request{cert: &bobCert}, wantCode: 403,
			wantBody: "Forbidden (user=bob, verb=create, resource=nodes, subresource=checkpoint)", wantSAR: true, wantVerb: "create"},
		{name: "client certificate from another CA", config: []func(*Config){anon, clientCA},
			req: request{cert: &strangerCert}, wantCode: 401, wantBody: "Unauthorized"},
		{name: "no client certificate, CA only", config: []func(*Config){clientCA},
			wantCode: 401, wantBody: "Unauthorized"},
		{name: "authorizer error", config: []func(*Config){webhookAuthn, webhookAuthz}, subresource: "checkpoint", failAuthz: true,
			req: request{token: authtest.Token("alice")}, wantCode: 500,
			wantBody: "Authorization error (user=alice, verb=create, resource=nodes, subresource=checkpoint)", wantSAR: true, wantVerb: "create"},
		{name: "explicit verb wins over method", config: []func(*Config){webhookAuthn, webhookAuthz}, subresource: "proxy", verb: "get",
			req: request{method: http.MethodPost, token: authtest.Token("carol")}, wantCode: 200,
			wantBody: "carol|" + authtest.Group + ",system:authenticated", wantSAR: true, wantVerb: "get"},
		{name: "unmapped method", config: []func(*Config){anon},
			req: request{method: http.MethodOptions}, wantCode: 405, wantBody: "Method Not Allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := base
			for _, f := range tt.config {
				f(&c)
			}
			a, err := New(c)
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			hooks.FailAuthz.Store(tt.failAuthz)
			defer hooks.FailAuthz.Store(false)
			before := len(hooks.SubjectAccessReviews())

			srv := serve(t, a, a.Wrap(tt.verb, tt.subresource, echo))
			code, body, hdr := do(t, srv, tt.req)
			if code != tt.wantCode || body != tt.wantBody {
				t.Fatalf("got %d %q, want %d %q", code, body, tt.wantCode, tt.wantBody)
			}
			if code != 200 {
				if ct := hdr.Get("Content-Type"); ct != "text/plain; charset=utf-8" {
					t.Errorf("Content-Type %q, want text/plain", ct)
				}
			}

			sars := hooks.SubjectAccessReviews()[before:]
			if !tt.wantSAR {
				if len(sars) != 0 {
					t.Fatalf("unexpected SubjectAccessReviews: %+v", sars)
				}
				return
			}
			if len(sars) == 0 {
				t.Fatal("webhook received no SubjectAccessReview")
			}
			got := sars[len(sars)-1]
			wantUser, _, _ := strings.Cut(tt.wantBody, "|")
			if strings.HasPrefix(tt.wantBody, "Forbidden") || strings.HasPrefix(tt.wantBody, "Authorization error") {
				wantUser = between(tt.wantBody, "user=", ",")
			}
			ra := got.ResourceAttributes
			if got.User != wantUser || ra == nil || ra.Verb != tt.wantVerb || ra.Group != "" || ra.Version != "v1" ||
				ra.Resource != "nodes" || ra.Subresource != tt.subresource || ra.Name != node || ra.Namespace != "" ||
				got.NonResourceAttributes != nil {
				t.Fatalf("SubjectAccessReview = user %q %+v, want user %q verb %q nodes/%s name %s",
					got.User, ra, wantUser, tt.wantVerb, tt.subresource, node)
			}
			if wantUser != "system:anonymous" && !slices.Contains(got.Groups, "system:authenticated") {
				t.Errorf("SubjectAccessReview groups %v lack system:authenticated", got.Groups)
			}
		})
	}
}

func between(s, from, to string) string {
	_, rest, _ := strings.Cut(s, from)
	v, _, _ := strings.Cut(rest, to)
	return v
}

func TestVerbFromMethod(t *testing.T) {
	hooks := authtest.StartWebhooks(t, func(user, verb, subresource string) bool { return false })
	a, err := New(Config{NodeName: node, AnonymousAuth: true, AuthorizationMode: ModeWebhook,
		Kubeconfig: hooks.Kubeconfig, retryBackoff: fastBackoff})
	if err != nil {
		t.Fatal(err)
	}
	srv := serve(t, a, a.Wrap("", "checkpoint", echo))
	for _, tt := range []struct{ method, verb string }{
		{http.MethodPost, "create"},
		{http.MethodGet, "get"},
		{http.MethodHead, "get"},
		{http.MethodPut, "update"},
		{http.MethodPatch, "patch"},
		{http.MethodDelete, "delete"},
	} {
		t.Run(tt.method, func(t *testing.T) {
			code, body, _ := do(t, srv, request{method: tt.method})
			want := "Forbidden (user=system:anonymous, verb=" + tt.verb + ", resource=nodes, subresource=checkpoint)"
			if tt.method == http.MethodHead {
				want = "" // HEAD has no body
			}
			if code != http.StatusForbidden || body != want {
				t.Fatalf("%s: got %d %q, want 403 %q", tt.method, code, body, want)
			}
			sars := hooks.SubjectAccessReviews()
			if got := sars[len(sars)-1].ResourceAttributes.Verb; got != tt.verb {
				t.Fatalf("%s: SubjectAccessReview verb %q, want %q", tt.method, got, tt.verb)
			}
		})
	}
}

// TestRequireClientCert serves with the TLS layer itself requiring and
// verifying client certificates against ClientCAs.
func TestRequireClientCert(t *testing.T) {
	ca := authtest.NewCA(t)
	a, err := New(Config{NodeName: node, ClientCAFile: ca.File, AuthorizationMode: ModeAlwaysAllow})
	if err != nil {
		t.Fatal(err)
	}
	if a.ClientCAs() == nil {
		t.Fatal("ClientCAs() = nil with --client-ca-file")
	}
	srv := httptest.NewUnstartedServer(a.Wrap("", "checkpoint", echo))
	srv.TLS = &tls.Config{ClientCAs: a.ClientCAs(), ClientAuth: tls.RequireAndVerifyClientCert}
	srv.StartTLS()
	defer srv.Close()

	cert := ca.ClientCert(t, "system:node:node-1", "system:nodes")
	code, body, _ := do(t, srv, request{cert: &cert})
	if code != 200 || body != "system:node:node-1|system:nodes,system:authenticated" {
		t.Fatalf("got %d %q", code, body)
	}
	r, _ := http.NewRequest(http.MethodPost, srv.URL, nil)
	if resp, err := srv.Client().Do(r); err == nil {
		resp.Body.Close()
		t.Fatalf("request without a client certificate got %d, want a TLS failure", resp.StatusCode)
	}
}

func TestNewErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	garbageCA := write("garbage.crt", "not a certificate\n")
	shortCSV := write("short.csv", "token,user\n")
	badQuote := write("quote.csv", "token,user,uid,\"unterminated\n")
	badKubeconfig := write("kubeconfig", "this: [is not: a kubeconfig\n")
	ok := Config{NodeName: node, AuthorizationMode: ModeAlwaysAllow, AnonymousAuth: true}

	tests := []struct {
		name string
		edit func(*Config)
		want string // substring of the error
	}{
		{"webhook authz without kubeconfig", func(c *Config) { c.AuthorizationMode = ModeWebhook }, "need --kubeconfig, or an in-cluster service account"},
		{"webhook authn without kubeconfig", func(c *Config) { c.WebhookAuthn = true }, "need --kubeconfig, or an in-cluster service account"},
		{"unknown mode", func(c *Config) { c.AuthorizationMode = "RBAC" }, `unknown --authorization-mode "RBAC"`},
		{"empty mode", func(c *Config) { c.AuthorizationMode = "" }, "no --authorization-mode"},
		{"nothing to authenticate with", func(c *Config) { c.AnonymousAuth = false }, "no authentication method"},
		{"missing CA file", func(c *Config) { c.ClientCAFile = filepath.Join(dir, "missing.crt") }, "--client-ca-file"},
		{"garbage CA file", func(c *Config) { c.ClientCAFile = garbageCA }, "--client-ca-file " + garbageCA},
		{"missing token file", func(c *Config) { c.TokenAuthFile = filepath.Join(dir, "missing.csv") }, "--token-auth-file"},
		{"token CSV with two columns", func(c *Config) { c.TokenAuthFile = shortCSV }, "at least 3 columns"},
		{"token CSV with bad quoting", func(c *Config) { c.TokenAuthFile = badQuote }, "--token-auth-file " + badQuote},
		{"missing kubeconfig", func(c *Config) {
			c.AuthorizationMode, c.Kubeconfig = ModeWebhook, filepath.Join(dir, "missing-kubeconfig")
		}, "--kubeconfig"},
		{"malformed kubeconfig", func(c *Config) { c.WebhookAuthn, c.Kubeconfig = true, badKubeconfig }, "--kubeconfig " + badKubeconfig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			tt.edit(&c)
			a, err := New(c)
			if err == nil {
				t.Fatalf("New succeeded (%+v), want error containing %q", a, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

func TestAddFlags(t *testing.T) {
	var c Config
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	c.AddFlags(fs)
	if c != DefaultConfig() {
		t.Fatalf("defaults %+v, want %+v", c, DefaultConfig())
	}
	if c.AnonymousAuth || c.AuthorizationMode != ModeAlwaysAllow || c.WebhookAuthnCacheTTL != 2*time.Minute ||
		c.WebhookAuthzAuthorizedTTL != 5*time.Minute || c.WebhookAuthzUnauthorizedTTL != 30*time.Second {
		t.Fatalf("defaults are not the kubelet's: %+v", c)
	}
	err := fs.Parse([]string{
		"--anonymous-auth", "--client-ca-file=/ca", "--token-auth-file=/tokens", "--authentication-token-webhook",
		"--authentication-token-webhook-cache-ttl=10s", "--authorization-mode=Webhook",
		"--authorization-webhook-cache-authorized-ttl=1m", "--authorization-webhook-cache-unauthorized-ttl=2s",
		"--kubeconfig=/kc",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := Config{AnonymousAuth: true, ClientCAFile: "/ca", TokenAuthFile: "/tokens", WebhookAuthn: true,
		WebhookAuthnCacheTTL: 10 * time.Second, AuthorizationMode: ModeWebhook,
		WebhookAuthzAuthorizedTTL: time.Minute, WebhookAuthzUnauthorizedTTL: 2 * time.Second, Kubeconfig: "/kc"}
	if c != want {
		t.Fatalf("parsed %+v, want %+v", c, want)
	}
}

func TestUserFromEmpty(t *testing.T) {
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	if name, ok := UserFrom(r.Context()); ok || name != "" {
		t.Fatalf("UserFrom(empty) = %q, %v", name, ok)
	}
}

// FuzzWrap feeds arbitrary methods and Authorization headers through the
// token file and anonymous authenticators: every answer must be one of the
// documented ones, and only known tokens may reach the handler.
func FuzzWrap(f *testing.F) {
	dir := f.TempDir()
	tokens := filepath.Join(dir, "tokens.csv")
	if err := os.WriteFile(tokens, []byte("good,alice,1,\"ops,sre\"\n"), 0o600); err != nil {
		f.Fatal(err)
	}
	a, err := New(Config{NodeName: node, AnonymousAuth: true, TokenAuthFile: tokens, AuthorizationMode: ModeAlwaysAllow})
	if err != nil {
		f.Fatal(err)
	}
	h := a.Wrap("", "checkpoint", echo)
	for _, s := range [][2]string{
		{"POST", "Bearer good"}, {"GET", "Bearer bad"}, {"DELETE", ""}, {"OPTIONS", "Bearer good"},
		{"POST", "Basic Zm9vOmJhcg=="}, {"PUT", "Bearer "}, {"PATCH", "bearer good"}, {"POST", "Bearer good extra"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, method, authz string) {
		r := httptest.NewRequest(http.MethodGet, "/checkpoint/ns/pod/ctr", nil)
		r.Method = method
		r.Header.Set("Authorization", authz)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		body := w.Body.String()
		switch w.Code {
		case http.StatusOK:
			if body != "alice|ops,sre,system:authenticated" && body != "system:anonymous|system:unauthenticated" {
				t.Fatalf("200 with unexpected user %q", body)
			}
		case http.StatusUnauthorized, http.StatusMethodNotAllowed:
		default:
			t.Fatalf("unexpected status %d %q", w.Code, body)
		}
	})
}

// /healthz is authorized as the kubelet authorizes it: nodes/healthz, and
// nodes/proxy as a fallback; a refusal names nodes/healthz.
func TestHealthzFineGrained(t *testing.T) {
	hooks := authtest.StartWebhooks(t, func(user, verb, subresource string) bool {
		return (user == "probe" && subresource == "healthz") || (user == "proxier" && subresource == "proxy")
	})
	a, err := New(Config{NodeName: node, retryBackoff: fastBackoff, WebhookAuthn: true, AuthorizationMode: ModeWebhook,
		Kubeconfig: hooks.Kubeconfig, WebhookAuthnCacheTTL: time.Minute, WebhookAuthzAuthorizedTTL: time.Minute,
		WebhookAuthzUnauthorizedTTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	srv := serve(t, a, a.Wrap("", "healthz", echo))
	for _, c := range []struct {
		user     string
		wantCode int
		wantSubs []string // subresources asked, in order
	}{
		{"probe", 200, []string{"healthz"}},
		{"proxier", 200, []string{"healthz", "proxy"}},
		{"nobody", 403, []string{"healthz", "proxy"}},
	} {
		t.Run(c.user, func(t *testing.T) {
			before := len(hooks.SubjectAccessReviews())
			code, body, _ := do(t, srv, request{method: http.MethodGet, token: authtest.Token(c.user)})
			if code != c.wantCode {
				t.Fatalf("got %d %q, want %d", code, body, c.wantCode)
			}
			if code == 403 && body != "Forbidden (user="+c.user+", verb=get, resource=nodes, subresource=healthz)" {
				t.Errorf("body %q", body)
			}
			var subs []string
			for _, s := range hooks.SubjectAccessReviews()[before:] {
				subs = append(subs, s.ResourceAttributes.Subresource)
			}
			if !slices.Equal(subs, c.wantSubs) {
				t.Errorf("asked for %v, want %v", subs, c.wantSubs)
			}
		})
	}
	if got := Subresources("checkpoint"); !slices.Equal(got, []string{"checkpoint"}) {
		t.Errorf("checkpoint tries %v", got)
	}
}
