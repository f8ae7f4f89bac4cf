package checkpoint

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/ckpt-dev/ckpt/internal/archive"
	"github.com/ckpt-dev/ckpt/internal/runtime"
)

// RestoreLazy restores from an archive stream (plain, zstd or age) with
// lazy memory. A plain archive file is served in place; anything else
// (compressed or encrypted archives cannot be read at an offset, an upload
// has no file) is first decoded into an unlinked spool file in the staging
// directory, which the restored container's shim then holds open.
func (s *Service) RestoreLazy(ctx context.Context, src io.Reader, target runtime.Ref, source string) (runtime.Container, error) {
	lr := s.caps.LazyRestore
	if lr == nil {
		return runtime.Container{}, fmt.Errorf("restore %s lazily: %w: this runtime backend cannot restore lazily", source, runtime.ErrUnsupported)
	}
	if err := s.locks.lock(ctx, restoreLock); err != nil {
		return runtime.Container{}, fmt.Errorf("restore %s: waiting for another restore: %w", source, err)
	}
	defer s.locks.unlock(restoreLock)
	if f, ok := src.(*os.File); ok && isPlainTar(f) {
		c, err := lr.RestoreLazyFile(ctx, f, target, source, s.checkArchive)
		return c, invalidArchive(err)
	}
	tarStream, _, err := archive.Decode(src, s.opts.Identities)
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
	c, err := lr.RestoreLazyFile(ctx, spool, target, source, s.checkArchive)
	return c, invalidArchive(err)
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

// restoreInPlace restores from a published plain archive file without
// copying its pages out, when the backend can; ok is false when it cannot.
// Compressed or encrypted archives are restored by extraction, which
// decodes, hashes and writes them in one pass.
func (s *Service) restoreInPlace(ctx context.Context, f *os.File, target runtime.Ref, source string) (c runtime.Container, ok bool, err error) {
	ir := s.caps.InPlaceRestore
	if ir == nil || !s.opts.InPlaceRestore || !isPlainTar(f) {
		return c, false, nil
	}
	if err := s.locks.lock(ctx, restoreLock); err != nil {
		return c, true, fmt.Errorf("restore %s: waiting for another restore: %w", source, err)
	}
	defer s.locks.unlock(restoreLock)
	c, err = ir.RestoreInPlaceFile(ctx, f, target, source, s.checkArchive)
	return c, true, invalidArchive(err)
}

// isPlainTar reports whether f is an uncompressed, unencrypted tar.
func isPlainTar(f *os.File) bool {
	_, format, err := archive.Decode(io.NewSectionReader(f, 0, 1<<20), nil)
	return err == nil && format == archive.FormatTar
}
