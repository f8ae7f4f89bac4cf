package auth

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"

	"golang.org/x/sys/unix"
	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
)

// NodeAdminGroup is the group of a local socket peer running as root: the
// node's administrator, allowed everything on the local socket.
const NodeAdminGroup = "ckpt:node-admins"

type peerKey struct{}

// ConnContext records the credentials of a unix socket's peer
// (SO_PEERCRED: the uid, gid and pid of the process that connected) in
// the connection's context. Set it as http.Server.ConnContext of the local
// socket's server; a connection without credentials is never authenticated.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return ctx
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return ctx
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil || credErr != nil {
		return ctx
	}
	return WithPeerCred(ctx, *cred)
}

// WithPeerCred returns ctx carrying a peer's credentials (what ConnContext
// stores; tests use it directly).
func WithPeerCred(ctx context.Context, cred unix.Ucred) context.Context {
	return context.WithValue(ctx, peerKey{}, cred)
}

// peerAuthenticator authenticates a request by its connection's peer
// credentials: root is "system:node-admin" in NodeAdminGroup, any other
// uid is "uid:N" with no group but system:authenticated.
type peerAuthenticator struct{}

func (peerAuthenticator) AuthenticateRequest(r *http.Request) (*authenticator.Response, bool, error) {
	cred, ok := r.Context().Value(peerKey{}).(unix.Ucred)
	if !ok {
		return nil, false, nil
	}
	u := &user.DefaultInfo{
		Name:   fmt.Sprintf("uid:%d", cred.Uid),
		UID:    strconv.FormatUint(uint64(cred.Uid), 10),
		Groups: []string{user.AllAuthenticated},
		Extra:  map[string][]string{"pid": {strconv.Itoa(int(cred.Pid))}},
	}
	if cred.Uid == 0 {
		u.Name = "system:node-admin"
		u.Groups = append([]string{NodeAdminGroup}, u.Groups...)
	}
	return &authenticator.Response{User: u}, true, nil
}

const localDenial = "only root (uid 0) on the node may use the local socket; others use the HTTPS API with credentials"

// authorizeNodeAdmin allows the node admin (root on the node) everything
// and denies everyone else.
func authorizeNodeAdmin(_ context.Context, a authorizer.Attributes) (authorizer.Decision, string, error) {
	u := a.GetUser()
	if u != nil && u.GetUID() == "0" {
		for _, g := range u.GetGroups() {
			if g == NodeAdminGroup {
				return authorizer.DecisionAllow, "", nil
			}
		}
	}
	return authorizer.DecisionDeny, localDenial, nil
}

// NewLocal returns the Auth of the agent's local socket: peers are
// authenticated by their process credentials, and root is authorized as
// the node admin. A request that did not come through a unix socket
// (no credentials in its context) is 401; a peer other than root is 403
// with the reason.
func NewLocal(nodeName string) *Auth {
	return &Auth{authn: peerAuthenticator{}, authz: authorizer.AuthorizerFunc(authorizeNodeAdmin), nodeName: nodeName, explainDenials: true}
}
