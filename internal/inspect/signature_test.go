package inspect

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ckpt-dev/ckpt/internal/archive"
	"github.com/ckpt-dev/ckpt/internal/trust"
)

func TestInspectSignature(t *testing.T) {
	key, err := trust.LoadOrCreateNodeKey(filepath.Join(t.TempDir(), "pki"))
	if err != nil {
		t.Fatal(err)
	}
	other, err := trust.LoadOrCreateNodeKey(filepath.Join(t.TempDir(), "pki"))
	if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(containerdFixture)
	signed := writeFile(t, data)
	if err := archive.SealFile(signed, key, archive.Limits{}); err != nil {
		t.Fatal(err)
	}
	// The same archive with the signature of another manifest.
	forged := mutate(t, signed, func(m *member) bool {
		if m.hdr.Name == archive.SignatureFile {
			m.data, _ = other.Sign([]byte("another manifest"))
		}
		return true
	})
	fp := trust.Fingerprint(key.PublicKey())
	yes, no := true, false
	tests := []struct {
		name string
		path string
		keys *trust.Keyring
		want Signature
		text string
	}{
		{"unsigned", containerdFixture, nil, Signature{}, "none (unsigned"},
		{"signed, no keys given", signed, nil, Signature{Signed: true, Valid: true, Key: fp, KeyType: "ssh-ed25519"}, "valid, ssh-ed25519 key " + fp},
		{"signed, trusted", signed, trust.NewKeyring(key.PublicKey()), Signature{Signed: true, Valid: true, Key: fp, KeyType: "ssh-ed25519", Trusted: &yes}, "(trusted)"},
		{"signed, untrusted", signed, trust.NewKeyring(other.PublicKey()), Signature{Signed: true, Valid: true, Key: fp, KeyType: "ssh-ed25519", Trusted: &no}, "(NOT trusted)"},
		{"forged", writeFile(t, tarBytes(t, forged)), nil, Signature{Signed: true, Key: trust.Fingerprint(other.PublicKey()), KeyType: "ssh-ed25519"}, "NOT VALID"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Open(tc.path, Options{TrustedKeys: tc.keys})
			if err != nil {
				t.Fatal(err)
			}
			got := c.Signature
			got.Error = ""
			if got.Signed != tc.want.Signed || got.Valid != tc.want.Valid || got.Key != tc.want.Key || got.KeyType != tc.want.KeyType ||
				(got.Trusted == nil) != (tc.want.Trusted == nil) || (got.Trusted != nil && *got.Trusted != *tc.want.Trusted) {
				t.Errorf("signature %+v, want %+v", c.Signature, tc.want)
			}
			if tc.want.Signed && !tc.want.Valid && c.Signature.Error == "" {
				t.Error("no reason given for an invalid signature")
			}
			var out bytes.Buffer
			if err := Render(&out, []*Checkpoint{c}, View{}, "tree"); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out.String(), "Signature: ") || !strings.Contains(out.String(), tc.text) {
				t.Errorf("tree output lacks %q:\n%s", tc.text, out.String())
			}
		})
	}
}
