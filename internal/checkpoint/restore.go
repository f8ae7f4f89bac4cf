package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/ckpt-dev/ckpt/internal/archive"
	"github.com/ckpt-dev/ckpt/internal/runtime"
)

// Restore restores a container from an archive stream (plain, zstd or age;
// decrypted with the agent's identities). Empty target fields keep the
// names recorded in the archive. A backend that restores from a file gets
// the plain archive spooled to a private file in the staging directory.
func (s *Service) Restore(ctx context.Context, src io.Reader, target runtime.Ref, source string) (runtime.Container, error) {
	if s.caps.StreamRestore == nil && s.caps.FileRestore == nil {
		return runtime.Container{}, fmt.Errorf("restore %s: %w: this runtime backend cannot restore", source, runtime.ErrUnsupported)
	}
	tarStream, _, err := archive.Decode(src, s.opts.Identities)
	if err != nil {
		return runtime.Container{}, fmt.Errorf("restore %s: %w", source, invalidArchive(err))
	}
	defer tarStream.Close()
	// One restore at a time: a backend checks that the target name is
	// free and then creates it, and the names may come from inside the
	// archive, so two restores cannot be told apart before they start.
	if err := s.locks.lock(ctx, restoreLock); err != nil {
		return runtime.Container{}, fmt.Errorf("restore %s: waiting for another restore: %w", source, err)
	}
	defer s.locks.unlock(restoreLock)
	var c runtime.Container
	if s.caps.StreamRestore != nil {
		c, err = s.caps.StreamRestore.RestoreStream(ctx, tarStream, target, source, s.checkArchive)
	} else {
		c, err = s.restoreFromFile(ctx, tarStream, target, source)
	}
	if err != nil {
		return c, invalidArchive(err)
	}
	return c, nil
}

// restoreLock is the key of the restore lock in s.locks (no container ID
// has a NUL).
const restoreLock = "\x00restore"

// restoreFromFile spools the plain archive to a private file (0600 in a
// 0700 directory, removed afterwards) for a FileRestorer. Empty target
// fields are left for it to fill from the archive (the CRI backend does).
func (s *Service) restoreFromFile(ctx context.Context, tarStream io.Reader, target runtime.Ref, source string) (runtime.Container, error) {
	dir, err := os.MkdirTemp(s.StagingDir(), "restore-")
	if err != nil {
		return runtime.Container{}, fmt.Errorf("restore %s: %w", source, err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "archive.tar")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return runtime.Container{}, fmt.Errorf("restore %s: %w", source, err)
	}
	// The runtime reads the file itself: check it on the way to the disk,
	// every member against checksums.sha256 and that against the trusted
	// keys, before the runtime sees it.
	m, err := archive.Check(io.TeeReader(tarStream, f), archive.DefaultLimits())
	if err == nil {
		_, err = io.Copy(f, tarStream) // the tar trailer
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return runtime.Container{}, fmt.Errorf("restore %s: %w", source, err)
	}
	if err := s.verify(m); err != nil {
		return runtime.Container{}, fmt.Errorf("restore %s: %w", source, err)
	}
	return s.caps.FileRestore.Restore(ctx, path, target)
}

// verify applies the node's trust policy; without one nothing restores.
func (s *Service) verify(m *archive.Manifest) error {
	if s.opts.Trust == nil {
		return fmt.Errorf("%w: this agent has no trust policy", archive.ErrUntrusted)
	}
	return s.opts.Trust.Verify(m)
}

// checkArchive is verify in the form a StreamRestorer calls back.
func (s *Service) checkArchive(manifest, signature []byte) error {
	if manifest == nil {
		return s.verify(nil)
	}
	return s.verify(&archive.Manifest{Raw: manifest, Signature: signature})
}

// RestoreArchive restores from a published archive, which retention leaves
// alone meanwhile.
func (s *Service) RestoreArchive(ctx context.Context, name string, target runtime.Ref) (runtime.Container, error) {
	f, _, release, err := s.Open(name)
	if err != nil {
		return runtime.Container{}, err
	}
	defer release()
	defer f.Close()
	if c, ok, err := s.restoreInPlace(ctx, f, target, name); ok {
		return c, err
	}
	return s.Restore(ctx, f, target, name)
}

// invalidArchive marks errors caused by the archive's content as invalid
// input, so that they are answered 400 and not 500.
func invalidArchive(err error) error {
	var memberErr *archive.Error
	for _, sentinel := range []error{archive.ErrEscape, archive.ErrAbsolute, archive.ErrBadName, archive.ErrType,
		archive.ErrTooLarge, archive.ErrTooMany, archive.ErrChecksum, archive.ErrUnlisted, archive.ErrMissing,
		archive.ErrSymlink, archive.ErrSetuid, archive.ErrDuplicate, archive.ErrFormat, archive.ErrNoIdentity, archive.ErrWrongIdentity,
		archive.ErrMisplaced, archive.ErrRefusedImage, archive.ErrUnsigned, archive.ErrBadSignature, archive.ErrUntrusted} {
		if errors.Is(err, sentinel) {
			return fmt.Errorf("%w: %w", runtime.ErrInvalid, err)
		}
	}
	if errors.As(err, &memberErr) {
		return fmt.Errorf("%w: %w", runtime.ErrInvalid, err)
	}
	return err
}
