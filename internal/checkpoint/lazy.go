package checkpoint

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/ckpt-dev/ckpt/internal/archive"
	"github.com/ckpt-dev/ckpt/internal/runtime"
)

// LazyRestorer restores a container whose memory is served on demand from
// a plain tar archive file, which it keeps open as long as it needs.
type LazyRestorer interface {
	RestoreLazy(ctx context.Context, archiveFile *os.File, target runtime.Ref, source string) (runtime.Container, error)
}

// InPlaceRestorer restores a container fully from a plain tar archive
// file without extracting its page images.
type InPlaceRestorer interface {
	RestoreInPlace(ctx context.Context, archiveFile *os.File, target runtime.Ref, source string) (runtime.Container, error)
}

// restoreInPlace restores from a published plain archive file without
// extracting its pages, when the restorer can; ok is false when it cannot
// (compressed or encrypted archives are restored by extraction, which
// decodes, hashes and writes them in one pass).
func (s *Service) restoreInPlace(ctx context.Context, f *os.File, target runtime.Ref, source string) (c runtime.Container, ok bool, err error) {
	ir, can := s.restorer.(InPlaceRestorer)
	if !can || s.NoInPlace {
		return c, false, nil
	}
	if _, format, err := archive.Decode(io.NewSectionReader(f, 0, 1<<20), nil); err != nil || format != archive.FormatTar {
		return c, false, nil
	}
	c, err = ir.RestoreInPlace(ctx, f, target, source)
	if err != nil {
		return c, true, invalidArchive(err)
	}
	return c, true, nil
}

// RestoreLazy restores from an archive stream (plain, zstd or age) with
// lazy memory. A plain archive file is served in place; anything else
// (compressed or encrypted archives cannot be read at an offset, an upload
// has no file) is first decoded into an unlinked spool file in the staging
// directory, which the restored container's shim then holds open.
func (s *Service) RestoreLazy(ctx context.Context, src io.Reader, target runtime.Ref, source string) (runtime.Container, error) {
	lr, ok := s.restorer.(LazyRestorer)
	if !ok {
		return runtime.Container{}, fmt.Errorf("restore %s lazily: %w: this runtime backend cannot restore lazily", source, runtime.ErrUnsupported)
	}
	f, isFile := src.(*os.File)
	if isFile {
		if _, format, err := archive.Decode(io.NewSectionReader(f, 0, 1<<20), s.identities); err == nil && format == archive.FormatTar {
			return lr.RestoreLazy(ctx, f, target, source)
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return runtime.Container{}, err
		}
	}
	tarStream, _, err := archive.Decode(src, s.identities)
	if err != nil {
		return runtime.Container{}, fmt.Errorf("restore %s: %w", source, invalidArchive(err))
	}
	defer tarStream.Close()
	spool, err := os.CreateTemp(s.StagingDir(), "lazy-*.tar")
	if err != nil {
		return runtime.Container{}, err
	}
	os.Remove(spool.Name()) // the open file is the only reference
	defer spool.Close()
	if _, err := io.Copy(spool, tarStream); err != nil {
		return runtime.Container{}, fmt.Errorf("restore %s: decode into a spool file: %w", source, invalidArchive(err))
	}
	c, err := lr.RestoreLazy(ctx, spool, target, source)
	if err != nil {
		return c, invalidArchive(err)
	}
	return c, nil
}

// RestoreArchiveLazy restores lazily from a published archive.
func (s *Service) RestoreArchiveLazy(ctx context.Context, name string, target runtime.Ref) (runtime.Container, error) {
	f, _, release, err := s.Open(name)
	if err != nil {
		return runtime.Container{}, err
	}
	defer release()
	defer f.Close()
	return s.RestoreLazy(ctx, f, target, name)
}
