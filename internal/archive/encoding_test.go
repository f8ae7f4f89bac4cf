package archive

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"
	"filippo.io/age/armor"
	metadata "github.com/checkpoint-restore/checkpointctl/lib"
)

func newIdentity(t *testing.T) *age.X25519Identity {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestEncodingRoundTrip(t *testing.T) {
	id := newIdentity(t)
	tests := []struct {
		compress bool
		encrypt  bool
		want     Format
	}{
		{false, false, FormatTar},
		{true, false, FormatZstd},
		{false, true, FormatAge},
		{true, true, FormatZstdAge},
	}
	for _, tc := range tests {
		t.Run(string(tc.want), func(t *testing.T) {
			var recipients []age.Recipient
			if tc.encrypt {
				recipients = []age.Recipient{id.Recipient()}
			}
			dir := t.TempDir()
			f, err := os.CreateTemp(dir, "a")
			if err != nil {
				t.Fatal(err)
			}
			ew, suffix, err := NewEncodingWriter(f, tc.compress, recipients)
			if err != nil {
				t.Fatal(err)
			}
			if suffix != string(tc.want) {
				t.Errorf("suffix = %q, want %q", suffix, tc.want)
			}
			w := NewWriter(ew)
			w.AddBytes(metadata.ConfigDumpFile, []byte(`{"id":"x"}`))
			w.AddBytes("checkpoint/pages-1.img", bytes.Repeat([]byte{0}, 1<<20))
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if err := ew.Close(); err != nil {
				t.Fatal(err)
			}
			f.Close()
			// The name does not matter: Open sniffs the content.
			rc, format, err := Open(f.Name(), []age.Identity{newIdentity(t), id})
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			if format != tc.want {
				t.Errorf("format = %q, want %q", format, tc.want)
			}
			m, err := Extract(rc, filepath.Join(dir, "x"), Limits{}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(m.Sums) != 2 {
				t.Errorf("manifest: %v", m.Sums)
			}
		})
	}
}

func TestOpenEncryptedErrors(t *testing.T) {
	id := newIdentity(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "a.tar.age")
	f, _ := os.Create(path)
	ew, _, err := NewEncodingWriter(f, false, []age.Recipient{id.Recipient()})
	if err != nil {
		t.Fatal(err)
	}
	w := NewWriter(ew)
	w.Close()
	ew.Close()
	f.Close()

	_, _, err = Open(path, nil)
	if !errors.Is(err, ErrNoIdentity) {
		t.Errorf("no identity: err = %v", err)
	}
	_, _, err = Open(path, []age.Identity{newIdentity(t)})
	if !errors.Is(err, ErrWrongIdentity) || !strings.Contains(err.Error(), path) {
		t.Errorf("wrong identity: err = %v", err)
	}
	t.Log(err)
}

func TestOpenArmored(t *testing.T) {
	id := newIdentity(t)
	var tarBuf bytes.Buffer
	w := NewWriter(&tarBuf)
	w.AddBytes("a", []byte("a"))
	w.Close()
	var out bytes.Buffer
	aw := armor.NewWriter(&out)
	ew, err := age.Encrypt(aw, id.Recipient())
	if err != nil {
		t.Fatal(err)
	}
	ew.Write(tarBuf.Bytes())
	ew.Close()
	aw.Close()
	path := filepath.Join(t.TempDir(), "a.tar.age")
	os.WriteFile(path, out.Bytes(), 0o600)
	rc, format, err := Open(path, []age.Identity{id})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got, _ := io.ReadAll(rc)
	if format != FormatAge || !bytes.Equal(got, tarBuf.Bytes()) {
		t.Errorf("format %q, %d bytes", format, len(got))
	}
}

func TestOpenFormats(t *testing.T) {
	tests := []struct {
		name string
		data []byte
		want error
	}{
		{"empty", nil, ErrFormat},
		{"garbage", []byte("hello, this is not an archive"), ErrFormat},
		{"fixture", mustRead(t, "testdata/podman-4.3.1-export-counter.tar"), nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "a")
			os.WriteFile(path, tc.data, 0o600)
			rc, format, err := Open(path, nil)
			if !errors.Is(err, tc.want) && !(err == nil && tc.want == nil) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if err == nil {
				rc.Close()
				if format != FormatTar {
					t.Errorf("format = %q", format)
				}
			}
		})
	}
}

// TestZstdCLIReadsOurs checks interoperability with the zstd tool.
func TestZstdCLIReadsOurs(t *testing.T) {
	if _, err := exec.LookPath("zstd"); err != nil {
		t.Skip("zstd not installed")
	}
	var buf bytes.Buffer
	ew, _, _ := NewEncodingWriter(&buf, true, nil)
	w := NewWriter(ew)
	w.AddBytes("a", []byte("a"))
	w.Close()
	ew.Close()
	cmd := exec.Command("zstd", "-dc")
	cmd.Stdin = &buf
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Extract(bytes.NewReader(out), t.TempDir(), Limits{}, nil); err != nil {
		t.Fatal(err)
	}
}

func TestParseKeyFiles(t *testing.T) {
	id := newIdentity(t)
	dir := t.TempDir()
	idPath := filepath.Join(dir, "key.txt")
	recPath := filepath.Join(dir, "recipients.txt")
	os.WriteFile(idPath, []byte("# created: now\n"+id.String()+"\n"), 0o600)
	os.WriteFile(recPath, []byte("# ops team\n"+id.Recipient().String()+"\n"), 0o600)
	ids, err := ParseIdentitiesFile(idPath)
	if err != nil || len(ids) != 1 {
		t.Fatalf("identities: %v %v", ids, err)
	}
	recs, err := ParseRecipientsFile(recPath)
	if err != nil || len(recs) != 1 {
		t.Fatalf("recipients: %v %v", recs, err)
	}
	if _, err := ParseRecipientsFile(idPath); err == nil {
		t.Error("an identity file parsed as recipients")
	}
	if _, err := ParseIdentitiesFile(filepath.Join(dir, "none")); err == nil || !strings.Contains(err.Error(), "none") {
		t.Errorf("missing file: %v", err)
	}
}

// TestCheckpointctlShow builds a synthetic archive from the containerd
// fixture's CRIU images and our own metadata and asks checkpointctl to
// read it.
func TestCheckpointctlShow(t *testing.T) {
	bin, err := exec.LookPath("checkpointctl")
	if err != nil {
		t.Skip("checkpointctl not installed (hack/install-deps.sh installs it)")
	}
	src := t.TempDir()
	data := mustRead(t, "testdata/containerd-2.4.2-cri-counter.tar")
	keep := map[string]bool{metadata.SpecDumpFile: true, "stats-dump": true, metadata.RootFsDiffTar: true}
	if _, err := Extract(bytes.NewReader(data), src, Limits{}, func(n string) bool {
		return keep[n] || strings.HasPrefix(n, metadata.CheckpointDirectory+"/")
	}); err != nil {
		t.Fatal(err)
	}
	spec := map[string]any{
		"ociVersion": "1.0.2",
		"annotations": map[string]string{
			"io.kubernetes.cri.container-name":    "synthetic-ctr",
			"io.kubernetes.cri.sandbox-name":      "synthetic-pod",
			"io.kubernetes.cri.sandbox-namespace": "synthetic-ns",
		},
	}
	path := filepath.Join(t.TempDir(), "synthetic.tar")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	w := NewWriter(f)
	w.AddJSON(metadata.ConfigDumpFile, &metadata.ContainerConfig{ID: "0123456789ab", Name: "synthetic-ctr", RootfsImageName: "example.org/synthetic:1"})
	w.AddJSON(metadata.SpecDumpFile, spec)
	w.AddDir(metadata.CheckpointDirectory, filepath.Join(src, metadata.CheckpointDirectory))
	w.AddFile("stats-dump", filepath.Join(src, "stats-dump"))
	w.AddFile(metadata.RootFsDiffTar, filepath.Join(src, metadata.RootFsDiffTar))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	out, err := exec.Command(bin, "show", path).CombinedOutput()
	if err != nil {
		t.Fatalf("checkpointctl show: %v\n%s", err, out)
	}
	for _, want := range []string{"synthetic-ctr", "example.org/synthetic:1", "0123456789ab", "containerd"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("checkpointctl show lacks %q:\n%s", want, out)
		}
	}
	// inspect --all decodes the CRIU images and reports pod and namespace.
	out, err = exec.Command(bin, "inspect", "--all", "--format", "json", path).Output()
	if err != nil {
		t.Fatalf("checkpointctl inspect: %v\n%s", err, out)
	}
	var got []struct {
		Name     string `json:"container_name"`
		Metadata struct {
			Pod       string `json:"pod_name"`
			Namespace string `json:"kubernetes_namespace"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(out, &got); err != nil || len(got) != 1 {
		t.Fatalf("inspect output: %v\n%s", err, out)
	}
	if got[0].Name != "synthetic-ctr" || got[0].Metadata.Pod != "synthetic-pod" || got[0].Metadata.Namespace != "synthetic-ns" {
		t.Errorf("inspect = %+v", got[0])
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeStream(t *testing.T) {
	id := newIdentity(t)
	var buf bytes.Buffer
	ew, _, err := NewEncodingWriter(&buf, true, []age.Recipient{id.Recipient()})
	if err != nil {
		t.Fatal(err)
	}
	w := NewWriter(ew)
	w.AddBytes("a", []byte("a"))
	w.Close()
	ew.Close()
	rc, format, err := Decode(bytes.NewReader(buf.Bytes()), []age.Identity{id})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if format != FormatZstdAge {
		t.Errorf("format = %q", format)
	}
	if _, err := Extract(rc, t.TempDir(), Limits{}, nil); err != nil {
		t.Fatal(err)
	}
}
