package cri

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/ckpt-dev/ckpt/internal/runtime"
)

// Checkpoint asks the runtime to write a checkpoint archive of c at
// archivePath (a path the runtime can see: it writes the file itself). The
// CRI Timeout is ctx's deadline in whole seconds, rounded up.
//
// CRI reports no statistics, so the result is empty; the archive's
// stats-dump holds CRIU's numbers.
func (r *Runtime) Checkpoint(ctx context.Context, c runtime.Container, archivePath string, opts runtime.CheckpointOptions) (runtime.CheckpointResult, error) {
	if opts.TCPEstablished {
		return runtime.CheckpointResult{}, fmt.Errorf("checkpoint container %s: CRI has no option for established TCP connections: %w", c.ID, runtime.ErrUnsupported)
	}
	what := "checkpoint container " + c.ID
	timeout := timeoutSeconds(ctx)
	_, err := r.client.CheckpointContainer(ctx, &runtimeapi.CheckpointContainerRequest{
		ContainerId: c.ID,
		Location:    archivePath,
		Timeout:     timeout,
	})
	if err == nil {
		return runtime.CheckpointResult{}, nil
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) || isDeadline(err) {
		limit := "its default timeout"
		if timeout > 0 {
			limit = fmt.Sprintf("%ds", timeout)
		}
		return runtime.CheckpointResult{}, fmt.Errorf("%s: %w: the runtime did not finish within %s", what, runtime.ErrTimeout, limit)
	}
	return runtime.CheckpointResult{}, r.callError(what, err)
}

// isDeadline reports whether err is a gRPC deadline error.
func isDeadline(err error) bool {
	return status.Code(err) == codes.DeadlineExceeded
}
