package archive

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestRootfsDiffRoundTrip builds an upper dir, writes the diff, applies it
// onto a "lower" rootfs and removes the deleted files.
func TestRootfsDiffRoundTrip(t *testing.T) {
	upper := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(upper, "etc", "app"), 0o755))
	must(os.WriteFile(filepath.Join(upper, "etc", "app", "conf"), []byte("v=2\n"), 0o640))
	must(os.Mkdir(filepath.Join(upper, "tmp"), 0o755))
	must(os.Chmod(filepath.Join(upper, "tmp"), 0o777|os.ModeSticky))
	must(os.WriteFile(filepath.Join(upper, "tmp", "counter"), []byte("42"), 0o644))
	must(os.Link(filepath.Join(upper, "tmp", "counter"), filepath.Join(upper, "tmp", "counter.hard")))
	must(os.Symlink("app/conf", filepath.Join(upper, "etc", "conf.rel")))
	must(os.Symlink("/etc/app/conf", filepath.Join(upper, "etc", "conf.abs")))
	must(os.WriteFile(filepath.Join(upper, "etc", ".wh.motd"), nil, 0o600))
	must(unix.Mkfifo(filepath.Join(upper, "tmp", "fifo"), 0o600))
	wantDeleted := []string{"/etc/motd"}
	if isRoot() {
		// Kernel whiteout (char 0/0) and an opaque dir, as overlayfs makes them.
		must(unix.Mknod(filepath.Join(upper, "etc", "issue"), unix.S_IFCHR|0o600, 0))
		must(os.Mkdir(filepath.Join(upper, "var"), 0o755))
		must(unix.Setxattr(filepath.Join(upper, "var"), "trusted.overlay.opaque", []byte("y"), 0))
		must(os.WriteFile(filepath.Join(upper, "var", "new"), []byte("n"), 0o644))
		must(os.Chown(filepath.Join(upper, "etc", "app", "conf"), 1000, 1001))
		wantDeleted = []string{"/etc/issue", "/etc/motd"}
	}

	var diff bytes.Buffer
	deleted, err := WriteRootfsDiff(&diff, upper)
	must(err)
	slices.Sort(deleted)
	if !slices.Equal(deleted, wantDeleted) {
		t.Errorf("deleted = %v, want %v", deleted, wantDeleted)
	}
	var names []string
	must(Walk(bytes.NewReader(diff.Bytes()), Limits{}, func(hdr *tar.Header, _ io.Reader) error {
		names = append(names, hdr.Name)
		return nil
	}))
	for _, n := range names {
		if strings.Contains(n, ".wh.") || strings.HasSuffix(n, "fifo") || n == "etc/issue" {
			t.Errorf("diff holds %q", n)
		}
	}
	// Raw names are relative, like CRI-O's (no leading "/" or "./").
	tr := tar.NewReader(bytes.NewReader(diff.Bytes()))
	for {
		hdr, err := tr.Next()
		if err != nil {
			break
		}
		if strings.HasPrefix(hdr.Name, "/") || strings.HasPrefix(hdr.Name, "./") {
			t.Errorf("raw name %q", hdr.Name)
		}
	}

	// The lower layer: what the image had.
	rootfs := t.TempDir()
	must(os.MkdirAll(filepath.Join(rootfs, "etc"), 0o755))
	must(os.WriteFile(filepath.Join(rootfs, "etc", "motd"), []byte("hi"), 0o644))
	must(os.WriteFile(filepath.Join(rootfs, "etc", "issue"), []byte("deb"), 0o644))
	must(os.WriteFile(filepath.Join(rootfs, "etc", "conf.rel"), []byte("old file in the way"), 0o644))

	must(ApplyRootfsDiff(rootfs, bytes.NewReader(diff.Bytes()), Limits{}))
	must(RemoveDeleted(rootfs, MarshalDeletedFiles(deleted)))

	read := func(p string) string {
		b, err := os.ReadFile(filepath.Join(rootfs, p))
		if err != nil {
			t.Errorf("%s: %v", p, err)
		}
		return string(b)
	}
	if read("etc/app/conf") != "v=2\n" || read("etc/conf.rel") != "v=2\n" || read("tmp/counter.hard") != "42" {
		t.Error("content differs after apply")
	}
	if target, _ := os.Readlink(filepath.Join(rootfs, "etc", "conf.abs")); target != "/etc/app/conf" {
		t.Errorf("absolute symlink target = %q", target)
	}
	var a, b syscall.Stat_t
	must(syscall.Stat(filepath.Join(rootfs, "tmp", "counter"), &a))
	must(syscall.Stat(filepath.Join(rootfs, "tmp", "counter.hard"), &b))
	if a.Ino != b.Ino {
		t.Error("hard link not kept")
	}
	fi, err := os.Stat(filepath.Join(rootfs, "tmp"))
	must(err)
	if fi.Mode()&os.ModeSticky == 0 || fi.Mode().Perm() != 0o777 {
		t.Errorf("tmp mode = %v", fi.Mode())
	}
	fi, err = os.Stat(filepath.Join(rootfs, "etc", "app", "conf"))
	must(err)
	if fi.Mode().Perm() != 0o640 {
		t.Errorf("conf mode = %v", fi.Mode())
	}
	for _, gone := range wantDeleted {
		if _, err := os.Lstat(filepath.Join(rootfs, gone)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still there: %v", gone, err)
		}
	}
	if isRoot() {
		st := fi.Sys().(*syscall.Stat_t)
		if st.Uid != 1000 || st.Gid != 1001 {
			t.Errorf("owner = %d:%d, want 1000:1001", st.Uid, st.Gid)
		}
		if read("var/new") != "n" {
			t.Error("opaque dir content missing")
		}
	}
}

// TestApplyRootfsDiffMalicious is the hostile corpus for rootfs-diff.tar.
func TestApplyRootfsDiffMalicious(t *testing.T) {
	setuid := reg("bin/su", "x")
	setuid.hdr.Mode = 0o4755
	setgid := dir("grp")
	setgid.hdr.Mode = 0o2755
	tests := []struct {
		name    string
		members []member
		want    error
		member  string
	}{
		{"dotdot", []member{reg("../x", "evil")}, ErrEscape, "../x"},
		{"absolute", []member{reg("/etc/x", "evil")}, ErrAbsolute, "/etc/x"},
		{"device node", []member{{hdr: tar.Header{Typeflag: tar.TypeBlock, Name: "sda", Devmajor: 8, Mode: 0o660}}}, ErrType, "sda"},
		{"char device", []member{{hdr: tar.Header{Typeflag: tar.TypeChar, Name: "mem", Devmajor: 1, Devminor: 1, Mode: 0o660}}}, ErrType, "mem"},
		{"setuid file", []member{setuid}, ErrSetuid, "bin/su"},
		{"setgid dir", []member{setgid}, ErrSetuid, "grp"},
		{"symlink climbing out", []member{symlink("a/up", "../../etc")}, ErrEscape, "a/up"},
		{"symlink to /etc then a file through it", []member{symlink("etc", "/etc"), reg("etc/passwd", "evil")}, ErrSymlink, "etc/passwd"},
		{"symlink to outside then a file through it", []member{symlink("out", "../outside/etc"), reg("out/passwd", "evil")}, ErrEscape, "out"},
		{"inner symlink then a file through it", []member{dir("d"), symlink("l", "d"), reg("l/f", "x")}, ErrSymlink, "l/f"},
		{"symlink then a dir through it", []member{symlink("etc", "/etc"), dir("etc/cron.d")}, ErrSymlink, "etc/cron.d"},
		{"hardlink escaping", []member{hardlink("x", "../../etc/passwd")}, ErrEscape, "x"},
		{"hardlink absolute", []member{hardlink("x", "/etc/passwd")}, ErrAbsolute, "x"},
		{"hardlink through symlink", []member{symlink("etc", "/etc"), hardlink("x", "etc/passwd")}, ErrSymlink, "x"},
		{"hardlink to a symlink", []member{symlink("s", "/etc/passwd"), hardlink("x", "s")}, ErrType, "x"},
		{"huge declared size", []member{{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "big", Size: 1 << 50, Mode: 0o644}}}, ErrTooLarge, "big"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tmp, rootfs := sandbox(t, "rootfs")
			err := ApplyRootfsDiff(rootfs, bytes.NewReader(mkTar(t, tc.members...)), Limits{})
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			var ae *Error
			if !errors.As(err, &ae) || ae.Name != tc.member {
				t.Errorf("err = %v, want it to name member %q", err, tc.member)
			}
			t.Log(err)
			assertOutsideUntouched(t, tmp, "rootfs")
		})
	}
}

func TestApplyRootfsDiffLimits(t *testing.T) {
	_, rootfs := sandbox(t, "rootfs")
	err := ApplyRootfsDiff(rootfs, bytes.NewReader(mkTar(t, reg("a", ""), reg("b", ""), reg("c", ""))), Limits{MaxEntries: 2})
	if !errors.Is(err, ErrTooMany) {
		t.Fatalf("err = %v", err)
	}
}

func TestRemoveDeleted(t *testing.T) {
	tests := []struct {
		name   string
		json   string
		want   error // nil: accepted
		gone   []string
		remain []string
	}{
		{"absolute is relative to rootfs", `["/etc/passwd"]`, nil, []string{"etc/passwd"}, []string{"etc/group"}},
		{"directory", `["/etc"]`, nil, []string{"etc"}, nil},
		{"missing is fine", `["/nope/x","/etc/nope"]`, nil, nil, []string{"etc/passwd"}},
		{"symlink removed not followed", `["/lnk"]`, nil, []string{"lnk"}, []string{"etc/passwd"}},
		{"traversal", `["../../etc/passwd"]`, ErrEscape, nil, []string{"etc/passwd"}},
		{"traversal inside", `["/etc/../../outside/etc/passwd"]`, ErrEscape, nil, nil},
		{"checked before any removal", `["/etc/passwd","../x"]`, ErrEscape, nil, []string{"etc/passwd"}},
		{"root itself", `["/"]`, ErrBadName, nil, []string{"etc/passwd"}},
		{"dot", `["/./."]`, ErrBadName, nil, []string{"etc/passwd"}},
		{"NUL", `["/etc/passwd\u0000x"]`, ErrBadName, nil, []string{"etc/passwd"}},
		{"through symlink", `["/lnk/passwd"]`, ErrSymlink, nil, []string{"lnk"}},
		{"not JSON", `{"a":1}`, errAny, nil, []string{"etc/passwd"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tmp, rootfs := sandbox(t, "rootfs")
			os.MkdirAll(filepath.Join(rootfs, "etc"), 0o755)
			os.WriteFile(filepath.Join(rootfs, "etc", "passwd"), []byte("p"), 0o644)
			os.WriteFile(filepath.Join(rootfs, "etc", "group"), []byte("g"), 0o644)
			if err := os.Symlink(filepath.Join(tmp, "outside", "etc"), filepath.Join(rootfs, "lnk")); err != nil {
				t.Fatal(err)
			}
			err := RemoveDeleted(rootfs, []byte(tc.json))
			switch {
			case tc.want == nil && err != nil:
				t.Fatalf("err = %v", err)
			case tc.want == errAny && err == nil, tc.want != nil && tc.want != errAny && !errors.Is(err, tc.want):
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			t.Log(err)
			for _, p := range tc.gone {
				if _, err := os.Lstat(filepath.Join(rootfs, p)); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s not removed", p)
				}
			}
			for _, p := range tc.remain {
				if _, err := os.Lstat(filepath.Join(rootfs, p)); err != nil {
					t.Errorf("%s removed: %v", p, err)
				}
			}
			assertOutsideUntouched(t, tmp, "rootfs")
		})
	}
}

var errAny = errors.New("any error")
