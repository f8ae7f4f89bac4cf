// Package runtime holds what every container runtime backend shares: the
// container model and the typed errors that the server maps to HTTP statuses.
package runtime

import (
	"errors"
	"time"
)

// Typed errors. Backends wrap them with %w and the IDs involved.
var (
	ErrPodNotFound       = errors.New("pod does not exist")
	ErrContainerNotFound = errors.New("container does not exist")
	ErrNotRunning        = errors.New("container is not running")
	ErrUnsupported       = errors.New("operation not supported by the runtime")
	ErrBusy              = errors.New("container is busy")
	ErrTimeout           = errors.New("timed out")
	ErrInvalid           = errors.New("invalid argument")
	ErrExists            = errors.New("already exists")
	ErrUnavailable       = errors.New("runtime unavailable")
)

// State of a container.
type State string

const (
	StateCreated State = "created"
	StateRunning State = "running"
	StatePaused  State = "paused"
	StateExited  State = "exited"
	StateUnknown State = "unknown"
)

// Container is one container as a backend reports it.
type Container struct {
	ID        string
	Namespace string
	Pod       string
	Name      string
	Image     string
	ImageID   string // the image's config digest, when known
	State     State
	Pid       int
	CreatedAt time.Time
	// ExitCode and ExitReason (OOMKilled) describe how an exited container ended.
	ExitCode   int
	ExitReason string
	// Restarts counts restarts by the pod's restart policy; LastExitCode and
	// LastExitReason tell how the run before this one ended.
	Restarts       int
	LastExitCode   *int
	LastExitReason string
	// Ready: running, and its readiness probe (if any) passed.
	Ready bool
}

// Ref names a container the way the kubelet API does.
type Ref struct {
	Namespace string
	Pod       string
	Container string
}

func (r Ref) String() string { return r.Namespace + "/" + r.Pod + "/" + r.Container }

// CheckpointOptions are the per-request options of one checkpoint.
type CheckpointOptions struct {
	// Timeout bounds the whole checkpoint; <= 0 means the default.
	Timeout time.Duration
	// TCPEstablished lets CRIU dump established TCP connections
	// (--tcp-established). Restore repairs them the same way.
	TCPEstablished bool
}

// AnnotationTCPEstablished on a pod opts its containers in to
// CheckpointOptions.TCPEstablished.
const AnnotationTCPEstablished = "checkpoint.ckpt.dev/tcp-established"

// CheckpointResult describes what a backend wrote.
type CheckpointResult struct {
	// FreezeTime is how long the container was frozen (CRIU's statistics), if known.
	FreezeTime time.Duration
	// PagesWritten counts memory pages CRIU wrote, if known.
	PagesWritten uint64
}
