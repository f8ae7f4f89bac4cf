// Package trust signs checkpoint archives with the node's key and decides,
// on restore and inspect, whether an archive's signature is good and whose
// it is. Signatures are SSH signatures (sshsig, what `ssh-keygen -Y sign`
// writes) over the exact bytes of checksums.sha256, in namespace
// "ckpt-checkpoint"; keys are ed25519 and listed in authorized_keys format.
package trust

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/hiddeco/sshsig"
	"golang.org/x/crypto/ssh"

	"github.com/ckpt-dev/ckpt/internal/archive"
)

// Namespace is the sshsig namespace of archive signatures: a signature made
// for anything else (git commits, files) never verifies as an archive's.
const Namespace = "ckpt-checkpoint"

// hashAlgo is the hash the signature is made over.
const hashAlgo = sshsig.HashSHA512

// Key file names under <root-dir>/pki.
const (
	KeyFile    = "checkpoint-signing.key"
	PubKeyFile = "checkpoint-signing.pub"
)

// Why a restore refuses an archive, defined with the format so that the
// checkpoint service answers them as invalid input (400).
var (
	ErrUnsigned     = archive.ErrUnsigned
	ErrBadSignature = archive.ErrBadSignature
	ErrUntrusted    = archive.ErrUntrusted
)

// NodeKey is the node's signing key.
type NodeKey struct {
	signer ssh.Signer
}

// LoadOrCreateNodeKey reads dir/checkpoint-signing.key, generating an
// ed25519 key there (0600; the directory, if new, 0700) the first time,
// and (re)writes the public key beside it for other nodes to trust.
func LoadOrCreateNodeKey(dir string) (*NodeKey, error) {
	path := filepath.Join(dir, KeyFile)
	k, err := loadKey(path)
	if errors.Is(err, os.ErrNotExist) {
		if err = createKey(dir, path); err == nil {
			k, err = loadKey(path)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("node signing key: %w", err)
	}
	pub := ssh.MarshalAuthorizedKey(k.PublicKey())
	if old, err := os.ReadFile(filepath.Join(dir, PubKeyFile)); err != nil || !bytes.Equal(old, pub) {
		if err := writeFileAtomic(dir, PubKeyFile, pub, 0o644); err != nil {
			return nil, fmt.Errorf("node signing key: %w", err)
		}
	}
	return k, nil
}

func loadKey(path string) (*NodeKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s is readable by others (mode %04o): chmod 600 it", path, st.Mode().Perm())
	}
	s, err := ssh.ParsePrivateKey(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if s.PublicKey().Type() != ssh.KeyAlgoED25519 {
		return nil, fmt.Errorf("%s: %s key, want ed25519", path, s.PublicKey().Type())
	}
	return &NodeKey{signer: s}, nil
}

// createKey writes a new key; of two agents starting at once, one wins and
// both load its key.
func createKey(dir, path string) error {
	// A new directory is 0700; an existing one (the kubelet's pki under
	// /var/lib/kubelet) keeps its mode: the key file itself is 0600.
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	block, err := ssh.MarshalPrivateKey(priv, "ckpt checkpoint signing key")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".key-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(pem.EncodeToMemory(block)); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Link(tmp.Name(), path); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	return nil
}

func writeFileAtomic(dir, name string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(dir, "."+name+"-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), filepath.Join(dir, name))
}

// PublicKey is the node's public key.
func (k *NodeKey) PublicKey() ssh.PublicKey { return k.signer.PublicKey() }

// Sign returns an armored SSH signature over manifest, the same bytes
// `ssh-keygen -Y sign -n ckpt-checkpoint -f KEY checksums.sha256` writes.
func (k *NodeKey) Sign(manifest []byte) ([]byte, error) {
	sig, err := sshsig.Sign(bytes.NewReader(manifest), k.signer, hashAlgo, Namespace)
	if err != nil {
		return nil, fmt.Errorf("sign checksums.sha256: %w", err)
	}
	return sshsig.Armor(sig), nil
}

// Fingerprint is the SHA256 fingerprint of a key, as ssh-keygen -l shows it.
func Fingerprint(k ssh.PublicKey) string { return ssh.FingerprintSHA256(k) }

// Keyring is a set of trusted public keys.
type Keyring struct {
	keys map[string]ssh.PublicKey // by fingerprint
}

// NewKeyring holds keys.
func NewKeyring(keys ...ssh.PublicKey) *Keyring {
	k := &Keyring{keys: map[string]ssh.PublicKey{}}
	for _, key := range keys {
		k.Add(key)
	}
	return k
}

// Add trusts key.
func (k *Keyring) Add(key ssh.PublicKey) { k.keys[Fingerprint(key)] = key }

// Trusted reports whether key is in the ring.
func (k *Keyring) Trusted(key ssh.PublicKey) bool {
	if k == nil {
		return false
	}
	_, ok := k.keys[Fingerprint(key)]
	return ok
}

// Fingerprints lists the ring's keys, sorted.
func (k *Keyring) Fingerprints() []string {
	out := make([]string, 0, len(k.keys))
	for f := range k.keys {
		out = append(out, f)
	}
	sort.Strings(out)
	return out
}

// maxKeysFileBytes bounds a trusted-keys file.
const maxKeysFileBytes = 1 << 20

// ReadKeysFile adds the keys of an authorized_keys-style file: one public
// key per line ("ssh-ed25519 AAAA... comment"), blank lines and # comments
// ignored. Options before the key are refused rather than ignored, since
// none has a meaning here.
func (k *Keyring) ReadKeysFile(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("trusted keys: %w", err)
	}
	if len(data) > maxKeysFileBytes {
		return fmt.Errorf("trusted keys %s: larger than %d bytes", path, maxKeysFileBytes)
	}
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, _, options, _, err := ssh.ParseAuthorizedKey([]byte(line))
		if err != nil {
			return fmt.Errorf("trusted keys %s line %d: %w", path, i+1, err)
		}
		if len(options) > 0 {
			return fmt.Errorf("trusted keys %s line %d: key options (%s) are not supported", path, i+1, strings.Join(options, ","))
		}
		k.Add(key)
	}
	return nil
}

// ReadPublicKeyFile reads one public key in authorized_keys format, such as
// <root-dir>/pki/checkpoint-signing.pub.
func ReadPublicKeyFile(path string) (ssh.PublicKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	key, _, _, _, err := ssh.ParseAuthorizedKey(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return key, nil
}

// Signature is what an archive's signature says.
type Signature struct {
	Signed bool
	// Key signed the archive (nil when unsigned or unparsable).
	Key ssh.PublicKey
	// Err is why the signature is not valid; nil when it is.
	Err error
}

// Fingerprint of the signing key, "" when unknown.
func (s Signature) Fingerprint() string {
	if s.Key == nil {
		return ""
	}
	return Fingerprint(s.Key)
}

// Examine checks an archive's signature over its raw manifest against the
// key the signature names. It says nothing about trust. A nil manifest, or
// one without a signature, is unsigned.
func Examine(m *archive.Manifest) Signature {
	if m == nil || m.Signature == nil {
		return Signature{}
	}
	s := Signature{Signed: true}
	sig, err := sshsig.Unarmor(m.Signature)
	if err != nil {
		s.Err = fmt.Errorf("%w: %s: %v", ErrBadSignature, archive.SignatureFile, err)
		return s
	}
	s.Key = sig.PublicKey
	if err := sshsig.Verify(bytes.NewReader(m.Raw), sig, sig.PublicKey, sig.HashAlgorithm, Namespace); err != nil {
		s.Err = fmt.Errorf("%w: %s does not match %s signed by %s (%v)", ErrBadSignature,
			archive.SignatureFile, archive.ManifestFile, Fingerprint(sig.PublicKey), err)
	}
	return s
}

// Policy is what a node accepts on restore.
type Policy struct {
	// Keys are trusted; the node's own key belongs in it.
	Keys *Keyring
	// AllowUnsigned restores archives that carry no signature (written by
	// containerd, CRI-O or Podman). A bad or untrusted signature is still
	// refused: it is not "unsigned", it is wrong.
	AllowUnsigned bool
}

// Verify decides whether a restore may use an archive whose checksums
// were verified against m (nil: the archive has no manifest). Its errors
// wrap ErrUnsigned, ErrBadSignature or ErrUntrusted and say why.
func (p Policy) Verify(m *archive.Manifest) error {
	s := Examine(m)
	switch {
	case !s.Signed:
		if p.AllowUnsigned {
			return nil
		}
		return fmt.Errorf("%w (no %s): it was not written by a ckpt node, and this node restores unsigned archives "+
			"(from containerd, CRI-O or Podman) only when started with --restore-allow-unsigned", ErrUnsigned, archive.SignatureFile)
	case s.Err != nil:
		return s.Err
	case !p.Keys.Trusted(s.Key):
		return fmt.Errorf("%w %s: add that node's %s to the file given to --restore-trusted-keys", ErrUntrusted, s.Fingerprint(), PubKeyFile)
	}
	return nil
}
