// Package authtest gives tests a real Kubernetes-style API server for the
// TokenReview and SubjectAccessReview webhooks (an httptest TLS server that
// decodes and answers the real authentication.k8s.io/v1 and
// authorization.k8s.io/v1 objects), a kubeconfig that reaches it, and
// certificate helpers.
package authtest

import (
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Group is the group the TokenReview webhook gives every user it knows.
const Group = "authtest:users"

const tokenPrefix = "authtest-"

// Token is the bearer token the TokenReview webhook maps to user.
func Token(user string) string { return tokenPrefix + hex.EncodeToString([]byte(user)) }

// userOf inverts Token.
func userOf(token string) (string, bool) {
	rest, ok := strings.CutPrefix(token, tokenPrefix)
	if !ok {
		return "", false
	}
	b, err := hex.DecodeString(rest)
	if err != nil || len(b) == 0 {
		return "", false
	}
	return string(b), true
}

// Policy decides a SubjectAccessReview.
type Policy func(user, verb, subresource string) bool

// Webhooks is a running webhook server.
type Webhooks struct {
	URL        string
	Kubeconfig string // path of a kubeconfig (0600) that reaches URL

	// FailAuthz makes SubjectAccessReviews answer 500 while set.
	FailAuthz atomic.Bool

	policy Policy

	mu      sync.Mutex
	reviews []authorizationv1.SubjectAccessReviewSpec
	tokens  int
}

// NewWebhookServers starts the webhooks with policy and returns the path of
// a kubeconfig for --kubeconfig. Tokens are made with Token.
func NewWebhookServers(t testing.TB, policy func(user, verb, subresource string) bool) (kubeconfigPath string) {
	return StartWebhooks(t, policy).Kubeconfig
}

// StartWebhooks starts the webhooks; they stop when the test ends.
func StartWebhooks(t testing.TB, policy Policy) *Webhooks {
	t.Helper()
	w := &Webhooks{policy: policy}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /apis/authentication.k8s.io/v1/tokenreviews", w.tokenReview)
	mux.HandleFunc("POST /apis/authorization.k8s.io/v1/subjectaccessreviews", w.subjectAccessReview)
	srv := httptest.NewTLSServer(mux)
	t.Cleanup(srv.Close)
	w.URL = srv.URL

	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["authtest"] = &clientcmdapi.Cluster{
		Server:                   srv.URL,
		CertificateAuthorityData: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}),
	}
	cfg.AuthInfos["authtest"] = &clientcmdapi.AuthInfo{}
	cfg.Contexts["authtest"] = &clientcmdapi.Context{Cluster: "authtest", AuthInfo: "authtest"}
	cfg.CurrentContext = "authtest"
	w.Kubeconfig = filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, w.Kubeconfig); err != nil {
		t.Fatalf("write kubeconfig: %v", err)
	}
	return w
}

// SubjectAccessReviews returns the specs received so far, oldest first.
func (w *Webhooks) SubjectAccessReviews() []authorizationv1.SubjectAccessReviewSpec {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]authorizationv1.SubjectAccessReviewSpec(nil), w.reviews...)
}

// TokenReviews returns how many TokenReviews were received.
func (w *Webhooks) TokenReviews() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.tokens
}

func (w *Webhooks) tokenReview(rw http.ResponseWriter, r *http.Request) {
	var tr authenticationv1.TokenReview
	if !decode(rw, r, &tr) {
		return
	}
	w.mu.Lock()
	w.tokens++
	w.mu.Unlock()
	tr.Status = authenticationv1.TokenReviewStatus{}
	if name, ok := userOf(tr.Spec.Token); ok {
		tr.Status.Authenticated = true
		tr.Status.User = authenticationv1.UserInfo{Username: name, UID: "uid-" + name, Groups: []string{Group}}
	} else {
		tr.Status.Error = "unknown token"
	}
	tr.Spec = authenticationv1.TokenReviewSpec{} // never echo the token
	tr.APIVersion, tr.Kind = "authentication.k8s.io/v1", "TokenReview"
	reply(rw, &tr)
}

func (w *Webhooks) subjectAccessReview(rw http.ResponseWriter, r *http.Request) {
	var sar authorizationv1.SubjectAccessReview
	if !decode(rw, r, &sar) {
		return
	}
	w.mu.Lock()
	w.reviews = append(w.reviews, sar.Spec)
	w.mu.Unlock()
	if w.FailAuthz.Load() {
		http.Error(rw, "authtest: authorization failure requested", http.StatusInternalServerError)
		return
	}
	allowed := false
	if ra := sar.Spec.ResourceAttributes; ra != nil && w.policy != nil {
		allowed = w.policy(sar.Spec.User, ra.Verb, ra.Subresource)
	}
	sar.Status = authorizationv1.SubjectAccessReviewStatus{Allowed: allowed, Denied: !allowed}
	if !allowed {
		sar.Status.Reason = "authtest policy denies it"
	}
	sar.APIVersion, sar.Kind = "authorization.k8s.io/v1", "SubjectAccessReview"
	reply(rw, &sar)
}

func decode(rw http.ResponseWriter, r *http.Request, v any) bool {
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		http.Error(rw, "authtest: want application/json, got "+ct, http.StatusUnsupportedMediaType)
		return false
	}
	if err := json.NewDecoder(http.MaxBytesReader(rw, r.Body, 1<<20)).Decode(v); err != nil {
		http.Error(rw, "authtest: "+err.Error(), http.StatusBadRequest)
		return false
	}
	return true
}

func reply(rw http.ResponseWriter, v any) {
	rw.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(rw).Encode(v)
}
