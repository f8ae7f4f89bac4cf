package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/ckpt-dev/ckpt/internal/archive"
	"github.com/ckpt-dev/ckpt/internal/trust"
)

// withoutSeal drops checksums.sha256 and its signature from members.
func withoutSeal(members []member) []member {
	var out []member
	for _, m := range members {
		if m.hdr.Name != archive.ManifestFile && m.hdr.Name != archive.SignatureFile {
			out = append(out, m)
		}
	}
	return out
}

// resealed recomputes checksums.sha256 over members, the way an attacker
// who edits an archive does, and signs it with signer (nil: unsigned).
// sig, if not nil, is used as the signature instead (a stale one).
func resealed(t *testing.T, members []member, signer archive.Signer, sig []byte) []byte {
	t.Helper()
	members = withoutSeal(members)
	var lines []string
	for _, m := range members {
		if m.hdr.Typeflag == 0 || m.hdr.Typeflag == '0' {
			sum := sha256.Sum256(m.body)
			lines = append(lines, hex.EncodeToString(sum[:])+"  "+strings.TrimPrefix(m.hdr.Name, "./"))
		}
	}
	sort.Slice(lines, func(i, j int) bool { return lines[i][66:] < lines[j][66:] })
	manifest := []byte(strings.Join(lines, "\n") + "\n")
	members = append(members, regular(archive.ManifestFile, manifest, 0o600))
	if signer != nil {
		var err error
		if sig, err = signer.Sign(manifest); err != nil {
			t.Fatal(err)
		}
	}
	if sig != nil {
		members = append(members, regular(archive.SignatureFile, sig, 0o600))
	}
	return writeTar(t, members)
}

func fingerprintOf(t *testing.T, pubFile string) string {
	t.Helper()
	k, err := trust.ReadPublicKeyFile(pubFile)
	if err != nil {
		t.Fatal(err)
	}
	return trust.Fingerprint(k)
}

// inspectSignature runs `ckpt inspect --format json` and returns the
// signature object.
func (a *agent) inspectSignature(path string, args ...string) map[string]any {
	a.t.Helper()
	out := a.ckpt(append([]string{"inspect", "--format", "json", path}, args...)...)
	var got []struct {
		Signature map[string]any `json:"signature"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil || len(got) != 1 {
		a.t.Fatalf("inspect json %q: %v", out, err)
	}
	return got[0].Signature
}

// TestArchiveFromAnotherNode: an archive of one ckpt node restores on
// another only once the second trusts the first's key, through POST
// /restore and `ckpt restore` alike; inspect tells which key signed it.
func TestArchiveFromAnotherNode(t *testing.T) {
	src := newAgent(t)
	dst := newAgent(t)
	src.addPod("counter", counterManifest("counter", nil))
	src.waitRunning("counter-n1", "counter")
	path, resp := src.checkpoint("default/counter-n1/counter", "")
	if path == "" {
		t.Fatalf("checkpoint: %d %s", resp.status, resp.body)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fp := fingerprintOf(t, src.publicKeyFile())
	tokenFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tokenFile, []byte(testToken), 0o600)
	before := dst.containerDirs()

	got, err := dst.post("/restore/default/moved/counter", testToken, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if got.status != http.StatusBadRequest || !strings.Contains(got.body, "signed by an untrusted key "+fp) {
		t.Fatalf("untrusted archive: %d %q, want 400 naming key %s", got.status, got.body, fp)
	}
	out, err := dst.ckptErr("restore", path, "--server", dst.url(""), "--token-file", tokenFile, "--pod", "default/moved")
	if err == nil || !strings.Contains(out, "untrusted key "+fp) {
		t.Fatalf("ckpt restore of an untrusted archive: %v %q", err, out)
	}
	if got := dst.containerDirs(); strings.Join(got, " ") != strings.Join(before, " ") {
		t.Fatalf("a refused restore left containers %v", got)
	}
	// --restore-allow-unsigned does not make a foreign signature good.
	dst.stop()
	dst.extra = append(dst.extra, "--restore-allow-unsigned")
	dst.start()
	if got, _ := dst.post("/restore/default/moved/counter", testToken, bytes.NewReader(data)); got.status != http.StatusBadRequest || !strings.Contains(got.body, fp) {
		t.Fatalf("untrusted archive with --restore-allow-unsigned: %d %q", got.status, got.body)
	}

	empty := filepath.Join(t.TempDir(), "none")
	os.WriteFile(empty, nil, 0o600)
	sig := dst.inspectSignature(path, "--trusted-keys", empty)
	if sig["signed"] != true || sig["valid"] != true || sig["key"] != fp || sig["trusted"] != false {
		t.Errorf("inspect before trust: %v", sig)
	}

	dst.stop()
	dst.extra = append(dst.extra, "--restore-trusted-keys", src.publicKeyFile())
	dst.start()
	if sig := dst.inspectSignature(path, "--trusted-keys", src.publicKeyFile()); sig["trusted"] != true {
		t.Errorf("inspect after trust: %v", sig)
	}
	got, err = dst.post("/restore/default/moved/counter", testToken, bytes.NewReader(data))
	if err != nil || got.status != http.StatusCreated {
		t.Fatalf("trusted archive: %v %d %s", err, got.status, got.body)
	}
	dst.waitRunning("moved", "counter")
	out = dst.ckpt("restore", path, "--server", dst.url(""), "--token-file", tokenFile, "--pod", "default/moved-cli")
	if !strings.Contains(out, "restored default/moved-cli/counter") {
		t.Fatalf("ckpt restore: %q", out)
	}
	dst.waitRunning("moved-cli", "counter")
}

// TestSignatureRefusals: a tampered archive is refused on a node that
// allows only signed archives, whatever signs it.
func TestSignatureRefusals(t *testing.T) {
	a := newAgent(t)
	path := a.counterCheckpoint("src")
	members := readMembers(t, path)
	var nodeSig []byte
	for _, m := range members {
		if m.hdr.Name == archive.SignatureFile {
			nodeSig = m.body
		}
	}
	if nodeSig == nil {
		t.Fatal("the node's archive is not signed")
	}
	marker := filepath.Join(t.TempDir(), "pwned")
	evil := editSpec(t, members, func(s map[string]any) {
		s["hooks"] = map[string]any{"prestart": []any{map[string]any{"path": "/bin/sh", "args": []any{"sh", "-c", "id > " + marker}}}}
	})
	attacker, err := trust.LoadOrCreateNodeKey(filepath.Join(t.TempDir(), "attacker"))
	if err != nil {
		t.Fatal(err)
	}
	before := a.containerDirs()
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"unsigned", resealed(t, evil, nil, nil), "archive is not signed"},
		{"stale signature over edited checksums", resealed(t, evil, nil, nodeSig), "archive signature is not valid"},
		{"signed by an untrusted key", resealed(t, evil, attacker, nil), "untrusted key " + trust.Fingerprint(attacker.PublicKey())},
		{"edited member, original checksums and signature", writeTar(t, append(withoutSeal(evil), sealOf(members)...)), "checksum mismatch"},
		{"containerd archive", mustRead(t, "../../internal/archive/testdata/containerd-2.4.2-cri-counter.tar"), "archive is not signed"},
		{"podman archive", mustRead(t, "../../internal/archive/testdata/podman-4.3.1-export-counter.tar"), "archive is not signed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := a.post("/restore/default/evil/counter", testToken, bytes.NewReader(tc.data))
			if err != nil {
				t.Fatal(err)
			}
			if got.status != http.StatusBadRequest || !strings.Contains(got.body, tc.want) {
				t.Errorf("%d %q, want 400 with %q", got.status, got.body, tc.want)
			}
			file := filepath.Join(t.TempDir(), "a.tar")
			os.WriteFile(file, tc.data, 0o600)
			tokenFile := filepath.Join(t.TempDir(), "token")
			os.WriteFile(tokenFile, []byte(testToken), 0o600)
			if out, err := a.ckptErr("restore", file, "--server", a.url(""), "--token-file", tokenFile, "--pod", "default/evil"); err == nil || !strings.Contains(out, tc.want) {
				t.Errorf("ckpt restore: %v %q, want an error with %q", err, out, tc.want)
			}
			if _, err := os.Stat(marker); err == nil {
				t.Fatal("the archive's hook ran on the host")
			}
			if got := a.containerDirs(); strings.Join(got, " ") != strings.Join(before, " ") {
				t.Errorf("containers %v after a refused restore", got)
			}
		})
	}

	// Unsigned archives from containerd and Podman pass the signature
	// check once the node allows them (they may fail later: another image).
	a.stop()
	a.extra = append(a.extra, "--restore-allow-unsigned")
	a.start()
	for _, fx := range []string{"containerd-2.4.2-cri-counter.tar", "podman-4.3.1-export-counter.tar"} {
		got, err := a.post("/restore/default/peer/counter", testToken, bytes.NewReader(mustRead(t, "../../internal/archive/testdata/"+fx)))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(got.body, "not signed") {
			t.Errorf("%s with --restore-allow-unsigned: %d %q", fx, got.status, got.body)
		}
		t.Logf("%s with --restore-allow-unsigned: %d %s", fx, got.status, strings.TrimSpace(got.body))
		if got.status == http.StatusCreated {
			a.ckpt("rm", "--all")
		}
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

// sealOf returns the manifest and signature members of an archive.
func sealOf(members []member) []member {
	var out []member
	for _, m := range members {
		if m.hdr.Name == archive.ManifestFile || m.hdr.Name == archive.SignatureFile {
			out = append(out, m)
		}
	}
	return out
}

// editSpec returns members with spec.dump changed by fn (as JSON, so that
// every field of the archive's spec survives).
func editSpec(t *testing.T, members []member, fn func(map[string]any)) []member {
	t.Helper()
	out := make([]member, 0, len(members))
	for _, m := range members {
		if m.hdr.Name == "spec.dump" {
			var s map[string]any
			if err := json.Unmarshal(m.body, &s); err != nil {
				t.Fatal(err)
			}
			fn(s)
			b, err := json.Marshal(s)
			if err != nil {
				t.Fatal(err)
			}
			m.body, m.hdr.Size = b, int64(len(b))
		}
		out = append(out, m)
	}
	return out
}
