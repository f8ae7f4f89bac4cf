// Package cri is the runtime backend that talks CRI (gRPC) to the node's
// container runtime (containerd, CRI-O), the way the kubelet does.
package cri

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/ckpt-dev/ckpt/internal/runtime"
)

// Labels the kubelet puts on sandboxes and containers.
const (
	labelPodNamespace  = "io.kubernetes.pod.namespace"
	labelPodName       = "io.kubernetes.pod.name"
	labelPodUID        = "io.kubernetes.pod.uid"
	labelContainerName = "io.kubernetes.container.name"
)

const (
	// maxMsgSize matches the kubelet's CRI client (16 MiB).
	maxMsgSize = 16 << 20
	// defaultCallTimeout bounds calls whose context has no deadline
	// (the kubelet's default runtime request timeout).
	defaultCallTimeout = 2 * time.Minute
)

// Runtime is a CRI client for one runtime endpoint.
type Runtime struct {
	endpoint string // as the user gave it, for messages
	socket   string // unix socket path
	conn     *grpc.ClientConn
	client   runtimeapi.RuntimeServiceClient
}

// New returns a client for endpoint, "unix:///run/containerd/containerd.sock"
// or a plain socket path. It does not connect: an absent runtime surfaces as
// ErrUnavailable on the first call, so the agent can start without it.
func New(ctx context.Context, endpoint string) (*Runtime, error) {
	socket, err := socketPath(endpoint)
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient("unix://"+socket,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMsgSize), grpc.MaxCallSendMsgSize(maxMsgSize)),
	)
	if err != nil {
		return nil, fmt.Errorf("cri client for %s: %w", endpoint, err)
	}
	return &Runtime{
		endpoint: endpoint,
		socket:   socket,
		conn:     conn,
		client:   runtimeapi.NewRuntimeServiceClient(conn),
	}, nil
}

// socketPath turns an endpoint into an absolute unix socket path.
func socketPath(endpoint string) (string, error) {
	p := endpoint
	switch {
	case strings.HasPrefix(p, "unix://"):
		p = strings.TrimPrefix(p, "unix://")
	case strings.Contains(p, "://"):
		return "", fmt.Errorf("cri endpoint %q: only unix sockets are supported: %w", endpoint, runtime.ErrInvalid)
	}
	if p == "" || !strings.HasPrefix(p, "/") {
		return "", fmt.Errorf("cri endpoint %q: want an absolute socket path: %w", endpoint, runtime.ErrInvalid)
	}
	return p, nil
}

// Close closes the connection.
func (r *Runtime) Close() error { return r.conn.Close() }

// Endpoint returns the endpoint the runtime was created with.
func (r *Runtime) Endpoint() string { return r.endpoint }

// Healthy asks the runtime for its version and status. It fails with
// ErrUnavailable and a clear cause when the runtime cannot be reached or
// reports that it is not ready.
func (r *Runtime) Healthy(ctx context.Context) error {
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	if _, err := r.client.Version(ctx, &runtimeapi.VersionRequest{}); err != nil {
		return r.callError("check runtime health", err)
	}
	st, err := r.client.Status(ctx, &runtimeapi.StatusRequest{})
	if err != nil {
		return r.callError("check runtime health", err)
	}
	for _, c := range st.GetStatus().GetConditions() {
		// Only the runtime matters for checkpointing; pod networking does not.
		if c.GetType() == runtimeapi.RuntimeReady && !c.GetStatus() {
			return fmt.Errorf("check runtime health: %w: runtime at %s is not ready (%s: %s)",
				runtime.ErrUnavailable, r.endpoint, c.GetReason(), c.GetMessage())
		}
	}
	return nil
}

// withDefaultTimeout bounds ctx by defaultCallTimeout unless it already has a deadline.
func withDefaultTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, defaultCallTimeout)
}

// timeoutSeconds is the CRI Timeout for ctx: its deadline rounded up to a
// whole second, at least 1; 0 (the runtime's default) without a deadline.
func timeoutSeconds(ctx context.Context) int64 {
	deadline, ok := ctx.Deadline()
	if !ok {
		return 0
	}
	s := int64(math.Ceil(time.Until(deadline).Seconds()))
	if s < 1 {
		s = 1
	}
	return s
}

// callError turns a gRPC error into a typed runtime error, prefixed by what
// (the verb and IDs). The runtime's own message is kept.
func (r *Runtime) callError(what string, err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("%s: %w: %v", what, runtime.ErrTimeout, err)
		}
		return fmt.Errorf("%s: %w", what, err)
	}
	msg := st.Message()
	switch st.Code() {
	case codes.Unimplemented:
		return fmt.Errorf("%s: %w: %s", what, runtime.ErrUnsupported, msg)
	case codes.Unavailable:
		return fmt.Errorf("%s: %w: %s", what, runtime.ErrUnavailable, r.unreachable(msg))
	case codes.DeadlineExceeded:
		return fmt.Errorf("%s: %w: %s", what, runtime.ErrTimeout, msg)
	case codes.NotFound:
		return fmt.Errorf("%s: %w: %s", what, runtime.ErrContainerNotFound, msg)
	case codes.Canceled:
		return fmt.Errorf("%s: %w: %s", what, context.Canceled, msg)
	}
	return fmt.Errorf("%s: %s", what, msg)
}

// unreachable explains why the runtime cannot be reached.
func (r *Runtime) unreachable(msg string) string {
	cause := msg
	if _, err := os.Stat(r.socket); errors.Is(err, os.ErrNotExist) {
		cause = "socket " + r.socket + " does not exist (is the container runtime running?)"
	}
	return fmt.Sprintf("cannot reach container runtime at %s: %s", r.endpoint, cause)
}
