package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"io"

	"filippo.io/age"

	"github.com/ckpt-dev/ckpt/internal/archive"
	"github.com/ckpt-dev/ckpt/internal/runtime"
)

// Restorer restores a container from a plain tar stream of an archive.
type Restorer interface {
	Restore(ctx context.Context, tarStream io.Reader, target runtime.Ref, source string) (runtime.Container, error)
}

// SetRestorer enables restores; without one they fail with ErrUnsupported.
func (s *Service) SetRestorer(r Restorer, identities []age.Identity) {
	s.restorer, s.identities = r, identities
}

// Restore restores a container from an archive stream (plain, zstd or age;
// decrypted with the agent's identities). Empty target fields keep the
// names recorded in the archive.
func (s *Service) Restore(ctx context.Context, src io.Reader, target runtime.Ref, source string) (runtime.Container, error) {
	if s.restorer == nil {
		return runtime.Container{}, fmt.Errorf("restore %s: %w: this runtime backend cannot restore", source, runtime.ErrUnsupported)
	}
	tarStream, _, err := archive.Decode(src, s.identities)
	if err != nil {
		return runtime.Container{}, fmt.Errorf("restore %s: %w", source, invalidArchive(err))
	}
	defer tarStream.Close()
	c, err := s.restorer.Restore(ctx, tarStream, target, source)
	if err != nil {
		return c, invalidArchive(err)
	}
	return c, nil
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
		archive.ErrSymlink, archive.ErrSetuid, archive.ErrDuplicate, archive.ErrFormat, archive.ErrNoIdentity, archive.ErrWrongIdentity} {
		if errors.Is(err, sentinel) {
			return fmt.Errorf("%w: %w", runtime.ErrInvalid, err)
		}
	}
	if errors.As(err, &memberErr) {
		return fmt.Errorf("%w: %w", runtime.ErrInvalid, err)
	}
	return err
}
