package embedded

import (
	"context"
	"io"

	"github.com/ckpt-dev/ckpt/internal/archive"
	"github.com/ckpt-dev/ckpt/internal/runtime"
)

// The embedded runtime's capabilities beyond runtime.Backend (Lookup,
// Checkpoint): it restores from a stream, stops containers and reports
// health. Stop is in runtime.go.
var (
	_ runtime.Backend        = (*Runtime)(nil)
	_ runtime.StreamRestorer = (*Runtime)(nil)
	_ runtime.Stopper        = (*Runtime)(nil)
	_ runtime.HealthChecker  = (*Runtime)(nil)
)

// RestoreStream is Restore with the target as a runtime.Ref.
func (r *Runtime) RestoreStream(ctx context.Context, tarStream io.Reader, target runtime.Ref, source string, check runtime.ArchiveCheck) (runtime.Container, error) {
	return r.Restore(ctx, tarStream, RestoreOptions{
		Namespace: target.Namespace, Pod: target.Pod, Name: target.Container, Source: source,
		Verify: func(m *archive.Manifest) error {
			if m == nil {
				return check(nil, nil)
			}
			return check(m.Raw, m.Signature)
		},
	})
}

// Healthy reports whether the runtime can list its containers.
func (r *Runtime) Healthy(ctx context.Context) error {
	_, err := r.List(ctx)
	return err
}
