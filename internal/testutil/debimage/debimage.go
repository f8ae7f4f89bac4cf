// Package debimage builds container images from Debian 12 packages, for
// tests that need real software (redis, python3, a JVM) and have no
// registry to pull from. It resolves a package list's dependencies with a
// private apt state, downloads the .debs once into a cache, unpacks them
// with dpkg-deb -x, adds /etc/passwd, /etc/group and the test's files, and
// writes a `docker save` tarball that `ckpt image import` reads.
//
//	b := debimage.Builder{}
//	path, err := b.Build(ctx, debimage.Spec{
//		Name:       "localhost/redis:deb12",
//		Packages:   []string{"redis-server"},
//		Users:      []debimage.User{{Name: "redis", UID: 100, GID: 101}},
//		Entrypoint: []string{"/usr/bin/redis-server"},
//	})
//
// Everything lands under the cache directory (default /opt/ckpt/debimage):
// apt/ is the private apt state, <key>/ holds the .debs of one package list
// (key: a hash of the list), packages.lock naming their versions, and the
// images built from them. A second Build of the same Spec reads only the
// cache: no network, no apt.
package debimage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
)

// DefaultCacheDir is where downloads and images are kept between runs.
const DefaultCacheDir = "/opt/ckpt/debimage"

// builderVersion changes when the same Spec would give a different image.
const builderVersion = "1"

// ErrNoApt means this machine cannot build images from Debian packages
// (no apt-get, apt-cache, dpkg-deb or Debian keyring).
var ErrNoApt = errors.New("no Debian package tools")

// Spec describes one image.
type Spec struct {
	// Name is the image reference, e.g. localhost/redis:deb12.
	Name string
	// Packages are installed with their Depends and Pre-Depends.
	Packages []string
	// Exclude lists packages never installed, even when depended on (for
	// what only maintainer scripts or unused features need).
	Exclude []string
	// Users are added to /etc/passwd and /etc/group beside root and nobody.
	Users []User
	// Dirs are created (after the packages are unpacked).
	Dirs []Dir
	// Files are written last; they win over the packages' files.
	Files []File
	// Symlinks maps a path to its target (e.g. /bin/sh to busybox); they
	// are made after the files.
	Symlinks map[string]string
	// Prune lists paths removed from the rootfs (docs, man pages); nil
	// means DefaultPrune.
	Prune []string

	Entrypoint []string
	Cmd        []string
	Env        []string
	WorkingDir string
}

// DefaultPrune is what images leave out unless Spec.Prune says otherwise.
var DefaultPrune = []string{"/usr/share/doc", "/usr/share/man", "/usr/share/info", "/usr/share/locale", "/usr/share/lintian"}

// User is an account (and its primary group, named like it).
type User struct {
	Name     string
	UID, GID int
	Home     string // default /nonexistent
}

// Dir is a directory in the image.
type Dir struct {
	Path     string
	Mode     uint32 // Unix mode bits, e.g. 0o1777
	UID, GID int
}

// File is a regular file in the image.
type File struct {
	Path string
	Mode uint32 // Unix mode bits, e.g. 0o755
	Data []byte
}

// Builder builds images into a cache directory.
type Builder struct {
	// CacheDir defaults to $CKPT_DEBIMAGE_CACHE, then DefaultCacheDir.
	CacheDir string
	// Logf, if set, is told what the builder downloads and builds.
	Logf func(format string, args ...any)
}

func (b *Builder) cacheDir() string {
	if b.CacheDir != "" {
		return b.CacheDir
	}
	if d := os.Getenv("CKPT_DEBIMAGE_CACHE"); d != "" {
		return d
	}
	return DefaultCacheDir
}

func (b *Builder) logf(format string, args ...any) {
	if b.Logf != nil {
		b.Logf(format, args...)
	}
}

// Check reports ErrNoApt when the tools the builder runs are missing.
func Check() error {
	for _, t := range []string{"apt-get", "apt-cache", "dpkg-deb"} {
		if _, err := exec.LookPath(t); err != nil {
			return fmt.Errorf("%w: %s not found", ErrNoApt, t)
		}
	}
	return nil
}

func (s Spec) validate() error {
	if s.Name == "" || len(s.Packages) == 0 {
		return errors.New("debimage: Name and Packages are required")
	}
	for _, f := range s.Files {
		if !path.IsAbs(f.Path) || path.Clean(f.Path) != f.Path || f.Path == "/" {
			return fmt.Errorf("debimage: file path %q must be clean and absolute", f.Path)
		}
	}
	for _, d := range s.Dirs {
		if !path.IsAbs(d.Path) || path.Clean(d.Path) != d.Path {
			return fmt.Errorf("debimage: dir path %q must be clean and absolute", d.Path)
		}
	}
	for p := range s.Symlinks {
		if !path.IsAbs(p) || path.Clean(p) != p || p == "/" {
			return fmt.Errorf("debimage: symlink path %q must be clean and absolute", p)
		}
	}
	for _, u := range s.Users {
		if u.Name == "" || strings.ContainsAny(u.Name, ":\n") || u.Name == "root" || u.Name == "nobody" {
			return fmt.Errorf("debimage: bad user name %q", u.Name)
		}
	}
	return nil
}

func hash(v any) string {
	j, _ := json.Marshal(v)
	h := sha256.Sum256(j)
	return hex.EncodeToString(h[:])[:16]
}

func sorted(in []string) []string {
	out := append([]string(nil), in...)
	sort.Strings(out)
	return out
}

// debsKey names the download cache of one package list.
func debsKey(s Spec) string {
	return hash(struct {
		Suite, Arch       string
		Packages, Exclude []string
	}{Suite, goarch(), sorted(s.Packages), sorted(s.Exclude)})
}

// Build returns the path of the image archive of s in the cache, building
// it (and downloading what it needs) on the first call.
func (b *Builder) Build(ctx context.Context, s Spec) (string, error) {
	if err := s.validate(); err != nil {
		return "", err
	}
	if err := Check(); err != nil {
		return "", err
	}
	cache := b.cacheDir()
	dir := filepath.Join(cache, debsKey(s))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	unlock, err := lockFile(filepath.Join(dir, ".lock"))
	if err != nil {
		return "", err
	}
	defer unlock()

	debs, err := b.debs(ctx, cache, dir, s)
	if err != nil {
		return "", fmt.Errorf("debimage %s: %w", s.Name, err)
	}
	lock, err := os.ReadFile(filepath.Join(dir, "packages.lock"))
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "image-"+hash(struct {
		V    string
		Lock string
		Spec Spec
	}{builderVersion, string(lock), s})+".tar")
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	b.logf("debimage: building %s from %d packages", s.Name, len(debs))
	if err := build(ctx, dir, debs, s, out); err != nil {
		return "", fmt.Errorf("debimage %s: %w", s.Name, err)
	}
	return out, nil
}

// debs returns the .deb files of s's package list, resolving and
// downloading them into dir unless a previous run did.
func (b *Builder) debs(ctx context.Context, cache, dir string, s Spec) ([]string, error) {
	lockPath := filepath.Join(dir, "packages.lock")
	if data, err := os.ReadFile(lockPath); err == nil {
		var files []string
		for _, f := range strings.Fields(string(data)) {
			p := filepath.Join(dir, "debs", f)
			if _, err := os.Stat(p); err != nil {
				files = nil
				break
			}
			files = append(files, p)
		}
		if len(files) > 0 {
			return files, nil
		}
	}
	a := apt{dir: filepath.Join(cache, "apt")}
	if err := os.MkdirAll(a.dir, 0o755); err != nil {
		return nil, err
	}
	unlock, err := lockFile(filepath.Join(a.dir, ".lock"))
	if err != nil {
		return nil, err
	}
	defer unlock()
	b.logf("debimage: resolving %s", strings.Join(s.Packages, " "))
	if err := a.update(ctx); err != nil {
		return nil, err
	}
	names, err := a.resolve(ctx, s.Packages, s.Exclude)
	if err != nil {
		return nil, err
	}
	debDir := filepath.Join(dir, "debs")
	tmp := debDir + ".tmp"
	os.RemoveAll(tmp)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return nil, err
	}
	b.logf("debimage: downloading %d packages", len(names))
	if _, err := a.run(ctx, tmp, "apt-get", append([]string{"-qq", "download"}, names...)...); err != nil {
		return nil, err
	}
	os.RemoveAll(debDir)
	if err := os.Rename(tmp, debDir); err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(debDir)
	if err != nil {
		return nil, err
	}
	var files, base []string
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".deb") {
			files = append(files, filepath.Join(debDir, e.Name()))
			base = append(base, e.Name())
		}
	}
	if len(files) != len(names) {
		return nil, fmt.Errorf("apt-get download gave %d files for %d packages", len(files), len(names))
	}
	if err := writeAtomic(lockPath, []byte(strings.Join(base, "\n")+"\n"), 0o644); err != nil {
		return nil, err
	}
	return files, nil
}

func writeAtomic(p string, data []byte, mode os.FileMode) error {
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}

// lockFile takes an exclusive flock, so that two test processes share one
// download.
func lockFile(p string) (func(), error) {
	f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() { syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
}
