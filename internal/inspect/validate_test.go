package inspect

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	criu_core "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/mnt"
	"google.golang.org/protobuf/proto"

	"github.com/ckpt-dev/ckpt/internal/archive"
)

// dockerCaps is the default set of containerd, Docker and Podman: what the
// fixtures' tasks hold.
var dockerCaps = []string{"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_SETGID",
	"CAP_SETUID", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW", "CAP_SYS_CHROOT", "CAP_MKNOD",
	"CAP_AUDIT_WRITE", "CAP_SETFCAP"}

// imagesOf extracts a fixture and returns its CRIU image directory.
func imagesOf(t testing.TB, fixture string) string {
	t.Helper()
	f, err := os.Open(fixture)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dir := filepath.Join(t.TempDir(), "x")
	if _, err := archive.Extract(f, dir, archive.Limits{}, nil); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, checkpointDir)
}

// rewrite decodes image name of dir, lets fn change its entries, and
// writes it back.
func rewrite[T proto.Message](t *testing.T, dir, name, magicName string, entry T, fn func([]T) []T) {
	t.Helper()
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	entries, err := all(&imageDir{root: root}, name, magicName, entry)
	if err != nil {
		t.Fatal(err)
	}
	var msgs []proto.Message
	for _, e := range fn(entries) {
		msgs = append(msgs, e)
	}
	if err := os.WriteFile(filepath.Join(dir, name), criuImage(t, magicName, msgs...), 0o600); err != nil {
		t.Fatal(err)
	}
}

func mounts(fn func([]*mnt.MntEntry) []*mnt.MntEntry) func(*testing.T, string) {
	return func(t *testing.T, dir string) {
		rewrite(t, dir, "mountpoints-13.img", "MNTS", &mnt.MntEntry{}, fn)
	}
}

func addMount(m *mnt.MntEntry) func(*testing.T, string) {
	return mounts(func(ms []*mnt.MntEntry) []*mnt.MntEntry { return append(ms, m) })
}

func regs(fn func(*fdinfo.FileEntry)) func(*testing.T, string) {
	return func(t *testing.T, dir string) {
		rewrite(t, dir, "files.img", "FILES", &fdinfo.FileEntry{}, func(fs []*fdinfo.FileEntry) []*fdinfo.FileEntry {
			for _, f := range fs {
				if f.GetReg() != nil && f.GetReg().GetName() == "/bin/counter.sh" {
					fn(f)
				}
			}
			return fs
		})
	}
}

func TestValidateCRIUImages(t *testing.T) {
	// The container's root as prepared for restore: a symlink in it points
	// at the host's root.
	rootfs := t.TempDir()
	os.MkdirAll(filepath.Join(rootfs, "bin"), 0o755)
	os.WriteFile(filepath.Join(rootfs, "bin", "counter.sh"), []byte("#!/bin/sh\n"), 0o755)
	os.Symlink("/", filepath.Join(rootfs, "hostroot"))
	os.Symlink("../../../../../../..", filepath.Join(rootfs, "up"))
	rules := ImageRules{Root: rootfs, Capabilities: dockerCaps}

	tests := []struct {
		name   string
		change func(t *testing.T, dir string)
		rules  ImageRules
		want   string // "" = accepted
	}{
		{"real images", nil, rules, ""},
		{"real images, no capability rule", nil, ImageRules{Root: rootfs}, ""},
		{"host disk mounted by name", addMount(&mnt.MntEntry{Fstype: proto.Uint32(uint32(mnt.Fstype_AUTO)), MntId: proto.Uint32(900), RootDev: proto.Uint32(1), ParentMntId: proto.Uint32(125), Flags: proto.Uint32(0),
			Root: proto.String("/"), Mountpoint: proto.String("/host"), Source: proto.String("/dev/vda"), Options: proto.String(""), Fsname: proto.String("ext4")}), rules, "mount of AUTO ext4"},
		{"devtmpfs", addMount(&mnt.MntEntry{Fstype: proto.Uint32(uint32(mnt.Fstype_DEVTMPFS)), MntId: proto.Uint32(901), RootDev: proto.Uint32(1), ParentMntId: proto.Uint32(125), Flags: proto.Uint32(0),
			Root: proto.String("/"), Mountpoint: proto.String("/hostdev"), Source: proto.String("devtmpfs"), Options: proto.String("")}), rules, "mount of DEVTMPFS"},
		{"mountpoint with dotdot", mounts(func(ms []*mnt.MntEntry) []*mnt.MntEntry {
			ms[0].Mountpoint = proto.String("/dev/../../etc")
			return ms
		}), rules, "not a clean absolute path"},
		{"file path with dotdot", regs(func(f *fdinfo.FileEntry) { f.Reg.Name = proto.String("/bin/../../../etc/shadow") }), rules, "not a clean absolute path"},
		{"relative file path", regs(func(f *fdinfo.FileEntry) { f.Reg.Name = proto.String("etc/shadow") }), rules, "not a clean absolute path"},
		{"external file", regs(func(f *fdinfo.FileEntry) { f.Reg.Ext = proto.Bool(true) }), rules, "is external"},
		{"file through an absolute symlink", regs(func(f *fdinfo.FileEntry) { f.Reg.Name = proto.String("/hostroot/etc/shadow") }), rules, "does not resolve inside the container's root"},
		{"file through a relative symlink", regs(func(f *fdinfo.FileEntry) { f.Reg.Name = proto.String("/up/etc/shadow") }), rules, "does not resolve inside the container's root"},
		{"file on a mount the images lack", regs(func(f *fdinfo.FileEntry) { f.Reg.MntId = proto.Int32(4242) }), rules, "which the images do not hold"},
		{"deleted file", regs(func(f *fdinfo.FileEntry) { f.Reg.Name = proto.String("/tmp/gone (deleted)") }), rules, ""},
		{"all capabilities", func(t *testing.T, dir string) {
			cores, _ := filepath.Glob(filepath.Join(dir, "core-*.img"))
			rewrite(t, dir, filepath.Base(cores[0]), "CORE", &criu_core.CoreEntry{}, func(cs []*criu_core.CoreEntry) []*criu_core.CoreEntry {
				cs[0].ThreadCore.Creds.CapEff = []uint32{0xffffffff, 0x1ff}
				return cs
			})
		}, rules, "effective capabilities hold CAP_DAC_READ_SEARCH,CAP_LINUX_IMMUTABLE"},
		{"capability the spec dropped", nil, ImageRules{Root: rootfs, Capabilities: dockerCaps[1:]}, "CAP_CHOWN, which the container may not have"},
		{"image too large", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, "cgroup.img"), make([]byte, 2<<20), 0o600)
		}, ImageRules{Root: rootfs, MaxImageBytes: 1 << 20}, "cgroup.img holds 2097152 bytes, limit 1048576"},
		{"pages too large", nil, ImageRules{Root: rootfs, MaxDataBytes: 4096}, "pages-1.img holds"},
		{"too many images", nil, ImageRules{Root: rootfs, MaxFiles: 3}, "more than 3 images"},
		{"symlink among the images", func(t *testing.T, dir string) {
			os.Symlink("/etc/shadow", filepath.Join(dir, "evil.img"))
		}, rules, "evil.img is not a regular file"},
		{"corrupt mountpoints", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, "mountpoints-13.img"), []byte{1, 2, 3, 4, 5, 6, 7, 8, 200, 0, 0, 0}, 0o600)
		}, rules, "mountpoints-13.img"},
	}
	for _, fixture := range []string{containerdFixture, podmanFixture} {
		for _, tc := range tests {
			t.Run(filepath.Base(fixture)+"/"+tc.name, func(t *testing.T) {
				dir := imagesOf(t, fixture)
				if tc.change != nil {
					tc.change(t, dir)
				}
				err := ValidateCRIUImages(dir, tc.rules)
				if tc.want == "" {
					if err != nil {
						t.Fatalf("refused: %v", err)
					}
					return
				}
				if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, archive.ErrRefusedImage) {
					t.Fatalf("err = %v, want ErrRefusedImage with %q", err, tc.want)
				}
			})
		}
	}
}

// FuzzValidateCRIUImages feeds arbitrary bytes as the images the checks
// decode: an error, never a panic.
func FuzzValidateCRIUImages(f *testing.F) {
	base := imagesOf(f, containerdFixture)
	for _, n := range []string{"files.img", "mountpoints-13.img", "fs-12.img", "core-12.img"} {
		data, _ := os.ReadFile(filepath.Join(base, n))
		f.Add(n, data)
	}
	f.Fuzz(func(t *testing.T, name string, data []byte) {
		switch name {
		case "files.img", "mountpoints-13.img", "fs-12.img", "core-12.img":
		default:
			return
		}
		dir := t.TempDir()
		entries, _ := os.ReadDir(base)
		for _, e := range entries {
			b, _ := os.ReadFile(filepath.Join(base, e.Name()))
			os.WriteFile(filepath.Join(dir, e.Name()), b, 0o600)
		}
		os.WriteFile(filepath.Join(dir, name), data, 0o600)
		_ = ValidateCRIUImages(dir, ImageRules{Root: t.TempDir(), Capabilities: dockerCaps})
	})
}
