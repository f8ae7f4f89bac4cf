package inspect

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"

	criu_core "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	criufs "github.com/checkpoint-restore/go-criu/v8/crit/images/fs"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/mnt"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/regfile"

	"github.com/ckpt-dev/ckpt/internal/archive"
)

// ImageRules bound what the CRIU images of a restore may ask for.
// Zero sizes take defaults.
type ImageRules struct {
	// Root is the container's root filesystem, prepared for the restore.
	Root string
	// MaxImageBytes bounds each decoded image (default 64 MiB);
	// MaxDataBytes each raw data image: pages-*.img, tmpfs-*, ghost files
	// (default 64 GiB); MaxTotalBytes all of them (default 256 GiB).
	MaxImageBytes, MaxDataBytes, MaxTotalBytes int64
	// MaxFiles bounds the number of images (default 100000).
	MaxFiles int
	// Capabilities, if not nil, are the only ones a restored task may hold
	// in any of its sets (the restored spec's bounding set): CRIU restores
	// each task's capabilities from its image, not from the spec.
	Capabilities []string
}

func (r ImageRules) withDefaults() ImageRules {
	if r.MaxImageBytes <= 0 {
		r.MaxImageBytes = maxImageBytes
	}
	if r.MaxDataBytes <= 0 {
		r.MaxDataBytes = 64 << 30
	}
	if r.MaxTotalBytes <= 0 {
		r.MaxTotalBytes = 256 << 30
	}
	if r.MaxFiles <= 0 {
		r.MaxFiles = 100000
	}
	return r
}

// ErrImageRefused: the CRIU images ask a restore for something it will
// not do. It wraps archive.ErrRefusedImage, so restore answers 400.
var ErrImageRefused = fmt.Errorf("CRIU image refused: %w", archive.ErrRefusedImage)

// safeFS are the file systems CRIU may mount afresh in a restored
// container: per-namespace pseudo file systems. Anything else (a block
// device's ext4 by name, devtmpfs, debugfs, binfmt_misc...) would reach the
// host; ckpt's own mounts are external and bound by runc from the spec.
var safeFS = map[mnt.Fstype]bool{
	mnt.Fstype_PROC: true, mnt.Fstype_SYSFS: true, mnt.Fstype_TMPFS: true, mnt.Fstype_DEVPTS: true,
	mnt.Fstype_MQUEUE: true, mnt.Fstype_CGROUP: true, mnt.Fstype_CGROUP2: true,
}

// ValidateCRIUImages checks, before CRIU runs as root, what can be checked
// cheaply in the image directory dir:
//   - only regular files, at most MaxFiles, each within its size bound;
//   - every mount CRIU would make is external (bound by the runtime from
//     the spec, ext_key) or a per-namespace pseudo file system, at a
//     mountpoint without "..";
//   - every regular file CRIU would open (files.img, reg-files.img, the
//     cwd and root of fs-*.img) is named by an absolute path without "..",
//     is not "external", lies on a mount of the image, and, on the root
//     mount, resolves inside Root without leaving it through a symlink;
//   - no task's capabilities exceed Capabilities.
//
// It cannot check the rest: memory contents, registers, signal state,
// seccomp filters, credentials other than capabilities, sockets and the
// contents of tmpfs archives are CRIU's to restore as they are. That is
// why restore trusts an archive only when a trusted key signed it.
func ValidateCRIUImages(dir string, r ImageRules) error {
	r = r.withDefaults()
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("CRIU images: %w", err)
	}
	defer root.Close()
	d := &imageDir{root: root}
	names, err := listImages(root, r)
	if err != nil {
		return err
	}
	mounts, rootMnt, err := checkMounts(d, names)
	if err != nil {
		return err
	}
	files, err := regFiles(d, names)
	if err != nil {
		return err
	}
	var rootfs *os.Root
	if r.Root != "" {
		if rootfs, err = os.OpenRoot(r.Root); err != nil {
			return fmt.Errorf("CRIU images: container root: %w", err)
		}
		defer rootfs.Close()
	}
	ids := make([]uint32, 0, len(files))
	for id := range files {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, id := range ids {
		if err := checkRegFile(files[id], mounts, rootMnt, rootfs); err != nil {
			return err
		}
	}
	if err := checkFsImages(d, names, files); err != nil {
		return err
	}
	if r.Capabilities != nil {
		if err := checkCaps(d, names, r.Capabilities); err != nil {
			return err
		}
	}
	return nil
}

// listImages returns the image names, sorted, enforcing types and sizes.
func listImages(root *os.Root, r ImageRules) ([]string, error) {
	dir, err := root.Open(".")
	if err != nil {
		return nil, fmt.Errorf("CRIU images: %w", err)
	}
	defer dir.Close()
	entries, err := dir.ReadDir(r.MaxFiles + 1)
	if err != nil && len(entries) == 0 {
		return nil, fmt.Errorf("CRIU images: %w", err)
	}
	if len(entries) > r.MaxFiles {
		return nil, fmt.Errorf("%w: more than %d images", ErrImageRefused, r.MaxFiles)
	}
	var total int64
	var names []string
	for _, e := range entries {
		info, err := e.Info()
		if err != nil {
			return nil, fmt.Errorf("CRIU images: %w", err)
		}
		if !info.Mode().IsRegular() {
			return nil, fmt.Errorf("%w: %s is not a regular file (%s)", ErrImageRefused, e.Name(), info.Mode().Type())
		}
		limit := r.MaxImageBytes
		if isDataImage(e.Name()) {
			limit = r.MaxDataBytes
		}
		if info.Size() > limit {
			return nil, fmt.Errorf("%w: %s holds %d bytes, limit %d", ErrImageRefused, e.Name(), info.Size(), limit)
		}
		total += info.Size()
		if total > r.MaxTotalBytes {
			return nil, fmt.Errorf("%w: images hold more than %d bytes", ErrImageRefused, r.MaxTotalBytes)
		}
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names, nil
}

// isDataImage: images that are mostly raw data, not records.
func isDataImage(name string) bool {
	for _, p := range []string{"pages-", "tmpfs-", "ghost-file-", "ipcns-shm-", "memfd-", "pipes-data", "fifo-data", "sk-queues"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

func withPrefix(names []string, prefix string) []string {
	var out []string
	for _, n := range names {
		if strings.HasPrefix(n, prefix) && strings.HasSuffix(n, ".img") {
			out = append(out, n)
		}
	}
	return out
}

// cleanAbs accepts an absolute path without "." or ".." components or NUL.
func cleanAbs(p string) bool {
	if !strings.HasPrefix(p, "/") || strings.IndexByte(p, 0) >= 0 {
		return false
	}
	for _, c := range strings.Split(p[1:], "/") {
		if c == ".." || c == "." {
			return false
		}
	}
	return true
}

// checkMounts returns the mounts by ID and the root mount's ID (0: none).
func checkMounts(d *imageDir, names []string) (map[uint32]*mnt.MntEntry, uint32, error) {
	mounts := map[uint32]*mnt.MntEntry{}
	var rootMnt uint32
	for _, name := range withPrefix(names, "mountpoints-") {
		entries, err := all(d, name, "MNTS", &mnt.MntEntry{})
		if err != nil {
			return nil, 0, fmt.Errorf("%w: %s: %v", ErrImageRefused, name, err)
		}
		for _, m := range entries {
			mp := m.GetMountpoint()
			if !cleanAbs(mp) {
				return nil, 0, fmt.Errorf("%w: %s: mountpoint %q is not a clean absolute path", ErrImageRefused, name, mp)
			}
			if !cleanAbs(m.GetRoot()) {
				return nil, 0, fmt.Errorf("%w: %s: mount at %s has root %q, not a clean absolute path", ErrImageRefused, name, mp, m.GetRoot())
			}
			switch {
			case path.Clean(mp) == "/":
				// The container's root: CRIU restores into the root the
				// runtime prepared; it does not mount it.
				rootMnt = m.GetMntId()
			case m.GetExtKey() != "" || m.GetExtMount():
				// External: runc binds it from the spec's mounts; CRIU
				// fails on a key runc does not map.
			case !safeFS[mnt.Fstype(m.GetFstype())]:
				fsName := mnt.Fstype(m.GetFstype()).String()
				if m.GetFsname() != "" {
					fsName += " " + m.GetFsname()
				}
				return nil, 0, fmt.Errorf("%w: %s: mount of %s (source %q) at %s: only external mounts and proc, sysfs, tmpfs, devpts, mqueue and cgroup may be mounted on restore",
					ErrImageRefused, name, fsName, m.GetSource(), mp)
			}
			mounts[m.GetMntId()] = m
		}
	}
	return mounts, rootMnt, nil
}

// regFiles collects the regular files of files.img (CRIU >= 3.15) and of
// reg-files.img (older images).
func regFiles(d *imageDir, names []string) (map[uint32]*regfile.RegFileEntry, error) {
	out := map[uint32]*regfile.RegFileEntry{}
	has := map[string]bool{}
	for _, n := range names {
		has[n] = true
	}
	if has["files.img"] {
		entries, err := all(d, "files.img", "FILES", &fdinfo.FileEntry{})
		if err != nil {
			return nil, fmt.Errorf("%w: files.img: %v", ErrImageRefused, err)
		}
		for _, e := range entries {
			if reg := e.GetReg(); reg != nil {
				out[e.GetId()] = reg
			}
		}
	}
	if has["reg-files.img"] {
		entries, err := all(d, "reg-files.img", "REG_FILES", &regfile.RegFileEntry{})
		if err != nil {
			return nil, fmt.Errorf("%w: reg-files.img: %v", ErrImageRefused, err)
		}
		for _, reg := range entries {
			out[reg.GetId()] = reg
		}
	}
	return out, nil
}

// checkRegFile applies the path rules to one file CRIU would open.
func checkRegFile(reg *regfile.RegFileEntry, mounts map[uint32]*mnt.MntEntry, rootMnt uint32, rootfs *os.Root) error {
	name := reg.GetName()
	// Unlinked files carry CRIU's " (deleted)" suffix; their content comes
	// from a ghost image or a link remap.
	clean := strings.TrimSuffix(name, " (deleted)")
	if !cleanAbs(clean) {
		return fmt.Errorf("%w: file %q (id %d) is not a clean absolute path", ErrImageRefused, name, reg.GetId())
	}
	if reg.GetExt() {
		return fmt.Errorf("%w: file %q (id %d) is external: it would be taken from the host", ErrImageRefused, name, reg.GetId())
	}
	id := reg.GetMntId()
	if id >= 0 && len(mounts) > 0 {
		if _, ok := mounts[uint32(id)]; !ok {
			return fmt.Errorf("%w: file %q (id %d) is on mount %d, which the images do not hold", ErrImageRefused, name, reg.GetId(), id)
		}
	}
	if rootfs == nil || (id >= 0 && uint32(id) != rootMnt) {
		return nil // on another mount: the path is checked, not resolved
	}
	rel := strings.TrimPrefix(clean, "/")
	if rel == "" {
		rel = "."
	}
	// os.Root follows symlinks only while they stay inside the root.
	if _, err := rootfs.Stat(rel); err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, fs.ErrPermission) && !isNotDir(err) {
		return fmt.Errorf("%w: file %q (id %d) does not resolve inside the container's root: %v", ErrImageRefused, name, reg.GetId(), err)
	}
	return nil
}

func isNotDir(err error) bool {
	var pe *fs.PathError
	return errors.As(err, &pe) && strings.Contains(pe.Err.Error(), "not a directory")
}

// checkFsImages: a task's cwd and root must be regular files of the images.
func checkFsImages(d *imageDir, names []string, files map[uint32]*regfile.RegFileEntry) error {
	for _, name := range withPrefix(names, "fs-") {
		e, err := one(d, name, "FS", &criufs.FsEntry{})
		if err != nil {
			return fmt.Errorf("%w: %s: %v", ErrImageRefused, name, err)
		}
		for what, id := range map[string]uint32{"cwd": e.GetCwdId(), "root": e.GetRootId()} {
			if _, ok := files[id]; !ok {
				return fmt.Errorf("%w: %s: %s is file %d, which the images do not name", ErrImageRefused, name, what, id)
			}
		}
	}
	return nil
}

// checkCaps: no capability set of any task exceeds allowed.
func checkCaps(d *imageDir, names []string, allowed []string) error {
	mask, err := capMask(allowed)
	if err != nil {
		return err
	}
	for _, name := range withPrefix(names, "core-") {
		c, err := one(d, name, "CORE", &criu_core.CoreEntry{})
		if err != nil {
			return fmt.Errorf("%w: %s: %v", ErrImageRefused, name, err)
		}
		cr := c.GetThreadCore().GetCreds()
		if cr == nil {
			continue // CRIU then keeps the runtime's capabilities
		}
		for set, words := range map[string][]uint32{"bounding": cr.GetCapBnd(), "permitted": cr.GetCapPrm(),
			"effective": cr.GetCapEff(), "inheritable": cr.GetCapInh(), "ambient": cr.GetCapAmb()} {
			var extra []string
			for i, w := range words {
				for bit := 0; bit < 32; bit++ {
					n := i*32 + bit
					if w&(1<<bit) == 0 || (n < 64 && mask&(1<<n) != 0) {
						continue
					}
					extra = append(extra, capName(n))
				}
			}
			if len(extra) > 0 {
				return fmt.Errorf("%w: %s: the %s capabilities hold %s, which the container may not have", ErrImageRefused, name, set, strings.Join(extra, ","))
			}
		}
	}
	return nil
}

// capNames are Linux capabilities by number (capability.h).
var capNames = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_SETGID",
	"CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN",
	"CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
	"CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE",
	"CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL",
	"CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND",
	"CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
}

func capName(n int) string {
	if n < len(capNames) {
		return capNames[n]
	}
	return fmt.Sprintf("CAP_%d", n)
}

func capMask(names []string) (uint64, error) {
	var mask uint64
	for _, want := range names {
		found := false
		for i, n := range capNames {
			if strings.EqualFold(n, want) || strings.EqualFold(n, "CAP_"+want) {
				mask |= 1 << i
				found = true
			}
		}
		if !found {
			return 0, fmt.Errorf("unknown capability %q", want)
		}
	}
	return mask, nil
}
