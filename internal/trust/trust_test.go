package trust

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/ckpt-dev/ckpt/internal/archive"
)

const manifest = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  config.dump\n"

func newKey(t *testing.T) (*NodeKey, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "pki")
	k, err := LoadOrCreateNodeKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	return k, dir
}

func TestNodeKeyFiles(t *testing.T) {
	k, dir := newKey(t)
	for name, want := range map[string]os.FileMode{KeyFile: 0o600, PubKeyFile: 0o644, ".": 0o700} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != want {
			t.Errorf("%s: mode %04o, want %04o", name, st.Mode().Perm(), want)
		}
	}
	again, err := LoadOrCreateNodeKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	if Fingerprint(again.PublicKey()) != Fingerprint(k.PublicKey()) {
		t.Error("a second start made a new key")
	}
	pub, err := ReadPublicKeyFile(filepath.Join(dir, PubKeyFile))
	if err != nil || Fingerprint(pub) != Fingerprint(k.PublicKey()) {
		t.Errorf("public key file: %v", err)
	}
	if k.PublicKey().Type() != ssh.KeyAlgoED25519 {
		t.Errorf("key type %s", k.PublicKey().Type())
	}
	os.Chmod(filepath.Join(dir, KeyFile), 0o640)
	if _, err := LoadOrCreateNodeKey(dir); err == nil || !strings.Contains(err.Error(), "readable by others") {
		t.Errorf("group-readable key accepted: %v", err)
	}
}

func TestPolicy(t *testing.T) {
	node, _ := newKey(t)
	other, _ := newKey(t)
	sign := func(k *NodeKey, m string) *archive.Manifest {
		sig, err := k.Sign([]byte(m))
		if err != nil {
			t.Fatal(err)
		}
		return &archive.Manifest{Raw: []byte(m), Signature: sig}
	}
	tampered := sign(node, manifest)
	tampered.Raw = []byte(strings.Replace(manifest, "e3b0", "e3b1", 1))
	swapped := sign(node, manifest)
	swapped.Signature = sign(other, "something else").Signature

	strict := Policy{Keys: NewKeyring(node.PublicKey())}
	loose := Policy{Keys: NewKeyring(node.PublicKey()), AllowUnsigned: true}
	tests := []struct {
		name   string
		m      *archive.Manifest
		policy Policy
		want   error
		text   string
	}{
		{"own key", sign(node, manifest), strict, nil, ""},
		{"no manifest", nil, strict, ErrUnsigned, "--restore-allow-unsigned"},
		{"manifest without signature", &archive.Manifest{Raw: []byte(manifest)}, strict, ErrUnsigned, "not signed"},
		{"unsigned allowed", nil, loose, nil, ""},
		{"untrusted key", sign(other, manifest), loose, ErrUntrusted, Fingerprint(other.PublicKey())},
		{"tampered manifest", tampered, loose, ErrBadSignature, "does not match"},
		{"signature of another manifest", swapped, loose, ErrBadSignature, "not valid"},
		{"garbage signature", &archive.Manifest{Raw: []byte(manifest), Signature: []byte("junk")}, loose, ErrBadSignature, "not valid"},
		{"empty signature", &archive.Manifest{Raw: []byte(manifest), Signature: []byte{}}, loose, ErrBadSignature, "not valid"},
		{"other node trusted", sign(other, manifest), Policy{Keys: NewKeyring(node.PublicKey(), other.PublicKey())}, nil, ""},
		{"no keys at all", sign(node, manifest), Policy{}, ErrUntrusted, "untrusted"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.policy.Verify(tc.m)
			if !errors.Is(err, tc.want) || (err != nil && !strings.Contains(err.Error(), tc.text)) {
				t.Errorf("Verify = %v, want %v with %q", err, tc.want, tc.text)
			}
		})
	}
}

// ckpt's signatures are OpenSSH's: ssh-keygen verifies ours, and ours
// verify what ssh-keygen signs with the node key; another namespace fails.
func TestSSHKeygenCompatible(t *testing.T) {
	if _, err := exec.LookPath("ssh-keygen"); err != nil {
		t.Skip("ssh-keygen not installed")
	}
	k, dir := newKey(t)
	work := t.TempDir()
	msg := filepath.Join(work, archive.ManifestFile)
	os.WriteFile(msg, []byte(manifest), 0o600)
	sig, err := k.Sign([]byte(manifest))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(msg+".sig", sig, 0o600)
	pub, _ := os.ReadFile(filepath.Join(dir, PubKeyFile))
	allowed := filepath.Join(work, "allowed_signers")
	os.WriteFile(allowed, append([]byte("node "), pub...), 0o600)

	verify := exec.Command("ssh-keygen", "-Y", "verify", "-f", allowed, "-I", "node", "-n", Namespace, "-s", msg+".sig")
	verify.Stdin = strings.NewReader(manifest)
	if out, err := verify.CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen -Y verify refused our signature: %v\n%s", err, out)
	}

	for _, ns := range []string{Namespace, "file"} {
		os.Remove(msg + ".sig")
		out, err := exec.Command("ssh-keygen", "-Y", "sign", "-f", filepath.Join(dir, KeyFile), "-n", ns, msg).CombinedOutput()
		if err != nil {
			t.Fatalf("ssh-keygen -Y sign: %v\n%s", err, out)
		}
		theirs, _ := os.ReadFile(msg + ".sig")
		err = Policy{Keys: NewKeyring(k.PublicKey())}.Verify(&archive.Manifest{Raw: []byte(manifest), Signature: theirs})
		if ns == Namespace && err != nil {
			t.Errorf("ssh-keygen's signature refused: %v", err)
		}
		if ns != Namespace && !errors.Is(err, ErrBadSignature) {
			t.Errorf("signature in namespace %q: %v, want ErrBadSignature", ns, err)
		}
	}
}

func TestReadKeysFile(t *testing.T) {
	a, dir := newKey(t)
	b, _ := newKey(t)
	pa, _ := os.ReadFile(filepath.Join(dir, PubKeyFile))
	path := filepath.Join(t.TempDir(), "trusted")
	os.WriteFile(path, []byte("# nodes\n\n"+string(pa)+string(ssh.MarshalAuthorizedKey(b.PublicKey()))), 0o644)
	ring := NewKeyring()
	if err := ring.ReadKeysFile(path); err != nil {
		t.Fatal(err)
	}
	if !ring.Trusted(a.PublicKey()) || !ring.Trusted(b.PublicKey()) || len(ring.Fingerprints()) != 2 {
		t.Errorf("keys %v", ring.Fingerprints())
	}
	for name, content := range map[string]string{
		"options": `command="/bin/sh" ` + string(pa),
		"garbage": "ssh-ed25519 notbase64\n",
	} {
		os.WriteFile(path, []byte(content), 0o644)
		if err := NewKeyring().ReadKeysFile(path); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
