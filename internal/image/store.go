// Package image keeps local container images unpacked on disk, for the
// embedded runtime to use as overlayfs lower directories. There is no
// registry: images come from files (OCI layouts, OCI archives, docker save
// tarballs) imported with Import.
package image

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"

	"github.com/ckpt-dev/ckpt/internal/runtime"
)

// Image is one unpacked image.
type Image struct {
	ID      string    // config digest "sha256:..."
	Names   []string  // normalized refs, e.g. "localhost/counter:latest"
	RootFS  string    // absolute path of the unpacked rootfs (read-only by convention)
	Config  v1.Config // Env, Entrypoint, Cmd, WorkingDir, User, ...
	Size    int64     // bytes of file content in the rootfs
	Created time.Time
}

// Progress reports one layer of an import.
type Progress struct {
	Image  string // first name, or the ID
	Layer  int    // 1-based
	Layers int
	Size   int64 // compressed size, if known
	Done   bool
}

// Store is a directory of unpacked images:
//
//	index.json        the names and metadata (written under .lock)
//	<hex>/rootfs/     one image's root filesystem
//	<hex>/config.json its raw config
//	tmp/              staging, renamed into place
type Store struct {
	dir    string
	Limits Limits
	// Progress, if set, is called before and after each layer is unpacked.
	Progress func(Progress)
}

// NotFoundError says that no image answers to Ref.
type NotFoundError struct{ Ref string }

func (e *NotFoundError) Error() string {
	return fmt.Sprintf("image %q not found; import it with `ckpt image import`", e.Ref)
}

// Unwrap lets callers test errors.Is(err, runtime.ErrInvalid).
func (e *NotFoundError) Unwrap() error { return runtime.ErrInvalid }

type record struct {
	ID       string    `json:"id"`
	Names    []string  `json:"names,omitempty"`
	Size     int64     `json:"size"`
	Created  time.Time `json:"created"`
	Imported time.Time `json:"imported"`
	Config   v1.Config `json:"config"`
}

type index struct {
	Version int      `json:"version"`
	Images  []record `json:"images"`
}

const indexVersion = 1

var idRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// Open opens (creating it if needed) the store in dir.
func Open(dir string) (*Store, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("open image store %s: %w", dir, err)
	}
	if err := os.MkdirAll(filepath.Join(abs, "tmp"), 0o700); err != nil {
		return nil, fmt.Errorf("open image store %s: %w", dir, err)
	}
	s := &Store{dir: abs, Limits: DefaultLimits}
	s.cleanTmp()
	return s, nil
}

// Dir is the store's directory.
func (s *Store) Dir() string { return s.dir }

// cleanTmp removes staging dirs of processes that are gone.
func (s *Store) cleanTmp() {
	ents, _ := os.ReadDir(filepath.Join(s.dir, "tmp"))
	for _, e := range ents {
		pidStr, _, _ := strings.Cut(e.Name(), "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid <= 0 || unix.Kill(pid, 0) == unix.ESRCH {
			_ = os.RemoveAll(filepath.Join(s.dir, "tmp", e.Name()))
		}
	}
}

// mkTemp makes a staging dir named after this process.
func (s *Store) mkTemp(kind string) (string, error) {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	p := filepath.Join(s.dir, "tmp", fmt.Sprintf("%d-%s-%s", os.Getpid(), kind, hex.EncodeToString(b)))
	if err := os.Mkdir(p, 0o700); err != nil {
		return "", err
	}
	return p, nil
}

// lock takes the store's inter-process lock.
func (s *Store) lock() (unlock func(), err error) {
	f, err := os.OpenFile(filepath.Join(s.dir, ".lock"), os.O_CREATE|os.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, err
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
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

func (s *Store) readIndex() (*index, error) {
	b, err := os.ReadFile(filepath.Join(s.dir, "index.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return &index{Version: indexVersion}, nil
	}
	if err != nil {
		return nil, err
	}
	var idx index
	if err := json.Unmarshal(b, &idx); err != nil {
		return nil, fmt.Errorf("read %s: %w", filepath.Join(s.dir, "index.json"), err)
	}
	if idx.Version != indexVersion {
		return nil, fmt.Errorf("read %s: unknown version %d", filepath.Join(s.dir, "index.json"), idx.Version)
	}
	return &idx, nil
}

// writeIndex replaces index.json atomically. Callers hold the lock.
func (s *Store) writeIndex(idx *index) error {
	b, err := json.MarshalIndent(idx, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(s.dir, ".index.json.tmp")
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(s.dir, "index.json"))
	}
	if err != nil {
		_ = os.Remove(tmp)
	}
	return err
}

func (s *Store) imageOf(r record) Image {
	return Image{
		ID:      r.ID,
		Names:   append([]string(nil), r.Names...),
		RootFS:  filepath.Join(s.dir, strings.TrimPrefix(r.ID, "sha256:"), "rootfs"),
		Config:  r.Config,
		Size:    r.Size,
		Created: r.Created,
	}
}

// List returns every image, newest first.
func (s *Store) List() ([]Image, error) {
	idx, err := s.readIndex()
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	out := make([]Image, 0, len(idx.Images))
	for _, r := range idx.Images {
		out = append(out, s.imageOf(r))
	}
	sort.SliceStable(out, func(i, j int) bool {
		if !out[i].Created.Equal(out[j].Created) {
			return out[i].Created.After(out[j].Created)
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

// Resolve finds an image by exact name, by ID or ID prefix (with or
// without "sha256:"), or by short name: "counter" tries "counter:latest",
// "localhost/counter:latest" and "docker.io/library/counter:latest".
func (s *Store) Resolve(ref string) (Image, error) {
	idx, err := s.readIndex()
	if err != nil {
		return Image{}, fmt.Errorf("resolve image %q: %w", ref, err)
	}
	i, err := find(idx, ref)
	if err != nil {
		return Image{}, err
	}
	return s.imageOf(idx.Images[i]), nil
}

var hexRE = regexp.MustCompile(`^[0-9a-f]+$`)

// find returns the index of the record ref names.
func find(idx *index, ref string) (int, error) {
	if ref == "" {
		return -1, &NotFoundError{Ref: ref}
	}
	for _, c := range candidates(ref) {
		for i, r := range idx.Images {
			for _, n := range r.Names {
				if n == c {
					return i, nil
				}
			}
		}
	}
	// ID prefix; a bare hex prefix needs a few digits to mean anything.
	prefix, hasAlg := strings.CutPrefix(ref, "sha256:")
	if hexRE.MatchString(prefix) && (hasAlg || len(prefix) >= 4) {
		found := -1
		for i, r := range idx.Images {
			if strings.HasPrefix(strings.TrimPrefix(r.ID, "sha256:"), prefix) {
				if found >= 0 {
					return -1, fmt.Errorf("image ID prefix %q is ambiguous: %w", ref, runtime.ErrInvalid)
				}
				found = i
			}
		}
		if found >= 0 {
			return found, nil
		}
	}
	return -1, &NotFoundError{Ref: ref}
}

// Remove deletes the image ref names, with all its names.
func (s *Store) Remove(ref string) (Image, error) {
	unlock, err := s.lock()
	if err != nil {
		return Image{}, fmt.Errorf("remove image %s: %w", ref, err)
	}
	defer unlock()
	idx, err := s.readIndex()
	if err != nil {
		return Image{}, fmt.Errorf("remove image %s: %w", ref, err)
	}
	i, err := find(idx, ref)
	if err != nil {
		return Image{}, err
	}
	img := s.imageOf(idx.Images[i])
	idx.Images = append(idx.Images[:i], idx.Images[i+1:]...)
	if err := s.writeIndex(idx); err != nil {
		return Image{}, fmt.Errorf("remove image %s: %w", ref, err)
	}
	// Move it out of sight first, so a crash leaves only staging garbage.
	tmp, err := s.mkTemp("rm")
	if err != nil {
		return img, fmt.Errorf("remove image %s: %w", ref, err)
	}
	if err := os.Rename(filepath.Dir(img.RootFS), filepath.Join(tmp, "img")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return img, fmt.Errorf("remove image %s: %w", ref, err)
	}
	if err := os.RemoveAll(tmp); err != nil {
		return img, fmt.Errorf("remove image %s: %w", ref, err)
	}
	return img, nil
}
