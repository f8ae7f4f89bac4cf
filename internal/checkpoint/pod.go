package checkpoint

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	"github.com/ckpt-dev/ckpt/internal/archive"
	"github.com/ckpt-dev/ckpt/internal/runtime"
)

// CheckpointPod checkpoints every container of a pod in one consistent cut
// into one archive, named checkpoint-<pod>_<namespace>-<RFC3339>.tar, and
// returns its path. Deadline, locking, signing, encoding, publishing and
// retention are those of Checkpoint.
func (s *Service) CheckpointPod(ctx context.Context, namespace, pod string, opts runtime.CheckpointOptions) (path string, err error) {
	requested := s.now()
	ref := runtime.Ref{Namespace: namespace, Pod: pod}
	what := "pod " + namespace + "/" + pod
	timeout := s.Timeout(opts.Timeout)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var res runtime.CheckpointResult
	var size int64
	if s.opts.Recorder != nil {
		end := s.opts.Recorder.Begin()
		defer func() { end(size, res.FreezeTime, reason(err)) }()
	}
	pc := s.caps.PodCheckpoint
	if pc == nil {
		return "", fmt.Errorf("checkpoint %s: %w: this runtime backend cannot checkpoint whole pods", what, runtime.ErrUnsupported)
	}
	cs, err := pc.LookupPod(ctx, namespace, pod)
	if err != nil {
		return "", err
	}
	// Every container's lock, in one order, so that two pod checkpoints
	// cannot wait for each other.
	ids := make([]string, 0, len(cs))
	for _, c := range cs {
		ids = append(ids, c.ID)
	}
	sort.Strings(ids)
	for i, id := range ids {
		if err := s.locks.lock(ctx, id); err != nil {
			for _, held := range ids[:i] {
				s.locks.unlock(held)
			}
			return "", fmt.Errorf("waiting for another checkpoint of %s: %w", what, timeoutErr(err, timeout))
		}
	}
	defer func() {
		for _, id := range ids {
			s.locks.unlock(id)
		}
	}()

	staging, err := os.MkdirTemp(filepath.Join(s.dir, stagingDir), "pod-")
	if err != nil {
		return "", fmt.Errorf("checkpoint %s: %w", what, err)
	}
	defer os.RemoveAll(staging)
	tmp := filepath.Join(staging, "archive.tar")
	res, err = pc.CheckpointPod(ctx, cs, tmp, opts)
	if err != nil {
		if ctx.Err() != nil {
			return "", fmt.Errorf("%w (checkpoint of %s did not finish within %s; every container is thawed: %v)", timeoutErr(ctx.Err(), timeout), what, timeout, err)
		}
		return "", err
	}
	path, size, err = s.finish(tmp, ref, requested)
	return path, err
}

// RestorePod restores a whole pod from a pod archive stream (plain, zstd
// or age). Empty target fields keep the archive's names.
func (s *Service) RestorePod(ctx context.Context, src io.Reader, target runtime.Ref, source string) ([]runtime.Container, error) {
	if s.caps.PodRestore == nil {
		return nil, fmt.Errorf("restore %s: %w: this runtime backend cannot restore whole pods", source, runtime.ErrUnsupported)
	}
	tarStream, _, err := archive.Decode(src, s.opts.Identities)
	if err != nil {
		return nil, fmt.Errorf("restore %s: %w", source, invalidArchive(err))
	}
	defer tarStream.Close()
	if err := s.locks.lock(ctx, restoreLock); err != nil {
		return nil, fmt.Errorf("restore %s: waiting for another restore: %w", source, err)
	}
	defer s.locks.unlock(restoreLock)
	cs, err := s.caps.PodRestore.RestorePodStream(ctx, tarStream, target, source, s.checkArchive)
	if err != nil {
		return cs, invalidArchive(err)
	}
	return cs, nil
}

// RestorePodArchive restores a pod from a published archive, which
// retention leaves alone meanwhile.
func (s *Service) RestorePodArchive(ctx context.Context, name string, target runtime.Ref) ([]runtime.Container, error) {
	f, _, release, err := s.Open(name)
	if err != nil {
		return nil, err
	}
	defer release()
	defer f.Close()
	return s.RestorePod(ctx, f, target, name)
}
