// Package checkpoint is the checkpoint service: it resolves a container,
// names its archive the way the kubelet does, serializes work per container,
// enforces the deadline, and publishes the archive atomically.
package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"filippo.io/age"
	"golang.org/x/sys/unix"

	"github.com/ckpt-dev/ckpt/internal/archive"

	"github.com/ckpt-dev/ckpt/internal/runtime"
)

// Runtime is what the service needs of a container runtime backend; its
// optional capabilities (restore, stop) are found by runtime.Discover.
type Runtime = runtime.Backend

// Recorder observes checkpoints (Prometheus metrics in production).
type Recorder interface {
	Begin() (end func(archiveBytes int64, freeze time.Duration, reason string))
}

// Options configure the service.
type Options struct {
	// RootDir is the kubelet-style root dir; archives go to RootDir/checkpoints.
	RootDir string
	// DefaultTimeout applies when a request gives none (kubelet: 2 minutes).
	DefaultTimeout time.Duration
	// StrictTimeout makes a request's timeout the deadline even when it is
	// shorter than DefaultTimeout. Off (the kubelet's rule), the deadline is
	// the larger of the two, so a small value never cuts a checkpoint short.
	StrictTimeout bool
	Recorder      Recorder
	Retention     Retention
	// Compress (zstd) and Recipients (age) encode archives at rest.
	Compress   bool
	Recipients []age.Recipient
	// Identities decrypt encrypted archives to restore them.
	Identities []age.Identity
	// RetentionError is told when retention after a checkpoint fails to
	// delete an archive (the checkpoint itself succeeded); nil ignores it.
	RetentionError func(error)
	// Signer signs every archive (the node key); nil leaves them unsigned.
	Signer archive.Signer
	// Trust decides which archives restore (trust.Policy); nil refuses
	// every restore.
	Trust Verifier
	// InPlaceRestore restores published plain archives without extracting
	// their pages, when the backend can (see lazy.go).
	InPlaceRestore bool
}

// Verifier decides whether an archive may be restored, from the manifest
// its members were verified against (nil: it has none) and the signature
// it carries.
type Verifier interface {
	Verify(m *archive.Manifest) error
}

// Service checkpoints containers into archives.
type Service struct {
	rt    Runtime
	opts  Options
	dir   string
	locks *keyedMutex
	pins  pins
	now   func() time.Time

	retentionMu sync.Mutex
	caps        runtime.Capabilities
	remove      func(string) error // os.Remove; tests replace it
}

// stagingDir holds archives being written; it is emptied on start.
const stagingDir = ".staging"

// New creates the checkpoints directory (0700) and removes leftovers of
// checkpoints that an earlier run did not finish.
func New(rt Runtime, opts Options) (*Service, error) {
	if opts.DefaultTimeout <= 0 {
		opts.DefaultTimeout = 2 * time.Minute
	}
	dir := filepath.Join(opts.RootDir, "checkpoints")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create checkpoints directory: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, err
	}
	if err := os.RemoveAll(filepath.Join(dir, stagingDir)); err != nil {
		return nil, fmt.Errorf("remove staging leftovers: %w", err)
	}
	if err := os.Mkdir(filepath.Join(dir, stagingDir), 0o700); err != nil {
		return nil, err
	}
	return &Service{rt: rt, caps: runtime.Discover(rt), opts: opts, dir: dir, locks: newKeyedMutex(), now: time.Now,
		remove: os.Remove}, nil
}

// Dir is the checkpoints directory.
func (s *Service) Dir() string { return s.dir }

// StagingDir holds work in progress; the next start empties it.
func (s *Service) StagingDir() string { return filepath.Join(s.dir, stagingDir) }

// ArchiveName is the kubelet's name for an archive:
// checkpoint-<pod>_<namespace>-<container>-<RFC3339>.tar; a pod archive
// (no container) is checkpoint-<pod>_<namespace>-<RFC3339>.tar.
func ArchiveName(ref runtime.Ref, t time.Time, layout string) string {
	if ref.Container == "" {
		return fmt.Sprintf("checkpoint-%s_%s-%s.tar", ref.Pod, ref.Namespace, t.Format(layout))
	}
	return fmt.Sprintf("checkpoint-%s_%s-%s-%s.tar", ref.Pod, ref.Namespace, ref.Container, t.Format(layout))
}

// Checkpoint checkpoints one container and returns the archive's path.
// The archive is named after the time the request came, as the kubelet
// names it. opts.Timeout <= 0 means the default timeout (see Timeout).
func (s *Service) Checkpoint(ctx context.Context, ref runtime.Ref, opts runtime.CheckpointOptions) (path string, err error) {
	requested := s.now()
	timeout := s.Timeout(opts.Timeout)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var res runtime.CheckpointResult
	var size int64
	if s.opts.Recorder != nil {
		end := s.opts.Recorder.Begin()
		defer func() { end(size, res.FreezeTime, reason(err)) }()
	}
	c, err := s.rt.Lookup(ctx, ref)
	if err != nil {
		return "", err
	}
	if err := s.locks.lock(ctx, c.ID); err != nil {
		return "", fmt.Errorf("waiting for another checkpoint of %s: %w", ref, timeoutErr(err, timeout))
	}
	defer s.locks.unlock(c.ID)

	staging, err := os.MkdirTemp(filepath.Join(s.dir, stagingDir), "ckpt-")
	if err != nil {
		return "", fmt.Errorf("checkpoint %s: %w", ref, err)
	}
	defer os.RemoveAll(staging)
	tmp := filepath.Join(staging, "archive.tar")
	res, err = s.rt.Checkpoint(ctx, c, tmp, opts)
	if err != nil {
		if ctx.Err() != nil {
			return "", fmt.Errorf("%w (checkpoint of %s did not finish within %s)", timeoutErr(ctx.Err(), timeout), ref, timeout)
		}
		return "", err
	}
	if path, size, err = s.finish(tmp, ref, requested); err != nil {
		return "", err
	}
	return path, nil
}

// finish signs, encodes, flushes and publishes a written archive, then
// applies retention; it returns the final path and the archive's size.
func (s *Service) finish(tmp string, ref runtime.Ref, requested time.Time) (path string, size int64, err error) {
	what := ref.String()
	if ref.Container == "" {
		what = "pod " + ref.Namespace + "/" + ref.Pod
	}
	if s.opts.Signer != nil {
		// Signed before it is encoded: the signature is inside the tar,
		// under zstd and age like every other member.
		if err := archive.SealFile(tmp, s.opts.Signer, archive.DefaultLimits()); err != nil {
			return "", 0, fmt.Errorf("checkpoint %s: %w", what, err)
		}
	}
	if tmp, err = s.encode(tmp); err != nil {
		return "", 0, fmt.Errorf("checkpoint %s: encode archive: %w", what, err)
	}
	if size, err = syncFile(tmp); err != nil {
		return "", 0, fmt.Errorf("checkpoint %s: %w", what, err)
	}
	if path, err = s.publish(tmp, ref, requested); err != nil {
		return "", 0, fmt.Errorf("checkpoint %s: publish archive: %w", what, err)
	}
	if _, err := s.ApplyRetention(); err != nil && s.opts.RetentionError != nil {
		s.opts.RetentionError(err)
	}
	return path, size, nil
}

// Timeout is the deadline of a checkpoint that asked for requested (<= 0:
// none). The kubelet's rule, the default: the larger of requested and the
// default timeout (its CRI client never waits less than the runtime request
// timeout). With StrictTimeout: requested when given.
func (s *Service) Timeout(requested time.Duration) time.Duration {
	if requested <= 0 {
		return s.opts.DefaultTimeout
	}
	if !s.opts.StrictTimeout && requested < s.opts.DefaultTimeout {
		return s.opts.DefaultTimeout
	}
	return requested
}

// encode compresses and/or encrypts a plain archive into a sibling file and
// returns its path; without either option it returns path unchanged.
func (s *Service) encode(path string) (string, error) {
	if !s.opts.Compress && len(s.opts.Recipients) == 0 {
		return path, nil
	}
	in, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer in.Close()
	out, err := os.OpenFile(path+".enc", os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return "", err
	}
	defer out.Close()
	w, suffix, err := archive.NewEncodingWriter(out, s.opts.Compress, s.opts.Recipients)
	if err != nil {
		return "", err
	}
	if _, err := io.Copy(w, in); err != nil {
		return "", err
	}
	if err := w.Close(); err != nil {
		return "", err
	}
	final := strings.TrimSuffix(path, ".tar") + suffix
	if err := os.Rename(out.Name(), final); err != nil {
		return "", err
	}
	return final, os.Remove(path)
}

func timeoutErr(err error, timeout time.Duration) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w after %s", runtime.ErrTimeout, timeout)
	}
	return err
}

// syncFile sets the archive's mode to 0600, flushes it to disk and returns
// its size.
func syncFile(path string) (int64, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if err := f.Chmod(0o600); err != nil {
		return 0, err
	}
	if err := f.Sync(); err != nil {
		return 0, err
	}
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

// publish renames the archive into place under the kubelet's name, never
// replacing an existing file: when the second-resolution name is taken, the
// name carries nanoseconds (still RFC 3339).
func (s *Service) publish(tmp string, ref runtime.Ref, t time.Time) (string, error) {
	// ".tar", ".tar.zst", ".tar.age" or ".tar.zst.age"
	suffix := strings.TrimPrefix(filepath.Base(tmp), "archive")
	setRef(tmp, ref)
	names := []string{ArchiveName(ref, t, time.RFC3339), ArchiveName(ref, t, time.RFC3339Nano)}
	for i := 1; i < 1000; i++ { // the same nanosecond twice: the next free one
		names = append(names, ArchiveName(ref, t.Add(time.Duration(i)), time.RFC3339Nano))
	}
	for _, name := range names {
		final := filepath.Join(s.dir, strings.TrimSuffix(name, ".tar")+suffix)
		err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, final, unix.RENAME_NOREPLACE)
		if err == nil {
			return final, syncDir(s.dir)
		}
		if !errors.Is(err, unix.EEXIST) {
			return "", err
		}
	}
	return "", fmt.Errorf("no free archive name for %s", ref)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// reason classifies an error for ckpt_checkpoint_errors_total; "" means
// success. The label set is fixed.
func reason(err error) string {
	if err == nil {
		return ""
	}
	for _, c := range []struct {
		err    error
		reason string
	}{
		{runtime.ErrPodNotFound, "pod_not_found"},
		{runtime.ErrContainerNotFound, "container_not_found"},
		{runtime.ErrInvalid, "invalid"},
		{runtime.ErrTimeout, "timeout"},
		{context.DeadlineExceeded, "timeout"},
		{context.Canceled, "canceled"},
		{runtime.ErrUnsupported, "unsupported"},
		{runtime.ErrUnavailable, "unavailable"},
		{runtime.ErrBusy, "busy"},
		{runtime.ErrNotRunning, "not_running"},
		{runtime.ErrExists, "exists"},
	} {
		if errors.Is(err, c.err) {
			return c.reason
		}
	}
	return "internal"
}

// keyedMutex is a set of mutexes, one per key, that waiters can give up on.
type keyedMutex struct {
	mu    sync.Mutex
	locks map[string]chan struct{}
}

func newKeyedMutex() *keyedMutex { return &keyedMutex{locks: map[string]chan struct{}{}} }

func (k *keyedMutex) lock(ctx context.Context, key string) error {
	for {
		k.mu.Lock()
		ch, held := k.locks[key]
		if !held {
			k.locks[key] = make(chan struct{})
			k.mu.Unlock()
			return nil
		}
		k.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (k *keyedMutex) unlock(key string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	close(k.locks[key])
	delete(k.locks, key)
}
