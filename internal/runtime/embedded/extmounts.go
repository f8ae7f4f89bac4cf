package embedded

import (
	"errors"
	"fmt"
	"os"
	"path"
	"slices"
	"strings"
	"syscall"

	lib "github.com/checkpoint-restore/checkpointctl/lib"
	"github.com/checkpoint-restore/go-criu/v8/crit"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/mnt"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pidns"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"

	"github.com/ckpt-dev/ckpt/internal/runtime"
)

// maxCriuImage bounds one CRIU image ckpt decodes from an archive.
const maxCriuImage = 4 << 20

// podBinds are the mounts a restored container needs beyond its Pod's
// spec, because the checkpointed container had them bound from outside
// (containerd and Podman bind /dev/shm; Podman binds /run/.containerenv).
// ckpt makes their sources itself; nothing of the archive is bound.
type podBinds struct {
	Shm          bool // /dev/shm from a directory of the container's own
	ContainerEnv bool // /run/.containerenv, an empty file
	Cgroup       bool // /sys/fs/cgroup, as containerd's default spec mounts it
	// SharePID: the container ran in its pod's pid namespace (CRIU left it
	// external), so it is restored into the new sandbox's.
	SharePID bool
	// RootMode is the mode of the root directory, when recorded.
	RootMode os.FileMode
}

// archiveExternalMounts decodes the archive's mountpoints images and
// decides, for each mount CRIU left to the runtime (an external bind),
// whether a restored Pod provides it: the pod's files, the cgroup
// hierarchies, the masked paths and, added by podBinds, /dev/shm and
// /run/.containerenv. Any other external mount is refused by name: its
// source was a path on the node that wrote the archive.
func archiveExternalMounts(root *os.Root, termPath string) (podBinds, error) {
	var b podBinds
	dir, err := root.Open(lib.CheckpointDirectory)
	if err != nil {
		return b, err
	}
	names, err := dir.Readdirnames(-1)
	dir.Close()
	if err != nil {
		return b, err
	}
	slices.Sort(names)
	var rootMnt uint32
	hasRoot := false
	for _, n := range names {
		if strings.HasPrefix(n, "pidns-") && strings.HasSuffix(n, ".img") {
			ns, err := decodeIn(root, path.Join(lib.CheckpointDirectory, n), &pidns.PidnsEntry{})
			if err != nil {
				return b, fmt.Errorf("%v: %w", err, runtime.ErrInvalid)
			}
			for _, e := range ns {
				if e.GetExtKey() != "" {
					b.SharePID = true
				}
			}
		}
		if !strings.HasPrefix(n, "mountpoints-") || !strings.HasSuffix(n, ".img") {
			continue
		}
		entries, err := decodeIn(root, path.Join(lib.CheckpointDirectory, n), &mnt.MntEntry{})
		if err != nil {
			return b, fmt.Errorf("%v: %w", err, runtime.ErrInvalid)
		}
		for _, m := range entries {
			if path.Clean(m.GetMountpoint()) == "/" {
				rootMnt, hasRoot = m.GetMntId(), true
			}
			key := m.GetExtKey()
			if key == "" && !m.GetExtMount() {
				continue
			}
			if err := b.allow(path.Clean(m.GetMountpoint()), key, termPath); err != nil {
				return b, fmt.Errorf("%s: %w", n, err)
			}
		}
	}
	if hasRoot {
		mode, err := rootDirMode(root, rootMnt)
		if err != nil {
			return b, fmt.Errorf("%v: %w", err, runtime.ErrInvalid)
		}
		b.RootMode = mode
	}
	return b, nil
}

// rootDirMode is the mode CRIU recorded for the root directory of the
// container's root mount (CRIU checks it on restore: Podman's is 0555),
// limited to r-x bits and the owner's w; 0 when none is recorded.
func rootDirMode(root *os.Root, rootMnt uint32) (os.FileMode, error) {
	files, err := decodeIn(root, path.Join(lib.CheckpointDirectory, "files.img"), &fdinfo.FileEntry{})
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var mode uint32
	for _, f := range files {
		r := f.GetReg()
		if r == nil || r.GetName() != "/" || int64(r.GetMntId()) != int64(rootMnt) {
			continue
		}
		if r.GetMode()&syscall.S_IFMT != syscall.S_IFDIR {
			return 0, fmt.Errorf("files.img: the root directory has mode %o", r.GetMode())
		}
		m := r.GetMode() & 0o7777
		if mode != 0 && m != mode {
			return 0, fmt.Errorf("files.img: the root directory has modes %o and %o", mode, m)
		}
		mode = m
	}
	if mode&^0o755 != 0 {
		return 0, fmt.Errorf("files.img: the root directory has mode %o (only bits of 0755 are restored)", mode)
	}
	return os.FileMode(mode), nil
}

// allow records or refuses one external mount at mp with CRIU key key.
func (b *podBinds) allow(mp, key, termPath string) error {
	switch {
	case key == "/dev/null" && (slices.Contains(defaultMaskedPaths, mp) || slices.Contains(defaultReadonlyPaths, mp)):
		// A masked path: runc maps /dev/null whenever the spec masks paths.
		return nil
	case key != mp:
		return fmt.Errorf("the archive's container had %s bound from outside (key %q), which a restored pod does not provide: %w", mp, key, runtime.ErrInvalid)
	case mp == "/etc/hosts", mp == "/etc/hostname", mp == "/etc/resolv.conf", mp == termPath, mp == corev1.TerminationMessagePathDefault:
		// The pod's files: every container gets them.
		return nil
	case mp == "/dev/shm":
		b.Shm = true
		return nil
	case mp == "/run/.containerenv":
		b.ContainerEnv = true
		return nil
	case path.Dir(mp) == "/sys/fs/cgroup":
		// A cgroup v1 hierarchy: runc binds each one from the spec's
		// cgroup mount.
		b.Cgroup = true
		return nil
	}
	return fmt.Errorf("the archive's container had %s bound from outside, which a restored pod does not provide (only the pod's files, /dev/shm, /run/.containerenv and the cgroup hierarchies are): %w", mp, runtime.ErrInvalid)
}

// decodeIn decodes one CRIU image of the archive, bounded, with a decoder
// panic turned into an error.
func decodeIn[T proto.Message](root *os.Root, name string, entry T) (out []T, err error) {
	f, err := root.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() || st.Size() > maxCriuImage {
		return nil, fmt.Errorf("%s: not a regular file of at most %d bytes", name, maxCriuImage)
	}
	defer func() {
		if r := recover(); r != nil {
			out, err = nil, fmt.Errorf("decode %s: %v", name, r)
		}
	}()
	img, err := crit.New(f, nil, "", false, false).Decode(entry)
	if err != nil {
		return nil, fmt.Errorf("decode %s: %w", name, err)
	}
	for _, e := range img.Entries {
		if m, ok := e.Message.(T); ok {
			out = append(out, m)
		}
	}
	return out, nil
}

// prepare makes the sources of the binds in the container's directory dir
// and sets them in the spec's input.
func (b podBinds) prepare(dir string, in *specInput) error {
	if b.Shm {
		shm := dir + "/shm"
		if err := os.Mkdir(shm, 0o700); err != nil && !os.IsExist(err) {
			return err
		}
		// Any user of the container may use /dev/shm, as on a tmpfs.
		if err := os.Chmod(shm, 0o1777); err != nil {
			return err
		}
		in.Shm = shm
	}
	if b.ContainerEnv {
		env := dir + "/containerenv"
		if err := os.WriteFile(env, nil, 0o644); err != nil {
			return err
		}
		in.ContainerEnv = env
	}
	in.Cgroup = b.Cgroup
	return nil
}
