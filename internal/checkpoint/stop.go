package checkpoint

import (
	"context"
	"fmt"

	"github.com/ckpt-dev/ckpt/internal/runtime"
)

// StopContainer stops the running container ref names (SIGTERM, then
// SIGKILL), after any checkpoint of it in progress. Its record stays, so
// that a pod manifest does not start it again: it was moved away.
func (s *Service) StopContainer(ctx context.Context, ref runtime.Ref) error {
	st := s.caps.Stop
	if st == nil {
		return fmt.Errorf("stop %s: %w: the container runtime's own tools stop its containers", ref, runtime.ErrUnsupported)
	}
	c, err := s.rt.Lookup(ctx, ref)
	if err != nil {
		return err
	}
	if err := s.locks.lock(ctx, c.ID); err != nil {
		return fmt.Errorf("stop %s: waiting for a checkpoint of it: %w", ref, err)
	}
	defer s.locks.unlock(c.ID)
	return st.Stop(ctx, c.ID)
}
