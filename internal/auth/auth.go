// Package auth authenticates and authorizes requests to ckpt's HTTPS API the
// way the kubelet does for its own API: x509 client certificates, bearer
// tokens (static file or TokenReview webhook), optional anonymous access, and
// AlwaysAllow or SubjectAccessReview authorization against the node resource.
//
// It is the only package that imports k8s.io/apiserver.
package auth

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/authenticatorfactory"
	"k8s.io/apiserver/pkg/authentication/group"
	"k8s.io/apiserver/pkg/authentication/request/anonymous"
	"k8s.io/apiserver/pkg/authentication/request/bearertoken"
	"k8s.io/apiserver/pkg/authentication/request/union"
	"k8s.io/apiserver/pkg/authentication/token/tokenfile"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"k8s.io/apiserver/pkg/authorization/authorizerfactory"
	"k8s.io/apiserver/pkg/server/dynamiccertificates"
	authenticationv1 "k8s.io/client-go/kubernetes/typed/authentication/v1"
	authorizationv1 "k8s.io/client-go/kubernetes/typed/authorization/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Authorization modes, as the kubelet names them.
const (
	ModeAlwaysAllow = "AlwaysAllow"
	ModeWebhook     = "Webhook"
)

// Config selects the authenticators and the authorizer. Field names follow
// the kubelet's flags (see AddFlags).
type Config struct {
	AnonymousAuth        bool          // --anonymous-auth
	ClientCAFile         string        // --client-ca-file: user = CN, groups = O
	TokenAuthFile        string        // --token-auth-file: token,user,uid,"group1,group2"
	WebhookAuthn         bool          // --authentication-token-webhook (TokenReview)
	WebhookAuthnCacheTTL time.Duration // --authentication-token-webhook-cache-ttl

	AuthorizationMode           string        // --authorization-mode: AlwaysAllow or Webhook
	WebhookAuthzAuthorizedTTL   time.Duration // --authorization-webhook-cache-authorized-ttl
	WebhookAuthzUnauthorizedTTL time.Duration // --authorization-webhook-cache-unauthorized-ttl

	Kubeconfig string // --kubeconfig: the API server both webhooks talk to
	NodeName   string // name attribute of every authorization request; default: hostname

	// retryBackoff overrides the webhooks' retry backoff (tests only).
	retryBackoff *wait.Backoff
}

// DefaultConfig is the kubelet's defaults, except that anonymous access is
// off: ckpt's archives hold every memory page of a container.
func DefaultConfig() Config {
	return Config{
		AnonymousAuth:               false,
		WebhookAuthnCacheTTL:        2 * time.Minute,
		AuthorizationMode:           ModeAlwaysAllow,
		WebhookAuthzAuthorizedTTL:   5 * time.Minute,
		WebhookAuthzUnauthorizedTTL: 30 * time.Second,
	}
}

// AddFlags registers the kubelet's flag names on fs, with DefaultConfig's
// defaults (the kubelet's, except --anonymous-auth=false).
func (c *Config) AddFlags(fs *pflag.FlagSet) {
	d := DefaultConfig()
	fs.BoolVar(&c.AnonymousAuth, "anonymous-auth", d.AnonymousAuth,
		"Allow anonymous requests (user system:anonymous, group system:unauthenticated). A credential that another method rejects never falls back to anonymous.")
	fs.StringVar(&c.ClientCAFile, "client-ca-file", d.ClientCAFile,
		"Authenticate client certificates signed by a CA in this PEM file; user = CommonName, groups = Organization.")
	fs.StringVar(&c.TokenAuthFile, "token-auth-file", d.TokenAuthFile,
		`Authenticate bearer tokens listed in this CSV file: token,user,uid,"group1,group2".`)
	fs.BoolVar(&c.WebhookAuthn, "authentication-token-webhook", d.WebhookAuthn,
		"Authenticate bearer tokens with the API server's TokenReview API (--kubeconfig, or in a pod the service account).")
	fs.DurationVar(&c.WebhookAuthnCacheTTL, "authentication-token-webhook-cache-ttl", d.WebhookAuthnCacheTTL,
		"How long to cache TokenReview answers.")
	fs.StringVar(&c.AuthorizationMode, "authorization-mode", d.AuthorizationMode,
		"Authorization mode: AlwaysAllow, or Webhook (SubjectAccessReview against the API server: --kubeconfig, or in a pod the service account).")
	fs.DurationVar(&c.WebhookAuthzAuthorizedTTL, "authorization-webhook-cache-authorized-ttl", d.WebhookAuthzAuthorizedTTL,
		"How long to cache 'authorized' SubjectAccessReview answers.")
	fs.DurationVar(&c.WebhookAuthzUnauthorizedTTL, "authorization-webhook-cache-unauthorized-ttl", d.WebhookAuthzUnauthorizedTTL,
		"How long to cache 'unauthorized' SubjectAccessReview answers.")
	fs.StringVar(&c.Kubeconfig, "kubeconfig", d.Kubeconfig,
		"Kubeconfig file for the API server that answers the TokenReview and SubjectAccessReview webhooks.")
}

// Auth authenticates and authorizes HTTP requests.
type Auth struct {
	authn     authenticator.Request
	authz     authorizer.Authorizer
	nodeName  string
	clientCAs *x509.CertPool
	// explainDenials appends the authorizer's reason to a 403 (the local
	// socket; the kubelet's own 403 has no reason).
	explainDenials bool
}

// New builds the authenticators and the authorizer that c selects.
func New(c Config) (*Auth, error) {
	a := &Auth{nodeName: c.NodeName}
	if a.nodeName == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("auth: node name: %w", err)
		}
		a.nodeName = strings.ToLower(h) // as the kubelet does
	}
	backoff := c.retryBackoff
	if backoff == nil {
		// k8s.io/apiserver's DefaultAuthWebhookRetryBackoff, as the kubelet uses.
		backoff = &wait.Backoff{Duration: 500 * time.Millisecond, Factor: 1.5, Jitter: 0.2, Steps: 5}
	}

	webhookAuthz := false
	switch c.AuthorizationMode {
	case ModeAlwaysAllow:
	case ModeWebhook:
		webhookAuthz = true
	case "":
		return nil, errors.New("auth: no --authorization-mode given (AlwaysAllow or Webhook)")
	default:
		return nil, fmt.Errorf("auth: unknown --authorization-mode %q (AlwaysAllow or Webhook)", c.AuthorizationMode)
	}

	var authns []authenticator.Request
	// Static tokens first: a local lookup saves a TokenReview round trip.
	if c.TokenAuthFile != "" {
		tokens, err := tokenfile.NewCSV(c.TokenAuthFile)
		if err != nil {
			return nil, fmt.Errorf("auth: load --token-auth-file %s: %w", c.TokenAuthFile, err)
		}
		authns = append(authns, bearertoken.New(tokens))
	}

	// x509 and TokenReview come from the apiserver's delegating config, as in
	// the kubelet. Anonymous is added below, after the token file.
	delegating := authenticatorfactory.DelegatingAuthenticatorConfig{
		CacheTTL:            c.WebhookAuthnCacheTTL,
		WebhookRetryBackoff: backoff,
	}
	if c.ClientCAFile != "" {
		ca, err := dynamiccertificates.NewDynamicCAContentFromFile("client-ca-bundle", c.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("auth: load --client-ca-file %s: %w", c.ClientCAFile, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(ca.CurrentCABundleContent()) {
			return nil, fmt.Errorf("auth: load --client-ca-file %s: no certificates", c.ClientCAFile)
		}
		a.clientCAs = pool
		delegating.ClientCertificateCAContentProvider = ca
	}

	var authnClient authenticationv1.AuthenticationV1Interface
	var authzClient authorizationv1.AuthorizationV1Interface
	if c.WebhookAuthn || webhookAuthz {
		restCfg, err := apiServerConfig(c.Kubeconfig)
		if err != nil {
			return nil, err
		}
		if c.WebhookAuthn {
			if authnClient, err = authenticationv1.NewForConfig(restCfg); err != nil {
				return nil, fmt.Errorf("auth: TokenReview client from %s: %w", c.Kubeconfig, err)
			}
		}
		if webhookAuthz {
			if authzClient, err = authorizationv1.NewForConfig(restCfg); err != nil {
				return nil, fmt.Errorf("auth: SubjectAccessReview client from %s: %w", c.Kubeconfig, err)
			}
		}
	}
	if c.WebhookAuthn {
		delegating.TokenAccessReviewClient = authnClient
	}
	if delegating.ClientCertificateCAContentProvider != nil || delegating.TokenAccessReviewClient != nil {
		d, _, err := delegating.New()
		if err != nil {
			return nil, fmt.Errorf("auth: build authenticator: %w", err)
		}
		authns = append(authns, d)
	}

	switch {
	case len(authns) == 0 && !c.AnonymousAuth:
		return nil, errors.New("auth: no authentication method: set --client-ca-file, --token-auth-file, --authentication-token-webhook or --anonymous-auth")
	case len(authns) == 0:
		a.authn = anonymous.NewAuthenticator(nil)
	default:
		a.authn = group.NewAuthenticatedGroupAdder(union.New(authns...))
		if c.AnonymousAuth {
			// A presented but rejected credential is an error, never anonymous.
			a.authn = union.NewFailOnError(a.authn, anonymous.NewAuthenticator(nil))
		}
	}

	if webhookAuthz {
		z, err := authorizerfactory.DelegatingAuthorizerConfig{
			SubjectAccessReviewClient: authzClient,
			AllowCacheTTL:             c.WebhookAuthzAuthorizedTTL,
			DenyCacheTTL:              c.WebhookAuthzUnauthorizedTTL,
			WebhookRetryBackoff:       backoff,
		}.New()
		if err != nil {
			return nil, fmt.Errorf("auth: build webhook authorizer: %w", err)
		}
		a.authz = z
	} else {
		a.authz = authorizerfactory.NewAlwaysAllowAuthorizer()
	}
	return a, nil
}

// ClientCAs is the --client-ca-file pool for the server's tls.Config, nil
// without one. Use tls.RequestClientCert or tls.VerifyClientCertIfGiven so
// that clients may also authenticate with tokens; the x509 authenticator
// verifies the chain itself.
func (a *Auth) ClientCAs() *x509.CertPool { return a.clientCAs }

// NodeName is the name attribute used in authorization requests.
func (a *Auth) NodeName() string { return a.nodeName }

// Verb maps an HTTP method to the Kubernetes API verb the kubelet uses for it
// ("" for methods it does not map). HEAD is get, as for GET.
func Verb(method string) string {
	switch method {
	case http.MethodPost:
		return "create"
	case http.MethodGet, http.MethodHead:
		return "get"
	case http.MethodPut:
		return "update"
	case http.MethodPatch:
		return "patch"
	case http.MethodDelete:
		return "delete"
	}
	return ""
}

// Subresources are the nodes subresources that authorize a path given
// subresource, in the order they are tried: the kubelet's fine-grained
// authorization (KubeletFineGrainedAuthz, on by default since 1.33) asks for
// "healthz", "pods" or "configz" first and falls back to "proxy".
func Subresources(subresource string) []string {
	switch subresource {
	case "healthz", "pods", "configz":
		return []string{subresource, "proxy"}
	}
	return []string{subresource}
}

// Wrap authenticates and authorizes each request before calling next.
// verb "" means the verb mapped from the HTTP method. The attributes are the
// kubelet's: resource nodes (group ""), the given subresource, name = node
// name. Responses: 401 Unauthorized, 403 Forbidden (user=..., verb=...,
// resource=..., subresource=...), 500 when the authorizer fails, and 405 for
// a method that maps to no verb (the kubelet would authorize an empty verb).
func (a *Auth) Wrap(verb, subresource string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		resp, ok, err := a.authn.AuthenticateRequest(r)
		if err != nil || !ok {
			writeError(w, http.StatusUnauthorized, "Unauthorized")
			return
		}
		v := verb
		if v == "" {
			v = Verb(r.Method)
		}
		if v == "" {
			writeError(w, http.StatusMethodNotAllowed, "Method Not Allowed")
			return
		}
		// Allowed by any of the subresources, tried in order (as the kubelet
		// does); a refusal names the first.
		var first authorizer.AttributesRecord
		var reason string
		allowed := false
		for i, sub := range Subresources(subresource) {
			attrs := authorizer.AttributesRecord{
				User:            resp.User,
				Verb:            v,
				APIGroup:        "",
				APIVersion:      "v1",
				Resource:        "nodes",
				Subresource:     sub,
				Name:            a.nodeName,
				ResourceRequest: true,
				Path:            r.URL.Path,
			}
			if i == 0 {
				first = attrs
			}
			decision, why, err := a.authz.Authorize(r.Context(), attrs)
			if err != nil {
				writeError(w, http.StatusInternalServerError, describe("Authorization error", attrs))
				return
			}
			if i == 0 {
				reason = why
			}
			if decision == authorizer.DecisionAllow {
				allowed = true
				break
			}
		}
		if !allowed {
			msg := describe("Forbidden", first)
			if a.explainDenials && reason != "" {
				msg += ": " + reason
			}
			writeError(w, http.StatusForbidden, msg)
			return
		}
		next.ServeHTTP(w, r.WithContext(withUser(r.Context(), resp.User)))
	})
}

func describe(what string, attrs authorizer.AttributesRecord) string {
	return fmt.Sprintf("%s (user=%s, verb=%s, resource=%s, subresource=%s)",
		what, attrs.User.GetName(), attrs.Verb, attrs.Resource, attrs.Subresource)
}

// writeError writes msg as the kubelet's go-restful WriteErrorString does:
// plain text, no trailing newline.
func writeError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(msg))
}

type userKey struct{}

func withUser(ctx context.Context, u user.Info) context.Context {
	return context.WithValue(ctx, userKey{}, u)
}

// WithUser returns ctx carrying the user name and groups as Wrap stores an
// authenticated user (for handlers behind another authenticating layer, and
// tests).
func WithUser(ctx context.Context, name string, groups []string) context.Context {
	return withUser(ctx, &user.DefaultInfo{Name: name, Groups: groups})
}

// UserFrom returns the name of the user Wrap authenticated.
func UserFrom(ctx context.Context) (name string, ok bool) {
	u, ok := ctx.Value(userKey{}).(user.Info)
	if !ok {
		return "", false
	}
	return u.GetName(), true
}

// GroupsFrom returns the groups of the user Wrap authenticated.
func GroupsFrom(ctx context.Context) []string {
	if u, ok := ctx.Value(userKey{}).(user.Info); ok {
		return u.GetGroups()
	}
	return nil
}

// apiServerConfig reads --kubeconfig or, without it, the in-cluster
// service account (ckpt deployed as a DaemonSet).
func apiServerConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("auth: load --kubeconfig %s: %w", kubeconfig, err)
		}
		return cfg, nil
	}
	cfg, err := rest.InClusterConfig()
	if err != nil {
		return nil, fmt.Errorf("auth: the webhooks need --kubeconfig, or an in-cluster service account: %w", err)
	}
	return cfg, nil
}
