package checkpoint

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/ckpt-dev/ckpt/internal/archive"
	"github.com/ckpt-dev/ckpt/internal/runtime"
)

// LiveSource is a container dumped for live migration: its archive (every
// image but the memory pages) is ready to send, the container is frozen,
// and its pages wait for ServePages. Exactly one of ServePages and Abort
// must be called.
type LiveSource struct {
	// Archive is the plain, signed archive; Size its length.
	Archive *os.File
	Size    int64
	dump    runtime.LiveDump
	release func()
}

// CheckpointLive dumps the container ref names for live migration. The
// container's lock is held until the migration ends. ctx bounds the dump.
func (s *Service) CheckpointLive(ctx context.Context, ref runtime.Ref, opts runtime.CheckpointOptions) (*LiveSource, error) {
	lc := s.caps.LiveCheckpoint
	if lc == nil {
		return nil, fmt.Errorf("checkpoint %s live: %w: this runtime backend cannot migrate live", ref, runtime.ErrUnsupported)
	}
	timeout := s.Timeout(opts.Timeout)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := s.rt.Lookup(ctx, ref)
	if err != nil {
		return nil, err
	}
	if err := s.locks.lock(ctx, c.ID); err != nil {
		return nil, fmt.Errorf("waiting for another checkpoint of %s: %w", ref, timeoutErr(err, timeout))
	}
	ok := false
	defer func() {
		if !ok {
			s.locks.unlock(c.ID)
		}
	}()
	staging, err := os.MkdirTemp(filepath.Join(s.dir, stagingDir), "live-")
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s live: %w", ref, err)
	}
	release := func() {
		os.RemoveAll(staging)
		s.locks.unlock(c.ID)
	}
	defer func() {
		if !ok {
			os.RemoveAll(staging)
		}
	}()
	path := filepath.Join(staging, "archive.tar")
	dump, err := lc.CheckpointLive(ctx, c, path, opts)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w (live checkpoint of %s did not finish within %s)", timeoutErr(ctx.Err(), timeout), ref, timeout)
		}
		return nil, err
	}
	if s.opts.Signer != nil {
		if err := archive.SealFile(path, s.opts.Signer, archive.DefaultLimits()); err != nil {
			dump.Abort()
			return nil, fmt.Errorf("checkpoint %s live: %w", ref, err)
		}
	}
	f, err := os.Open(path)
	if err != nil {
		dump.Abort()
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		dump.Abort()
		return nil, err
	}
	ok = true
	return &LiveSource{Archive: f, Size: st.Size(), dump: dump, release: func() { f.Close(); release() }}, nil
}

// ServePages serves the destination's page requests on tunnel until the
// migration ends (see runtime.LiveDump).
func (l *LiveSource) ServePages(tunnel runtime.LiveTunnel, first, idle time.Duration) error {
	defer l.release()
	return l.dump.ServePages(tunnel, first, idle)
}

// Abort resumes the container: its pages were never asked for.
func (l *LiveSource) Abort() {
	defer l.release()
	l.dump.Abort()
}

// RestoreLive restores a live-migrated container from f (a plain archive
// of every image but the memory pages), its memory pulled through pages.
func (s *Service) RestoreLive(ctx context.Context, f, pages *os.File, target runtime.Ref, source string) (runtime.Container, error) {
	lr := s.caps.LiveRestore
	if lr == nil {
		return runtime.Container{}, fmt.Errorf("restore %s live: %w: this runtime backend cannot migrate live", source, runtime.ErrUnsupported)
	}
	if err := s.locks.lock(ctx, restoreLock); err != nil {
		return runtime.Container{}, fmt.Errorf("restore %s: waiting for another restore: %w", source, err)
	}
	defer s.locks.unlock(restoreLock)
	if !isPlainTar(f) {
		return runtime.Container{}, fmt.Errorf("restore %s live: %w: not a plain tar archive", source, runtime.ErrInvalid)
	}
	c, err := lr.RestoreLiveFile(ctx, f, pages, target, source, s.checkArchive)
	return c, invalidArchive(err)
}
