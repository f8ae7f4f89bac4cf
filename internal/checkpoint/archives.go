package checkpoint

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ckpt-dev/ckpt/internal/runtime"
	"github.com/ckpt-dev/ckpt/pkg/api"
)

// ArchiveInfo describes one published archive, as the API lists it.
type ArchiveInfo = api.Archive

// Extended attributes that record who an archive belongs to (the name alone
// is ambiguous: namespaces and container names both contain dashes) and a
// cached digest.
const (
	xattrRef    = "user.ckpt.ref"
	xattrSHA256 = "user.ckpt.sha256"
)

var archiveNameRE = regexp.MustCompile(`^checkpoint-([a-z0-9.-]+)_([a-z0-9-]+)-(\d{4}-\d\d-\d\dT[0-9:.]+(Z|[+-]\d\d:\d\d))\.tar(\.zst)?(\.age)?$`)

// ValidArchiveName reports whether name is a plain file name of the form
// ckpt writes. Only such names are served, so that no request reaches
// outside the checkpoints directory.
func ValidArchiveName(name string) bool {
	return len(name) < 512 && !strings.ContainsAny(name, "/\x00") && archiveNameRE.MatchString(name)
}

// pins keeps archives that are being read from retention.
type pins struct {
	mu    sync.Mutex
	count map[string]int
}

func (p *pins) pin(name string) func() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.count == nil {
		p.count = map[string]int{}
	}
	p.count[name]++
	return func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.count[name]--; p.count[name] <= 0 {
			delete(p.count, name)
		}
	}
}

func (p *pins) pinned(name string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.count[name] > 0
}

// List returns the published archives, oldest first.
func (s *Service) List() ([]ArchiveInfo, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("list archives: %w", err)
	}
	var out []ArchiveInfo
	for _, e := range entries {
		if !e.Type().IsRegular() || !ValidArchiveName(e.Name()) {
			continue
		}
		info, err := s.info(e.Name(), false)
		if err != nil {
			continue // vanished meanwhile
		}
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, nil
}

// ListWithDigests is List with every archive's sha256 (computed once and
// cached in an extended attribute).
func (s *Service) ListWithDigests() ([]ArchiveInfo, error) {
	list, err := s.List()
	if err != nil {
		return nil, err
	}
	for i := range list {
		if info, err := s.info(list[i].Name, true); err == nil {
			list[i] = info
		}
	}
	return list, nil
}

func (s *Service) info(name string, digest bool) (ArchiveInfo, error) {
	path := filepath.Join(s.dir, name)
	st, err := os.Lstat(path)
	if err != nil {
		return ArchiveInfo{}, err
	}
	if !st.Mode().IsRegular() {
		return ArchiveInfo{}, fmt.Errorf("archive %s is not a regular file", name)
	}
	info := ArchiveInfo{Name: name, Path: path, Size: st.Size(), Created: st.ModTime().UTC()}
	m := archiveNameRE.FindStringSubmatch(name)
	info.Pod = m[1]
	if t, err := time.Parse(time.RFC3339Nano, m[3]); err == nil {
		info.Created = t.UTC()
	}
	if ref, ok := getXattr(path, xattrRef); ok {
		parts := strings.SplitN(ref, "/", 3)
		if len(parts) == 3 {
			info.Namespace, info.Pod, info.Container = parts[0], parts[1], parts[2]
			if info.Container == "" {
				info.Kind = "pod"
			}
		}
	} else {
		info.Container = m[2] // "<namespace>-<container>": not separable
	}
	if digest {
		info.SHA256, err = s.digest(path, st)
		if err != nil {
			return info, err
		}
	}
	return info, nil
}

// digest returns the archive's sha256, cached with the size and mtime it
// was computed for.
func (s *Service) digest(path string, st os.FileInfo) (string, error) {
	stamp := strconv.FormatInt(st.Size(), 10) + ":" + strconv.FormatInt(st.ModTime().UnixNano(), 10)
	if v, ok := getXattr(path, xattrSHA256); ok {
		if sum, at, ok := strings.Cut(v, " "); ok && at == stamp {
			return sum, nil
		}
	}
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	sum := hex.EncodeToString(h.Sum(nil))
	unix.Setxattr(path, xattrSHA256, []byte(sum+" "+stamp), 0)
	return sum, nil
}

func getXattr(path, name string) (string, bool) {
	buf := make([]byte, 512)
	n, err := unix.Getxattr(path, name, buf)
	if err != nil || n <= 0 {
		return "", false
	}
	return string(buf[:n]), true
}

// Open opens a published archive for reading; it is kept from retention
// until release is called.
func (s *Service) Open(name string) (f *os.File, info ArchiveInfo, release func(), err error) {
	if !ValidArchiveName(name) {
		return nil, info, nil, fmt.Errorf("archive name %q: %w", name, runtime.ErrInvalid)
	}
	// unpin is a local: the error returns below set release to nil.
	unpin := s.pins.pin(name)
	defer func() {
		if err != nil {
			unpin()
		}
	}()
	root, err := os.OpenRoot(s.dir)
	if err != nil {
		return nil, info, nil, err
	}
	defer root.Close()
	f, err = root.OpenFile(name, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil, info, nil, fmt.Errorf("archive %s: %w", name, ErrArchiveNotFound)
	}
	if err != nil {
		return nil, info, nil, err
	}
	if info, err = s.info(name, false); err != nil {
		f.Close()
		return nil, info, nil, err
	}
	return f, info, unpin, nil
}

// ErrArchiveNotFound is returned for an archive name that does not exist.
var ErrArchiveNotFound = errors.New("archive does not exist")

// Delete removes a published archive.
func (s *Service) Delete(name string) error {
	if !ValidArchiveName(name) {
		return fmt.Errorf("archive name %q: %w", name, runtime.ErrInvalid)
	}
	if s.pins.pinned(name) {
		return fmt.Errorf("archive %s is being read: %w", name, runtime.ErrBusy)
	}
	root, err := os.OpenRoot(s.dir)
	if err != nil {
		return err
	}
	defer root.Close()
	if err := root.Remove(name); errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("archive %s: %w", name, ErrArchiveNotFound)
	} else if err != nil {
		return fmt.Errorf("delete archive %s: %w", name, err)
	}
	return nil
}

func setRef(path string, ref runtime.Ref) {
	unix.Setxattr(path, xattrRef, []byte(ref.String()), 0)
}
