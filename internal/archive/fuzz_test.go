package archive

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fuzzLimits keep each fuzz input cheap.
var fuzzLimits = Limits{MaxMemberBytes: 1 << 20, MaxTotalBytes: 4 << 20, MaxEntries: 256}

// seedTars are small archives, good and hostile, shared by the fuzzers.
func seedTars(f *testing.F) [][]byte {
	f.Helper()
	setuid := reg("bin/su", "x")
	setuid.hdr.Mode = 0o4755
	seeds := [][]byte{
		mkTar(f, dir("checkpoint/"), reg("checkpoint/pages-1.img", "pages"), reg("config.dump", `{"id":"x"}`)),
		mkTar(f, reg("../x", "evil")),
		mkTar(f, reg("/etc/x", "evil")),
		mkTar(f, symlink("etc", "/etc"), reg("etc/passwd", "evil")),
		mkTar(f, dir("d"), symlink("l", "d"), reg("l/f", "x"), hardlink("h", "d/../l")),
		mkTar(f, hardlink("x", "../../etc/passwd")),
		mkTar(f, member{hdr: tar.Header{Typeflag: tar.TypeChar, Name: "null", Devmajor: 1, Devminor: 3}}),
		mkTar(f, setuid),
		mkTar(f, member{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "big", Size: 1 << 40}}),
		mkTar(f, reg("a", "a"), reg(ManifestFile, strings.Repeat("0", 64)+"  a\n")),
	}
	var buf bytes.Buffer
	w := NewWriter(&buf)
	w.AddBytes("config.dump", []byte("{}"))
	w.AddBytes("checkpoint/pages-1.img", []byte("pages"))
	w.Close()
	seeds = append(seeds, buf.Bytes())
	seeds = append(seeds, mkTar(f, reg("a", "a"), reg(ManifestFile, strings.Repeat("0", 64)+"  a\n"), reg(SignatureFile, "sig")))
	seeds = append(seeds, mkTar(f, reg(SignatureFile, "sig"), reg("a", "a")))
	// The fixtures' small rootfs-diff.tar; whole fixtures are too large for
	// the mutator to be effective (they are covered by unit tests).
	diff, err := os.ReadFile("testdata/podman-rootfs-diff.tar")
	if err != nil {
		f.Fatal(err)
	}
	seeds = append(seeds, diff)
	return seeds
}

func FuzzWalk(f *testing.F) {
	for _, s := range seedTars(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var total int64
		n := 0
		err := Walk(bytes.NewReader(data), fuzzLimits, func(hdr *tar.Header, body io.Reader) error {
			n++
			if c, err := cleanName(hdr.Name); err != nil || c != hdr.Name || c == "" {
				t.Fatalf("Walk passed name %q (%v)", hdr.Name, err)
			}
			switch hdr.Typeflag {
			case tar.TypeReg, tar.TypeDir, tar.TypeSymlink, tar.TypeLink:
			default:
				t.Fatalf("Walk passed type %q", hdr.Typeflag)
			}
			c, err := io.Copy(io.Discard, body)
			total += c
			return err
		})
		if n > fuzzLimits.MaxEntries || total > fuzzLimits.MaxTotalBytes {
			t.Fatalf("limits not enforced: %d entries, %d bytes (err %v)", n, total, err)
		}
	})
}

func FuzzExtract(f *testing.F) {
	for _, s := range seedTars(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		tmp, dest := sandbox(t, "dest")
		m, err := Extract(bytes.NewReader(data), dest, fuzzLimits, nil)
		assertOutsideUntouched(t, tmp, "dest")
		if err != nil {
			if got := tree(t, dest); len(got) != 1 {
				t.Fatalf("failed extract left %v", got)
			}
			return
		}
		// Only directories and regular files, never a symlink.
		filepath.WalkDir(dest, func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() && !d.Type().IsRegular() {
				t.Fatalf("extracted %s of type %v", p, d.Type())
			}
			return nil
		})
		if m != nil {
			for name := range m.Sums {
				if _, err := os.Lstat(filepath.Join(dest, name)); err != nil {
					t.Fatalf("verified member %s missing: %v", name, err)
				}
			}
		}
	})
}

// FuzzCheck: what Extract accepts, Check accepts with the same manifest
// and signature (Check writes nothing, so file-over-directory clashes are
// Extract's alone).
func FuzzCheck(f *testing.F) {
	for _, s := range seedTars(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Check(bytes.NewReader(data), fuzzLimits)
		xm, xerr := Extract(bytes.NewReader(data), filepath.Join(t.TempDir(), "x"), fuzzLimits, nil)
		if xerr != nil {
			return
		}
		if err != nil {
			t.Fatalf("Extract accepted what Check refuses: %v", err)
		}
		if (m == nil) != (xm == nil) || (m != nil && (!bytes.Equal(m.Raw, xm.Raw) || !bytes.Equal(m.Signature, xm.Signature))) {
			t.Fatalf("Check and Extract disagree on the manifest: %+v %+v", m, xm)
		}
	})
}

func FuzzApplyRootfsDiff(f *testing.F) {
	for _, s := range seedTars(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		tmp, rootfs := sandbox(t, "rootfs")
		ApplyRootfsDiff(rootfs, bytes.NewReader(data), fuzzLimits)
		assertOutsideUntouched(t, tmp, "rootfs")
		// Whatever was applied: no device, no setuid, no symlink climbing out.
		filepath.WalkDir(rootfs, func(p string, d os.DirEntry, err error) error {
			if err != nil {
				return nil
			}
			fi, err := d.Info()
			if err != nil {
				return nil
			}
			if fi.Mode()&(os.ModeDevice|os.ModeCharDevice|os.ModeSetuid|os.ModeSetgid|os.ModeNamedPipe|os.ModeSocket) != 0 {
				t.Fatalf("%s has mode %v", p, fi.Mode())
			}
			if fi.Mode()&os.ModeSymlink != 0 {
				target, _ := os.Readlink(p)
				rel, _ := filepath.Rel(rootfs, p)
				if checkSymlinkTarget(filepath.ToSlash(rel), target) != nil {
					t.Fatalf("%s -> %s escapes", p, target)
				}
			}
			return nil
		})
	})
}

func FuzzRemoveDeleted(f *testing.F) {
	for _, s := range []string{
		`["/etc/passwd"]`, `["../../etc/passwd"]`, `["/"]`, `["/lnk/passwd"]`, `["/lnk"]`,
		`["/etc/../../outside"]`, `[]`, `null`, `["\u0000"]`, `["/etc","/etc/group"]`, `{"x":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		tmp, rootfs := sandbox(t, "rootfs")
		os.MkdirAll(filepath.Join(rootfs, "etc"), 0o755)
		os.WriteFile(filepath.Join(rootfs, "etc", "passwd"), []byte("p"), 0o644)
		os.Symlink(filepath.Join(tmp, "outside", "etc"), filepath.Join(rootfs, "lnk"))
		err := RemoveDeleted(rootfs, data)
		assertOutsideUntouched(t, tmp, "rootfs")
		if _, serr := os.Stat(rootfs); serr != nil {
			t.Fatalf("rootfs itself removed (err %v)", err)
		}
		if errors.Is(err, ErrEscape) {
			if _, serr := os.Stat(filepath.Join(rootfs, "etc", "passwd")); serr != nil {
				t.Fatal("removed something before refusing")
			}
		}
	})
}
