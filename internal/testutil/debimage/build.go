package debimage

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"sort"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func goarch() string { return goruntime.GOARCH }

// build unpacks debs into a rootfs under dir, adds s's accounts, dirs and
// files, and writes the image to out.
func build(ctx context.Context, dir string, debs []string, s Spec, out string) error {
	tag, err := name.NewTag(s.Name)
	if err != nil {
		return fmt.Errorf("name %q: %w", s.Name, err)
	}
	work, err := os.MkdirTemp(dir, "build-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	rootfs := filepath.Join(work, "rootfs")
	if err := os.Mkdir(rootfs, 0o755); err != nil {
		return err
	}
	for _, d := range debs {
		if out, err := exec.CommandContext(ctx, "dpkg-deb", "-x", d, rootfs).CombinedOutput(); err != nil {
			return fmt.Errorf("dpkg-deb -x %s: %w: %s", filepath.Base(d), err, out)
		}
	}
	if err := customize(rootfs, s); err != nil {
		return err
	}
	// The loader's cache, as the libc-bin trigger would write it: libraries
	// in directories that ld.so.conf.d names are found.
	if _, err := os.Stat(filepath.Join(rootfs, "etc/ld.so.conf")); err == nil {
		if ldconfig, err := exec.LookPath("ldconfig"); err == nil {
			if out, err := exec.CommandContext(ctx, ldconfig, "-r", rootfs).CombinedOutput(); err != nil {
				return fmt.Errorf("ldconfig -r: %w: %s", err, out)
			}
		}
	}
	layerPath := filepath.Join(work, "layer.tar")
	if err := writeLayer(rootfs, layerPath); err != nil {
		return err
	}
	layer, err := tarball.LayerFromFile(layerPath, tarball.WithCompressionLevel(1))
	if err != nil {
		return err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", goarch()
	cf.Created = v1.Time{Time: time.Unix(0, 0).UTC()}
	cf.Config.Entrypoint = s.Entrypoint
	cf.Config.Cmd = s.Cmd
	cf.Config.Env = append([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, s.Env...)
	cf.Config.WorkingDir = s.WorkingDir
	if cf.Config.WorkingDir == "" {
		cf.Config.WorkingDir = "/"
	}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return err
	}
	tmp := out + ".tmp"
	if err := tarball.WriteToFile(tmp, tag, img); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, out)
}

// customize prunes the rootfs and adds what maintainer scripts would have:
// accounts, /tmp, then s's dirs and files.
func customize(rootfs string, s Spec) error {
	prune := s.Prune
	if prune == nil {
		prune = DefaultPrune
	}
	for _, p := range prune {
		if err := os.RemoveAll(filepath.Join(rootfs, p)); err != nil {
			return err
		}
	}
	passwd := "root:x:0:0:root:/root:/bin/sh\n"
	group := "root:x:0:\n"
	for _, u := range s.Users {
		home := u.Home
		if home == "" {
			home = "/nonexistent"
		}
		passwd += fmt.Sprintf("%s:x:%d:%d:%s:%s:/usr/sbin/nologin\n", u.Name, u.UID, u.GID, u.Name, home)
		group += fmt.Sprintf("%s:x:%d:\n", u.Name, u.GID)
	}
	passwd += "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
	group += "nogroup:x:65534:\n"
	dirs := append([]Dir{{Path: "/etc", Mode: 0o755}, {Path: "/tmp", Mode: 0o1777}, {Path: "/root", Mode: 0o700}}, s.Dirs...)
	for _, d := range dirs {
		p := filepath.Join(rootfs, d.Path)
		if err := os.MkdirAll(p, 0o755); err != nil {
			return err
		}
		if err := syscall.Chmod(p, d.Mode); err != nil {
			return err
		}
		if err := os.Lchown(p, d.UID, d.GID); err != nil {
			return err
		}
	}
	files := append([]File{
		{Path: "/etc/passwd", Mode: 0o644, Data: []byte(passwd)},
		{Path: "/etc/group", Mode: 0o644, Data: []byte(group)},
	}, s.Files...)
	for _, f := range files {
		p := filepath.Join(rootfs, f.Path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		os.Remove(p) // a package's symlink must not redirect the write
		if err := os.WriteFile(p, f.Data, 0o600); err != nil {
			return err
		}
		if err := syscall.Chmod(p, f.Mode); err != nil {
			return err
		}
	}
	for p, target := range s.Symlinks {
		p = filepath.Join(rootfs, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		os.Remove(p)
		if err := os.Symlink(target, p); err != nil {
			return err
		}
	}
	return nil
}

// writeLayer writes rootfs as one reproducible layer: sorted entries, times
// at the epoch, owners and modes as unpacked, hard links kept.
func writeLayer(rootfs, out string) error {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	var paths []string
	err = filepath.WalkDir(rootfs, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != rootfs {
			paths = append(paths, p)
		}
		return nil
	})
	if err != nil {
		return err
	}
	sort.Strings(paths)
	type inode struct{ dev, ino uint64 }
	links := map[inode]string{}
	epoch := time.Unix(0, 0)
	for _, p := range paths {
		rel, _ := filepath.Rel(rootfs, p)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		hdr := &tar.Header{
			Name: rel, Mode: int64(st.Mode & 0o7777), Uid: int(st.Uid), Gid: int(st.Gid),
			ModTime: epoch, Format: tar.FormatPAX,
		}
		switch {
		case fi.IsDir():
			hdr.Typeflag, hdr.Name = tar.TypeDir, rel+"/"
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, target
		case fi.Mode().IsRegular():
			key := inode{uint64(st.Dev), st.Ino}
			if first, ok := links[key]; ok && st.Nlink > 1 {
				hdr.Typeflag, hdr.Linkname = tar.TypeLink, first
				break
			}
			links[key] = rel
			hdr.Typeflag, hdr.Size = tar.TypeReg, fi.Size()
		default:
			continue // devices, fifos and sockets have no place in an image
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if hdr.Typeflag == tar.TypeReg {
			if err := copyFile(tw, p); err != nil {
				return err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return f.Close()
}

func copyFile(w io.Writer, p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(w, f)
	return err
}
