package archive

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metadata "github.com/checkpoint-restore/checkpointctl/lib"
)

// writeSample writes an archive shaped like a checkpoint and returns it
// with the expected content of every regular member.
func writeSample(t *testing.T) ([]byte, map[string]string) {
	t.Helper()
	src := t.TempDir()
	images := filepath.Join(src, "images")
	if err := os.MkdirAll(filepath.Join(images, "sub"), 0o750); err != nil {
		t.Fatal(err)
	}
	pages := strings.Repeat("P", 3<<20+17) // crosses the copy buffer size
	files := map[string]string{
		"inventory.img":  "inv",
		"pages-1.img":    pages,
		"sub/nested.img": "nested",
	}
	for n, c := range files {
		if err := os.WriteFile(filepath.Join(images, n), []byte(c), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	logPath := filepath.Join(src, "dump.log")
	if err := os.WriteFile(logPath, []byte("criu log\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	var buf bytes.Buffer
	w := NewWriter(&buf)
	cfg := &metadata.ContainerConfig{ID: "abc", Name: "counter", RootfsImageName: "busybox:latest", CreatedTime: time.Unix(1, 0).UTC()}
	if err := w.AddJSON(metadata.ConfigDumpFile, cfg); err != nil {
		t.Fatal(err)
	}
	if err := w.AddDir(metadata.CheckpointDirectory, images); err != nil {
		t.Fatal(err)
	}
	if err := w.AddFile(metadata.DumpLogFile, logPath); err != nil {
		t.Fatal(err)
	}
	if err := w.AddReader("container.log", 5, strings.NewReader("hello")); err != nil {
		t.Fatal(err)
	}
	if err := w.AddBytes(metadata.DeletedFilesFile, MarshalDeletedFiles([]string{"/etc/motd"})); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if w.Written() != int64(buf.Len()) {
		t.Errorf("Written() = %d, buffer holds %d", w.Written(), buf.Len())
	}
	cfgJSON, _ := json.Marshal(cfg)
	want := map[string]string{
		metadata.ConfigDumpFile:     string(cfgJSON),
		"checkpoint/inventory.img":  "inv",
		"checkpoint/pages-1.img":    pages,
		"checkpoint/sub/nested.img": "nested",
		metadata.DumpLogFile:        "criu log\n",
		"container.log":             "hello",
		metadata.DeletedFilesFile:   `["/etc/motd"]`,
	}
	return buf.Bytes(), want
}

func TestWriterExtractRoundTrip(t *testing.T) {
	data, want := writeSample(t)
	dest := filepath.Join(t.TempDir(), "out")
	m, err := Extract(bytes.NewReader(data), dest, Limits{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if m == nil || len(m.Sums) != len(want) {
		t.Fatalf("manifest = %+v, want %d entries", m, len(want))
	}
	for name, content := range want {
		got, err := os.ReadFile(filepath.Join(dest, name))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if string(got) != content {
			t.Errorf("%s: content differs (%d bytes, want %d)", name, len(got), len(content))
		}
		sum := sha256.Sum256([]byte(content))
		if m.Sums[name] != hex.EncodeToString(sum[:]) {
			t.Errorf("%s: manifest sum %s", name, m.Sums[name])
		}
	}
	if _, err := os.Stat(filepath.Join(dest, ManifestFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("manifest should be parsed, not extracted: %v", err)
	}
	fi, err := os.Stat(dest)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("dest mode = %v, %v; want 0700", fi.Mode(), err)
	}
}

func TestWriterHeaders(t *testing.T) {
	data, _ := writeSample(t)
	var names []string
	err := Walk(bytes.NewReader(data), Limits{}, func(hdr *tar.Header, body io.Reader) error {
		names = append(names, hdr.Name)
		if hdr.Uid != 0 || hdr.Gid != 0 {
			t.Errorf("%s: uid/gid %d/%d, want 0/0", hdr.Name, hdr.Uid, hdr.Gid)
		}
		wantMode := map[string]int64{
			metadata.ConfigDumpFile:  0o600,
			"checkpoint":             0o750,
			"checkpoint/pages-1.img": 0o640,
			"checkpoint/sub":         0o750,
			metadata.DumpLogFile:     0o600,
			ManifestFile:             0o600,
		}
		if m, ok := wantMode[hdr.Name]; ok && hdr.Mode != m {
			t.Errorf("%s: mode %#o, want %#o", hdr.Name, hdr.Mode, m)
		}
		if time.Since(hdr.ModTime) > time.Hour {
			t.Errorf("%s: mtime %v is not now", hdr.Name, hdr.ModTime)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if names[len(names)-1] != ManifestFile {
		t.Errorf("last member is %q, want %s", names[len(names)-1], ManifestFile)
	}
}

func TestFlippedByteFailsChecksum(t *testing.T) {
	data, _ := writeSample(t)
	i := bytes.Index(data, []byte("nested\x00")) // the body, not the header name
	if i < 0 {
		t.Fatal("member body not found")
	}
	bad := bytes.Clone(data)
	bad[i] ^= 0x20
	tmp, dest := sandbox(t, "dest")
	_, err := Extract(bytes.NewReader(bad), dest, Limits{}, nil)
	if !errors.Is(err, ErrChecksum) {
		t.Fatalf("err = %v, want ErrChecksum", err)
	}
	if !strings.Contains(err.Error(), `"checkpoint/sub/nested.img"`) {
		t.Errorf("error does not name the member: %v", err)
	}
	// What the failed call created is gone again.
	if got := tree(t, dest); len(got) != 1 {
		t.Errorf("dest not cleaned up: %v", got)
	}
	assertOutsideUntouched(t, tmp, "dest")
}

func TestExtractRefusesUnlistedAndMissing(t *testing.T) {
	sum := sha256.Sum256([]byte("a"))
	manifest := hex.EncodeToString(sum[:]) + "  a\n" + hex.EncodeToString(sum[:]) + "  gone\n"
	tests := []struct {
		name    string
		members []member
		want    error
	}{
		{"unlisted", []member{reg("a", "a"), reg("extra", "x"), reg(ManifestFile, hex.EncodeToString(sum[:])+"  a\n")}, ErrUnlisted},
		{"missing", []member{reg("a", "a"), reg(ManifestFile, manifest)}, ErrMissing},
		{"duplicate", []member{reg("a", "a"), reg("a", "a")}, ErrDuplicate},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Extract(bytes.NewReader(mkTar(t, tc.members...)), t.TempDir(), Limits{}, nil)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestExtractFilter(t *testing.T) {
	data, want := writeSample(t)
	dest := t.TempDir()
	only := map[string]bool{metadata.ConfigDumpFile: true, metadata.DumpLogFile: true}
	if _, err := Extract(bytes.NewReader(data), dest, Limits{}, func(n string) bool { return only[n] }); err != nil {
		t.Fatal(err)
	}
	got := tree(t, dest)
	if strings.Join(got, ",") != ".,config.dump,dump.log" {
		t.Errorf("extracted %v", got)
	}
	b, _ := os.ReadFile(filepath.Join(dest, metadata.ConfigDumpFile))
	if string(b) != want[metadata.ConfigDumpFile] {
		t.Errorf("config.dump = %s", b)
	}
}

func TestWriterRefuses(t *testing.T) {
	src := t.TempDir()
	if err := os.Symlink("/etc/passwd", filepath.Join(src, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "file"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		add  func(w *Writer) error
	}{
		{"dotdot", func(w *Writer) error { return w.AddBytes("../x", nil) }},
		{"absolute", func(w *Writer) error { return w.AddBytes("/etc/x", nil) }},
		{"empty", func(w *Writer) error { return w.AddBytes("", nil) }},
		{"manifest name", func(w *Writer) error { return w.AddBytes(ManifestFile, nil) }},
		{"duplicate", func(w *Writer) error { w.AddBytes("a", nil); return w.AddBytes("a", nil) }},
		{"symlink file", func(w *Writer) error { return w.AddFile("l", filepath.Join(src, "link")) }},
		{"dir with symlink", func(w *Writer) error { return w.AddDir("d", src) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			w := NewWriter(&buf)
			if err := tc.add(w); err == nil {
				t.Fatal("accepted")
			}
			// A refused name leaves the stream usable.
			if err := w.Close(); err != nil {
				t.Fatalf("close after refusal: %v", err)
			}
			if _, err := Extract(&buf, t.TempDir(), Limits{}, nil); err != nil {
				t.Fatalf("archive after refusal unreadable: %v", err)
			}
		})
	}
}

func TestWriterShortReaderIsSticky(t *testing.T) {
	w := NewWriter(io.Discard)
	err := w.AddReader("x", 10, strings.NewReader("short"))
	if err == nil || !strings.Contains(err.Error(), `"x"`) {
		t.Fatalf("err = %v", err)
	}
	if w.AddBytes("y", nil) == nil || w.Close() == nil {
		t.Error("writer usable after a broken member")
	}
}

// TestTarAndSha256sum checks that GNU tar lists the archive and that
// sha256sum -c accepts the manifest after tar extracts it.
func TestTarAndSha256sum(t *testing.T) {
	for _, tool := range []string{"tar", "sha256sum"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	data, want := writeSample(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "a.tar")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("tar", "tf", path).CombinedOutput()
	if err != nil {
		t.Fatalf("tar tf: %v\n%s", err, out)
	}
	listed := string(out)
	for name := range want {
		if !strings.Contains(listed, name+"\n") {
			t.Errorf("tar tf does not list %s:\n%s", name, listed)
		}
	}
	x := filepath.Join(dir, "x")
	if err := os.Mkdir(x, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("tar", "xf", path, "-C", x).CombinedOutput(); err != nil {
		t.Fatalf("tar xf: %v\n%s", err, out)
	}
	cmd := exec.Command("sha256sum", "--strict", "-c", ManifestFile)
	cmd.Dir = x
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sha256sum -c: %v\n%s", err, out)
	}
}

// TestExtractLate: late members are written before they are hashed, and
// their verdict comes from the LateCheck; everything else is checked by
// ExtractLate itself.
func TestExtractLate(t *testing.T) {
	line := func(name, body string) string {
		sum := sha256.Sum256([]byte(body))
		return hex.EncodeToString(sum[:]) + "  " + name + "\n"
	}
	isPages := func(name string) bool { return strings.HasPrefix(name, "pages-") }
	tests := []struct {
		name      string
		members   []member
		wantErr   error // from ExtractLate
		wantLate  error // from LateCheck.Wait
		noCheck   bool
		extracted string // content of pages-1.img after a successful ExtractLate
	}{
		{"good", []member{reg("pages-1.img", "PAGES"), reg("a", "a"), reg(ManifestFile, line("pages-1.img", "PAGES")+line("a", "a"))}, nil, nil, false, "PAGES"},
		{"tampered late member", []member{reg("pages-1.img", "EVIL!"), reg("a", "a"), reg(ManifestFile, line("pages-1.img", "PAGES")+line("a", "a"))}, nil, ErrChecksum, false, "EVIL!"},
		{"tampered other member", []member{reg("pages-1.img", "PAGES"), reg("a", "b"), reg(ManifestFile, line("pages-1.img", "PAGES")+line("a", "a"))}, ErrChecksum, nil, false, ""},
		{"unlisted late member", []member{reg("pages-1.img", "PAGES"), reg("a", "a"), reg(ManifestFile, line("a", "a"))}, ErrUnlisted, nil, false, ""},
		{"missing late member", []member{reg("a", "a"), reg(ManifestFile, line("pages-1.img", "PAGES")+line("a", "a"))}, ErrMissing, nil, false, ""},
		{"no manifest", []member{reg("pages-1.img", "PAGES")}, nil, nil, true, "PAGES"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dest := filepath.Join(t.TempDir(), "x")
			m, check, err := ExtractLate(bytes.NewReader(mkTar(t, tc.members...)), dest, Limits{}, nil, isPages)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("ExtractLate: %v, want %v", err, tc.wantErr)
			}
			if err != nil {
				if _, serr := os.Stat(dest); !errors.Is(serr, os.ErrNotExist) {
					t.Errorf("a refused archive left %s", dest)
				}
				return
			}
			if (check == nil) != tc.noCheck || (m == nil) != tc.noCheck {
				t.Fatalf("manifest %v, check %v; want them only with a manifest", m, check)
			}
			if got, _ := os.ReadFile(filepath.Join(dest, "pages-1.img")); string(got) != tc.extracted {
				t.Errorf("pages-1.img = %q, want %q", got, tc.extracted)
			}
			if check == nil {
				return
			}
			if err := check.Wait(); !errors.Is(err, tc.wantLate) || (tc.wantLate == nil) != (err == nil) {
				t.Errorf("late check: %v, want %v", err, tc.wantLate)
			}
		})
	}
}
