package archive

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	metadata "github.com/checkpoint-restore/checkpointctl/lib"
)

var fixtures = []struct {
	file    string
	members int
	image   string
}{
	{"containerd-2.4.2-cri-counter.tar", 37, "busybox"},
	{"podman-4.3.1-export-counter.tar", 39, "counter"},
}

func TestFixturesWalkAndExtract(t *testing.T) {
	for _, fx := range fixtures {
		t.Run(fx.file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", fx.file))
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			var pages int64
			err = Walk(bytes.NewReader(data), Limits{}, func(hdr *tar.Header, body io.Reader) error {
				n++
				if strings.HasPrefix(hdr.Name, "/") || strings.HasSuffix(hdr.Name, "/") {
					t.Errorf("name not cleaned: %q", hdr.Name)
				}
				if strings.HasPrefix(hdr.Name, metadata.CheckpointDirectory+"/"+metadata.PagesPrefix) {
					c, err := io.Copy(io.Discard, body)
					if err != nil {
						return err
					}
					pages += c
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if n != fx.members || pages == 0 {
				t.Errorf("walked %d members, %d page bytes; want %d members", n, pages, fx.members)
			}
			dest := t.TempDir()
			m, err := Extract(bytes.NewReader(data), dest, Limits{}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if m != nil {
				t.Errorf("foreign archive has no manifest, got %+v", m)
			}
			cfg, _, err := metadata.ReadContainerCheckpointConfigDump(dest)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(cfg.RootfsImageName, fx.image) {
				t.Errorf("rootfsImageName = %q", cfg.RootfsImageName)
			}
			if _, err := os.Stat(filepath.Join(dest, metadata.CheckpointDirectory, "inventory.img")); err != nil {
				t.Error(err)
			}
			// The rootfs diff inside applies cleanly onto an empty rootfs.
			diff, err := os.Open(filepath.Join(dest, metadata.RootFsDiffTar))
			if err != nil {
				t.Fatal(err)
			}
			defer diff.Close()
			rootfs := t.TempDir()
			if err := ApplyRootfsDiff(rootfs, diff, Limits{}); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(filepath.Join(rootfs, "tmp", "counter")); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestExtractMalicious is the hostile corpus for the top-level archive.
func TestExtractMalicious(t *testing.T) {
	tests := []struct {
		name    string
		members []member
		lim     Limits
		want    error
		member  string
	}{
		{"dotdot", []member{reg("../x", "evil")}, Limits{}, ErrEscape, "../x"},
		{"dotdot deep", []member{reg("a/../../x", "evil")}, Limits{}, ErrEscape, "a/../../x"},
		{"absolute", []member{reg("/etc/x", "evil")}, Limits{}, ErrAbsolute, "/etc/x"},
		{"symlink then file through it", []member{symlink("etc", "/etc"), reg("etc/x", "evil")}, Limits{}, ErrType, "etc"},
		{"hardlink escaping", []member{hardlink("x", "../../etc/passwd")}, Limits{}, ErrEscape, "x"},
		{"hardlink inside", []member{reg("a", "a"), hardlink("b", "a")}, Limits{}, ErrType, "b"},
		{"device node", []member{{hdr: tar.Header{Typeflag: tar.TypeChar, Name: "null", Devmajor: 1, Devminor: 3, Mode: 0o666}}}, Limits{}, ErrType, "null"},
		{"fifo", []member{{hdr: tar.Header{Typeflag: tar.TypeFifo, Name: "p", Mode: 0o666}}}, Limits{}, ErrType, "p"},
		{"huge declared size", []member{{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "pages-1.img", Size: 1 << 40, Mode: 0o600}}}, Limits{}, ErrTooLarge, "pages-1.img"},
		{"total beyond limit", []member{reg("a", "12345"), reg("b", "12345")}, Limits{MaxMemberBytes: 8, MaxTotalBytes: 8}, ErrTooLarge, "b"},
		{"too many entries", []member{reg("a", ""), reg("b", ""), reg("c", ""), reg("d", "")}, Limits{MaxEntries: 3}, ErrTooMany, "d"},
		{"file over dir", []member{reg("a", "x"), reg("a/b", "y")}, Limits{}, nil, "a/b"},
		{"root as file", []member{reg(".", "x")}, Limits{}, ErrBadName, "."},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tmp, dest := sandbox(t, "dest")
			_, err := Extract(bytes.NewReader(mkTar(t, tc.members...)), dest, tc.lim, nil)
			if err == nil {
				t.Fatal("accepted")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("err = %v, want %v", err, tc.want)
			}
			var ae *Error
			if !errors.As(err, &ae) || ae.Name != tc.member {
				t.Errorf("err = %v, want it to name member %q", err, tc.member)
			}
			t.Log(err)
			if got := tree(t, dest); len(got) != 1 {
				t.Errorf("dest not cleaned up: %v", got)
			}
			assertOutsideUntouched(t, tmp, "dest")
		})
	}
}

func TestErrorMessage(t *testing.T) {
	_, err := Extract(bytes.NewReader(mkTar(t, reg("../etc/passwd", "x"))), t.TempDir(), Limits{}, nil)
	want := `archive member "../etc/passwd": path escapes the archive root`
	if err == nil || err.Error() != want {
		t.Errorf("err = %v, want %s", err, want)
	}
}

func TestExtractDoesNotFollowExistingSymlink(t *testing.T) {
	tmp, dest := sandbox(t, "dest")
	// A symlink already in dest (say, left by an earlier run).
	if err := os.Symlink(filepath.Join(tmp, "outside", "etc"), filepath.Join(dest, "checkpoint")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(tmp, "outside", "etc", "passwd"), filepath.Join(dest, "config.dump")); err != nil {
		t.Fatal(err)
	}
	for _, m := range []member{reg("checkpoint/passwd", "evil"), reg("config.dump", "evil")} {
		_, err := Extract(bytes.NewReader(mkTar(t, m)), dest, Limits{}, nil)
		if err == nil {
			t.Errorf("%s: accepted", m.hdr.Name)
		}
		t.Log(err)
	}
	assertOutsideUntouched(t, tmp, "dest")
}

func TestCleanName(t *testing.T) {
	tests := []struct {
		in, want string
		err      error
	}{
		{"a", "a", nil},
		{"./a/b/", "a/b", nil},
		{"a//b", "a/b", nil},
		{"./", "", nil},
		{"", "", ErrBadName},
		{"a\x00b", "", ErrBadName},
		{"/a", "", ErrAbsolute},
		{"..", "", ErrEscape},
		{"a/../b", "", ErrEscape},
		{strings.Repeat("a", maxNameLen+1), "", ErrBadName},
	}
	for _, tc := range tests {
		got, err := cleanName(tc.in)
		if got != tc.want || !errors.Is(err, tc.err) && !(err == nil && tc.err == nil) {
			t.Errorf("cleanName(%q) = %q, %v; want %q, %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestParseManifest(t *testing.T) {
	sum := strings.Repeat("ab", 32)
	tests := []struct {
		in string
		ok bool
	}{
		{sum + "  a\n" + sum + " *b/c\n", true},
		{"", true},
		{sum + " a\n", false},
		{strings.ToUpper(sum) + "  a\n", false},
		{sum + "  ../a\n", false},
		{sum + "  a\n" + sum + "  a\n", false},
	}
	for _, tc := range tests {
		m, err := ParseManifest([]byte(tc.in))
		if (err == nil) != tc.ok {
			t.Errorf("ParseManifest(%q) = %v, %v", tc.in, m, err)
		}
	}
}

func TestMarshalDeletedFiles(t *testing.T) {
	if got := string(MarshalDeletedFiles(nil)); got != "[]" {
		t.Errorf("nil -> %s", got)
	}
	var back []string
	if err := json.Unmarshal(MarshalDeletedFiles([]string{"/a b", `/c"d`}), &back); err != nil || len(back) != 2 || back[1] != `/c"d` {
		t.Errorf("round trip: %v %v", back, err)
	}
}
