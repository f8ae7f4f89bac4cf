package ckptimage

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/match"
	"golang.org/x/sys/unix"

	"github.com/ckpt-dev/ckpt/internal/archive"
	"github.com/ckpt-dev/ckpt/internal/image"
	"github.com/ckpt-dev/ckpt/internal/runtime"
)

// maxLayerBytes bounds the one layer of a checkpoint image: an archive's
// total (archive.DefaultLimits) plus its tar headers.
var maxLayerBytes = archive.DefaultLimits().MaxTotalBytes + 1<<30

// maxMeta bounds manifests and configs.
const maxMeta = 4 << 20

// Store keeps checkpoint images in an OCI image layout (0700: the images
// hold every memory page of their containers). Names are the normalized
// references (image.NormalizeName) in org.opencontainers.image.ref.name.
type Store struct {
	dir string
	lp  layout.Path
}

// NotFoundError says that no checkpoint image answers to Ref.
type NotFoundError struct{ Ref string }

func (e *NotFoundError) Error() string {
	return fmt.Sprintf("checkpoint image %q not found", e.Ref)
}

// ErrNotFound matches every NotFoundError.
var ErrNotFound = errors.New("checkpoint image not found")

func (e *NotFoundError) Is(target error) bool { return target == ErrNotFound }

// Open opens (creating it) the store in dir.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open checkpoint image store %s: %w", dir, err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open checkpoint image store %s: %w", dir, err)
	}
	lp, err := layout.FromPath(dir)
	if err != nil {
		if lp, err = layout.Write(dir, empty.Index); err != nil {
			return nil, fmt.Errorf("open checkpoint image store %s: %w", dir, err)
		}
	}
	return &Store{dir: dir, lp: lp}, nil
}

// TempDir is the store's staging directory for Build, on the store's file
// system. Layers staged by processes that are gone are removed.
func (s *Store) TempDir() (string, error) {
	dir := filepath.Join(s.dir, "tmp")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "layer-%d-", &pid); err != nil || pid <= 0 || unix.Kill(pid, 0) == unix.ESRCH {
			_ = os.Remove(filepath.Join(dir, e.Name()))
		}
	}
	return dir, nil
}

// Dir is the layout's directory.
func (s *Store) Dir() string { return s.dir }

// lock takes the store's inter-process lock, exclusive for writers.
func (s *Store) lock() (func(), error) { return s.flock(unix.LOCK_EX) }

// rlock takes it shared, for readers of index.json.
func (s *Store) rlock() (func(), error) { return s.flock(unix.LOCK_SH) }

func (s *Store) flock(how int) (func(), error) {
	f, err := os.OpenFile(filepath.Join(s.dir, ".lock"), os.O_CREATE|os.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, err
	}
	for {
		err = unix.Flock(int(f.Fd()), how)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
		f.Close()
	}, nil
}

// Entry is one named checkpoint image.
type Entry struct {
	Name      string
	Digest    string // manifest digest
	Container string
	Size      int64 // layer bytes
	Created   time.Time
	// Pulled: OpenArchive or ArchiveFile pulled it for this call.
	Pulled bool
}

// Add names img in the store, taking the name from any other image.
func (s *Store) Add(img v1.Image, ref string) (Entry, error) {
	name, err := image.NormalizeName(ref)
	if err != nil {
		return Entry{}, err
	}
	if err := checkImage(img, name); err != nil {
		return Entry{}, err
	}
	unlock, err := s.lock()
	if err != nil {
		return Entry{}, fmt.Errorf("add checkpoint image %s: %w", name, err)
	}
	defer unlock()
	s.adoptStaged(img)
	err = s.lp.ReplaceImage(img, match.Annotation(annotationRefName, name), layout.WithAnnotations(map[string]string{annotationRefName: name}))
	if err != nil {
		s.gc()
		return Entry{}, fmt.Errorf("add checkpoint image %s: %w", name, err)
	}
	s.gc()
	return entryOf(name, img)
}

func entryOf(name string, img v1.Image) (Entry, error) {
	d, err := img.Digest()
	if err != nil {
		return Entry{}, err
	}
	m, err := img.Manifest()
	if err != nil {
		return Entry{}, err
	}
	e := Entry{Name: name, Digest: d.String()}
	e.Container, _ = IsCheckpoint(m.Annotations)
	for _, l := range m.Layers {
		e.Size += l.Size
	}
	if t, err := time.Parse(time.RFC3339, m.Annotations[annotationCreated]); err == nil {
		e.Created = t
	}
	return e, nil
}

// adoptStaged moves the staged layer of a built image into the blobs (one
// rename on the same file system instead of a copy of the whole archive);
// the layout then finds it in place. Callers hold the lock.
func (s *Store) adoptStaged(img v1.Image) {
	ls, err := img.Layers()
	if err != nil {
		return
	}
	for _, l := range ls {
		fl, ok := l.(*fileLayer)
		if !ok {
			continue
		}
		dst := s.blobPath(fl.digest)
		if fi, err := os.Stat(dst); err == nil && fi.Size() == fl.size {
			continue
		}
		if os.MkdirAll(filepath.Dir(dst), 0o700) == nil && os.Rename(fl.path, dst) == nil {
			fl.path, fl.adopted = dst, true
		}
	}
}

// List returns the named images, sorted by name.
func (s *Store) List() ([]Entry, error) {
	unlock, err := s.rlock()
	if err != nil {
		return nil, fmt.Errorf("list checkpoint images: %w", err)
	}
	defer unlock()
	idx, err := s.lp.ImageIndex()
	if err != nil {
		return nil, fmt.Errorf("list checkpoint images: %w", err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("list checkpoint images: %w", err)
	}
	var out []Entry
	for _, d := range im.Manifests {
		name := d.Annotations[annotationRefName]
		if name == "" || !d.MediaType.IsImage() {
			continue
		}
		img, err := idx.Image(d.Digest)
		if err != nil {
			return nil, fmt.Errorf("list checkpoint images: %s: %w", name, err)
		}
		e, err := entryOf(name, img)
		if err != nil {
			return nil, fmt.Errorf("list checkpoint images: %s: %w", name, err)
		}
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Resolve finds a checkpoint image by name (normalized like the image
// store's) or manifest digest (prefix of at least 4 hex digits).
func (s *Store) Resolve(ref string) (v1.Image, Entry, error) {
	list, err := s.List()
	if err != nil {
		return nil, Entry{}, err
	}
	found := -1
	if name, err := image.NormalizeName(ref); err == nil {
		for i, e := range list {
			if e.Name == name {
				found = i
			}
		}
	}
	if prefix, hasAlg := strings.CutPrefix(ref, "sha256:"); found < 0 && isHex(prefix) && (hasAlg || len(prefix) >= 4) {
		for i, e := range list {
			if strings.HasPrefix(strings.TrimPrefix(e.Digest, "sha256:"), prefix) {
				if found >= 0 && list[found].Digest != e.Digest {
					return nil, Entry{}, fmt.Errorf("checkpoint image digest prefix %q is ambiguous: %w", ref, runtime.ErrInvalid)
				}
				found = i
			}
		}
	}
	if found < 0 {
		return nil, Entry{}, &NotFoundError{Ref: ref}
	}
	h, err := v1.NewHash(list[found].Digest)
	if err != nil {
		return nil, Entry{}, err
	}
	img, err := s.lp.Image(h)
	if err != nil {
		return nil, Entry{}, fmt.Errorf("open checkpoint image %s: %w", ref, err)
	}
	return img, list[found], nil
}

func isHex(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// Remove drops the name ref and the blobs no other name uses.
func (s *Store) Remove(ref string) (Entry, error) {
	_, e, err := s.Resolve(ref)
	if err != nil {
		return Entry{}, err
	}
	unlock, err := s.lock()
	if err != nil {
		return Entry{}, fmt.Errorf("remove checkpoint image %s: %w", ref, err)
	}
	defer unlock()
	if err := s.lp.RemoveDescriptors(match.Annotation(annotationRefName, e.Name)); err != nil {
		return Entry{}, fmt.Errorf("remove checkpoint image %s: %w", ref, err)
	}
	s.gc()
	return e, nil
}

// gc removes unreferenced blobs and partial downloads. Callers hold the lock.
func (s *Store) gc() {
	if hs, err := s.lp.GarbageCollect(); err == nil {
		for _, h := range hs {
			_ = s.lp.RemoveBlob(h)
		}
	}
	ents, _ := os.ReadDir(filepath.Join(s.dir, "blobs", "sha256"))
	for _, e := range ents {
		var pid int
		switch {
		case strings.HasSuffix(e.Name(), ".tmp"):
			// the layout's own, written under this lock: a leftover
		case strings.HasPrefix(e.Name(), "."):
			// a download (writeBlob): another process's may be running
			if _, hexAndPid, ok := strings.Cut(e.Name(), "-"); ok {
				fmt.Sscanf(hexAndPid, "%d-", &pid)
			}
			if pid > 0 && unix.Kill(pid, 0) != unix.ESRCH {
				continue
			}
		default:
			continue
		}
		_ = os.Remove(filepath.Join(s.dir, "blobs", "sha256", e.Name()))
	}
}

// writeBlob copies a blob into the layout through a hidden temporary file
// (named with the PID, so that gc leaves a live download alone), checking
// its size and digest before renaming it into place: a broken download
// leaves nothing behind. It needs no lock: blobs are named by content.
// progress, if set, sees the bytes so far.
func (s *Store) writeBlob(h v1.Hash, size int64, r io.Reader, progress func(int64)) error {
	if h.Algorithm != "sha256" || len(h.Hex) != 64 || !isHex(h.Hex) {
		return fmt.Errorf("unsupported digest %s", h)
	}
	final := filepath.Join(s.dir, "blobs", "sha256", h.Hex)
	if fi, err := os.Stat(final); err == nil && fi.Size() == size {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(final), 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(final), fmt.Sprintf(".%s-%d-*", h.Hex, os.Getpid()))
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	sum := sha256.New()
	var w io.Writer = io.MultiWriter(f, sum)
	if progress != nil {
		w = io.MultiWriter(w, progressWriter(progress))
	}
	n, err := io.Copy(w, io.LimitReader(r, size+1))
	if err != nil {
		return fmt.Errorf("blob %s: download broke after %d of %d bytes: %w", h, n, size, err)
	}
	if n != size {
		return fmt.Errorf("blob %s: got %d bytes, want %d (truncated download?)", h, n, size)
	}
	if got := hex.EncodeToString(sum.Sum(nil)); got != h.Hex {
		return fmt.Errorf("blob %s: %w (got sha256:%s)", h, errDigest, got)
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), final)
}

type progressWriter func(int64)

func (p progressWriter) Write(b []byte) (int, error) {
	p(int64(len(b)))
	return len(b), nil
}

// blobPath is where a blob of the layout lives.
func (s *Store) blobPath(h v1.Hash) string {
	return filepath.Join(s.dir, "blobs", h.Algorithm, h.Hex)
}

func matchName(name string) match.Matcher { return match.Annotation(annotationRefName, name) }

func layoutNameOption(name string) layout.Option {
	return layout.WithAnnotations(map[string]string{annotationRefName: name})
}

func isNotFound(err error) bool {
	var nf *NotFoundError
	return errors.As(err, &nf)
}
