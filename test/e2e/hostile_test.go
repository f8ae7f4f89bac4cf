package e2e

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// member is one entry of a generated archive.
type member struct {
	hdr  tar.Header
	body []byte
}

func regular(name string, body []byte, mode int64) member {
	return member{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(body))}, body: body}
}

// readMembers loads every member of a plain tar archive.
func readMembers(t *testing.T, path string) []member {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []member
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("read %s: %v", path, err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, member{hdr: *hdr, body: body})
	}
}

// writeTar builds an archive. A member whose body is shorter than its
// declared size gets only its header (the "huge size" case): readers must
// refuse it from the header alone.
func writeTar(t *testing.T, members []member) []byte {
	t.Helper()
	var buf bytes.Buffer
	for _, m := range members {
		var one bytes.Buffer
		tw := tar.NewWriter(&one)
		hdr := m.hdr
		hdr.Format = tar.FormatPAX
		if err := tw.WriteHeader(&hdr); err != nil {
			t.Fatalf("header %q: %v", hdr.Name, err)
		}
		if int64(len(m.body)) < hdr.Size {
			buf.Write(one.Bytes()) // header only
			continue
		}
		tw.Write(m.body)
		tw.Flush()
		buf.Write(one.Bytes())
	}
	buf.Write(make([]byte, 1024)) // end of archive
	return buf.Bytes()
}

// replaceMember returns members with name's body replaced (or added).
func replaceMember(members []member, name string, body []byte) []member {
	out := make([]member, 0, len(members)+1)
	done := false
	for _, m := range members {
		if m.hdr.Name == name {
			m.body, m.hdr.Size = body, int64(len(body))
			done = true
		}
		out = append(out, m)
	}
	if !done {
		out = append(out, regular(name, body, 0o644))
	}
	return out
}

// hostileCase is one malicious archive: built from the members of a real
// checkpoint (without its checksums, so that only the rule under test can
// refuse it).
type hostileCase struct {
	name  string
	build func(base []member) []member
	want  string // in the restore answer
}

// hostileCases escape towards victim, a host directory outside every root
// ckpt uses.
func hostileCases(t *testing.T, victim string) []hostileCase {
	up := strings.Repeat("../", 24) + strings.TrimPrefix(victim, "/")
	pwned := filepath.Join(victim, "pwned")
	add := func(extra ...member) func([]member) []member {
		return func(base []member) []member { return append(append([]member{}, base...), extra...) }
	}
	diff := func(extra ...member) func([]member) []member {
		return func(base []member) []member {
			return replaceMember(base, "rootfs-diff.tar", writeTar(t, extra))
		}
	}
	hdr := func(typ byte, name, link string) member {
		return member{hdr: tar.Header{Typeflag: typ, Name: name, Linkname: link, Mode: 0o644, Devmajor: 1, Devminor: 3}}
	}
	return []hostileCase{
		{"dotdot", add(regular(up+"/pwned", []byte("x"), 0o644)), "path escapes"},
		{"dotdot-inside", add(regular("checkpoint/../../pwned", []byte("x"), 0o644)), "path escapes"},
		{"absolute", add(regular(pwned, []byte("x"), 0o644)), "absolute path"},
		{"symlink-etc", add(hdr(tar.TypeSymlink, "etc", "/etc"), regular("etc/pwned", []byte("x"), 0o644)), "symlink"},
		{"symlink-dir-escape", add(hdr(tar.TypeSymlink, "out", victim), regular("out/pwned", []byte("x"), 0o644)), "symlink"},
		{"hardlink-escape", add(hdr(tar.TypeLink, "passwd", "../../../../etc/passwd")), "path escapes"},
		{"hardlink-absolute", add(hdr(tar.TypeLink, "shadow", "/etc/shadow")), "absolute path"},
		{"char-device", add(hdr(tar.TypeChar, "mem", "")), "member type not allowed"},
		{"block-device", add(hdr(tar.TypeBlock, "sda", "")), "member type not allowed"},
		{"fifo", add(hdr(tar.TypeFifo, "fifo", "")), "member type not allowed"},
		{"huge-member", add(member{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "checkpoint/pages-9.img", Mode: 0o600, Size: 1 << 40}}), "size exceeds the limit"},
		{"diff-setuid", diff(regular("usr/bin/evil", []byte("#!/bin/sh\n"), 0o4755)), "setuid"},
		{"diff-setgid", diff(regular("evil", []byte("x"), 0o2755)), "setuid"},
		{"diff-dotdot", diff(regular(up+"/pwned", []byte("x"), 0o644)), "path escapes"},
		{"diff-symlink-write-through", diff(hdr(tar.TypeSymlink, "hostdir", victim), regular("hostdir/pwned", []byte("x"), 0o644)), "symlink"},
		{"diff-symlink-relative-escape", diff(hdr(tar.TypeSymlink, "up", strings.Repeat("../", 24))), "escapes"},
		{"diff-hardlink-escape", diff(hdr(tar.TypeLink, "passwd", "../../../../../etc/passwd")), "path escapes"},
		{"diff-device", diff(hdr(tar.TypeChar, "dev/mem", "")), "member type not allowed"},
		{"diff-huge", diff(member{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "big", Mode: 0o644, Size: 1 << 40}}), "size exceeds the limit"},
		{"deleted-dotdot", func(base []member) []member {
			b, _ := json.Marshal([]string{up + "/keep"})
			return replaceMember(base, "deleted.files", b)
		}, "escapes"},
		{"deleted-huge", func(base []member) []member {
			return replaceMember(base, "deleted.files", append(append([]byte(`["`), bytes.Repeat([]byte("a"), 17<<20)...), `"]`...))
		}, "size exceeds the limit"},
	}
}

// TestHostileArchivesRefused sends every malicious archive through the
// real POST /restore API (as the request body) and the `ckpt inspect`
// binary. Each is refused with 400 naming the rule, and leaves nothing
// behind: no container, no staging directory, nothing written or removed
// outside the roots. A control archive, built the same way without the
// malice, restores. The archives are unsigned (the agent allows that), so
// that each reaches the rule under test.
func TestHostileArchivesRefused(t *testing.T) {
	a := newAgent(t, withArgs("--restore-allow-unsigned"))
	a.addPod("src", counterManifest("src", nil))
	a.waitRunning("src", "counter")
	path, resp := a.checkpoint("default/src/counter", "")
	if path == "" {
		t.Fatalf("checkpoint: %d %s", resp.status, resp.body)
	}
	var base []member
	for _, m := range readMembers(t, path) {
		if m.hdr.Name != "checksums.sha256" && m.hdr.Name != "checksums.sha256.sig" {
			base = append(base, m)
		}
	}
	victim := t.TempDir()
	keep := filepath.Join(victim, "keep")
	os.WriteFile(keep, []byte("keep"), 0o600)
	dir := t.TempDir()
	before := a.containerDirs()

	for i, c := range hostileCases(t, victim) {
		t.Run(c.name, func(t *testing.T) {
			data := writeTar(t, c.build(base))
			file := filepath.Join(dir, c.name+".tar")
			if err := os.WriteFile(file, data, 0o600); err != nil {
				t.Fatal(err)
			}
			pod := "evil-" + strings.ToLower(strings.ReplaceAll(c.name, "_", "-"))
			got, err := a.post("/restore/default/"+pod+"/counter", testToken, bytes.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			if got.status != http.StatusBadRequest || !strings.Contains(got.body, c.want) {
				t.Errorf("restore %d: %d %q, want 400 with %q", i, got.status, got.body, c.want)
			}
			if out, err := a.ckptErr("inspect", file); err == nil {
				t.Errorf("ckpt inspect accepted it:\n%s", out)
			}
			checkUntouched(t, a, victim, keep, before)
		})
	}

	t.Run("control", func(t *testing.T) {
		got, err := a.post("/restore/default/control/counter", testToken, bytes.NewReader(writeTar(t, base)))
		if err != nil {
			t.Fatal(err)
		}
		if got.status != http.StatusCreated {
			t.Fatalf("the control archive was refused: %d %s", got.status, got.body)
		}
		if out, err := a.ckptErr("inspect", path); err != nil {
			t.Fatalf("inspect of the real archive: %v\n%s", err, out)
		}
	})
}

// innerCase: the malice is inside rootfs-diff.tar or deleted.files.
// checkUntouched: nothing escaped into victim, nothing there was removed,
// and the refused restore left no container or staging directory.
func checkUntouched(t *testing.T, a *agent, victim, keep string, before []string) {
	t.Helper()
	entries, _ := os.ReadDir(victim)
	if len(entries) != 1 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("victim directory holds %v, want only keep", names)
	}
	if _, err := os.Stat(keep); err != nil {
		t.Errorf("a file outside the container was removed: %v", err)
	}
	if got := a.containerDirs(); strings.Join(got, " ") != strings.Join(before, " ") {
		t.Errorf("containers %v after a refused restore, want %v", got, before)
	}
	if left, _ := filepath.Glob(filepath.Join(a.rootDir, "ckpt", "restore-*")); len(left) > 0 {
		t.Errorf("restore staging left behind: %v", left)
	}
}

// containerDirs lists the embedded runtime's container directories.
func (a *agent) containerDirs() []string {
	entries, _ := os.ReadDir(filepath.Join(a.rootDir, "ckpt", "containers"))
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

// post sends a request with a body.
func (a *agent) post(path, token string, body io.Reader) (response, error) {
	return a.send(http.MethodPost, path, token, body)
}
