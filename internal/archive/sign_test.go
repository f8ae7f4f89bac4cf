package archive

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// hashSigner "signs" with a keyed hash, enough to test the format; the
// real signer (internal/trust) has its own tests.
type hashSigner struct{ key string }

func (h hashSigner) Sign(m []byte) ([]byte, error) {
	s := sha256.Sum256(append([]byte(h.key), m...))
	return s[:], nil
}

func copyFile(t *testing.T, src string) string {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "a.tar")
	if err := os.WriteFile(dst, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return dst
}

// sealed archives of every writer: Writer, FileWriter (with a streamed
// member), and one without a manifest (containerd's fixture).
func TestSealFile(t *testing.T) {
	plain, _ := writeSample(t)
	plainPath := filepath.Join(t.TempDir(), "w.tar")
	os.WriteFile(plainPath, plain, 0o600)

	f := newArchiveFile(t)
	sa := NewFileWriter(f)
	if err := sa.AddDirEntry("checkpoint", 0o700); err != nil {
		t.Fatal(err)
	}
	if err := streamPipe(t, sa, "checkpoint/pages-1.img", randomBytes(3<<20+5, 1)); err != nil {
		t.Fatal(err)
	}
	if err := sa.AddBytes("config.dump", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	if err := sa.Close(); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name, path  string
		hadManifest bool
	}{
		{"writer", plainPath, true},
		{"filewriter", f.Name(), true},
		{"containerd", "testdata/containerd-2.4.2-cri-counter.tar", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := copyFile(t, tc.path)
			before, _ := readTar(t, path)
			s := hashSigner{"node"}
			if err := SealFile(path, s, Limits{}); err != nil {
				t.Fatal(err)
			}
			names, bodies := readTar(t, path)
			want := append([]string{}, before...)
			if !tc.hadManifest {
				want = append(want, ManifestFile)
			}
			want = append(want, SignatureFile)
			if strings.Join(names, ",") != strings.Join(want, ",") {
				t.Fatalf("members %v, want %v", names, want)
			}
			sig, _ := s.Sign(bodies[ManifestFile])
			if !bytes.Equal(bodies[SignatureFile], sig) {
				t.Errorf("the signature is not over the manifest's bytes")
			}
			// Extract and Check return the same manifest and signature.
			for what, read := range map[string]func(io.Reader) (*Manifest, error){
				"extract": func(r io.Reader) (*Manifest, error) { return Extract(r, t.TempDir()+"/x", Limits{}, nil) },
				"check":   func(r io.Reader) (*Manifest, error) { return Check(r, Limits{}) },
			} {
				in, _ := os.Open(path)
				m, err := read(in)
				in.Close()
				if err != nil {
					t.Fatalf("%s: %v", what, err)
				}
				if !bytes.Equal(m.Raw, bodies[ManifestFile]) || !bytes.Equal(m.Signature, sig) {
					t.Errorf("%s: manifest or signature differ from the archive's", what)
				}
				if _, listed := m.Sums[SignatureFile]; listed {
					t.Errorf("%s: the signature is listed in the manifest", what)
				}
			}
			if err := SealFile(path, s, Limits{}); err == nil || !strings.Contains(err.Error(), "already signed") {
				t.Errorf("second seal: %v, want already signed", err)
			}
			// sha256sum still checks the extracted archive.
			dir := t.TempDir()
			if out, err := exec.Command("tar", "-xf", path, "-C", dir).CombinedOutput(); err != nil {
				t.Fatalf("tar: %v %s", err, out)
			}
			cmd := exec.Command("sha256sum", "--strict", "-c", ManifestFile)
			cmd.Dir = dir
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("sha256sum -c: %v\n%s", err, out)
			}
		})
	}
}

func TestSignatureRules(t *testing.T) {
	sum := sha256.Sum256([]byte("a"))
	manifest := hex.EncodeToString(sum[:]) + "  a\n"
	tests := []struct {
		name    string
		members []member
		want    error
	}{
		{"signature before manifest", []member{reg("a", "a"), reg(SignatureFile, "sig"), reg(ManifestFile, manifest)}, ErrMisplaced},
		{"signature without manifest", []member{reg("a", "a"), reg(SignatureFile, "sig")}, ErrMisplaced},
		{"member after signature", []member{reg("a", "a"), reg(ManifestFile, manifest), reg(SignatureFile, "sig"), reg("b", "b")}, ErrMisplaced},
		{"two signatures", []member{reg("a", "a"), reg(ManifestFile, manifest), reg(SignatureFile, "sig"), reg(SignatureFile, "sig")}, ErrMisplaced},
		{"huge signature", []member{reg("a", "a"), reg(ManifestFile, manifest), reg(SignatureFile, strings.Repeat("s", maxSignatureBytes+1))}, ErrTooLarge},
		{"tampered member", []member{reg("a", "b"), reg(ManifestFile, manifest), reg(SignatureFile, "sig")}, ErrChecksum},
		{"unlisted member", []member{reg("a", "a"), reg("c", "c"), reg(ManifestFile, manifest), reg(SignatureFile, "sig")}, ErrUnlisted},
		{"symlink", []member{symlink("l", "/etc"), reg("a", "a"), reg(ManifestFile, manifest)}, ErrType},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data := mkTar(t, tc.members...)
			if _, err := Extract(bytes.NewReader(data), t.TempDir(), Limits{}, nil); !errors.Is(err, tc.want) {
				t.Errorf("Extract: %v, want %v", err, tc.want)
			}
			if _, err := Check(bytes.NewReader(data), Limits{}); !errors.Is(err, tc.want) {
				t.Errorf("Check: %v, want %v", err, tc.want)
			}
		})
	}
	m, err := Check(bytes.NewReader(mkTar(t, reg("a", "a"), reg(ManifestFile, manifest), reg(SignatureFile, "sig"))), Limits{})
	if err != nil || string(m.Signature) != "sig" || string(m.Raw) != manifest {
		t.Errorf("good archive: %v %+v", err, m)
	}
}

func TestWritersReserveSignatureName(t *testing.T) {
	if err := NewWriter(io.Discard).AddBytes(SignatureFile, nil); !errors.Is(err, ErrBadName) {
		t.Errorf("Writer: %v", err)
	}
	if err := NewFileWriter(newArchiveFile(t)).AddBytes(SignatureFile, nil); !errors.Is(err, ErrBadName) {
		t.Errorf("FileWriter: %v", err)
	}
}
