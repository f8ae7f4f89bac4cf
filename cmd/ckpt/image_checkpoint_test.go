package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"

	"github.com/ckpt-dev/ckpt/internal/archive"
	"github.com/ckpt-dev/ckpt/internal/ckptimage"
)

func TestViaReference(t *testing.T) {
	for _, c := range []struct{ via, archive, want string }{
		{"127.0.0.1:5000/ckpt/counter", "checkpoint-web_default-counter-2026-12-01T20:10:00Z.tar", "127.0.0.1:5000/ckpt/counter:web_default-counter-2026-12-01T20-10-00Z"},
		{"127.0.0.1:5000/ckpt/counter", "checkpoint-web_default-counter-2026-12-01T20:10:00Z.tar.zst.age", "127.0.0.1:5000/ckpt/counter:web_default-counter-2026-12-01T20-10-00Z"},
		{"127.0.0.1:5000/ckpt/counter:keep", "checkpoint-x.tar", "127.0.0.1:5000/ckpt/counter:keep"},
		{"registry.example/a/b", ".tar", "registry.example/a/b:latest"},
	} {
		got, err := viaReference(c.via, c.archive)
		if err != nil || got != c.want {
			t.Errorf("viaReference(%q, %q) = %q, %v; want %q", c.via, c.archive, got, err, c.want)
		}
	}
	if _, err := viaReference("Not A Repo", "x.tar"); err == nil {
		t.Error("accepted a bad --via")
	}
}

func TestIsArchiveName(t *testing.T) {
	for arg, want := range map[string]bool{
		"checkpoint-web_default-counter-2026-12-01T20:10:00Z.tar": true,
		"foo.tar.zst":               true,
		"checkpoint-x":              true,
		"127.0.0.1:5000/ckpt/c:1":   false,
		"localhost/counter-ckpt:v1": false,
		"counter-ckpt":              false,
		"registry.example/x.tar:v1": false,
	} {
		if got := isArchiveName(arg); got != want {
			t.Errorf("isArchiveName(%q) = %v, want %v", arg, got, want)
		}
	}
}

// An encrypted, compressed archive becomes an image of its plain tar.
func TestBuildFromEncryptedArchive(t *testing.T) {
	var plain bytes.Buffer
	w := archive.NewWriter(&plain)
	w.AddJSON("config.dump", map[string]string{"id": "abc", "name": "counter"})
	w.AddJSON("spec.dump", map[string]any{"annotations": map[string]string{"io.container.manager": "ckpt"}})
	w.AddBytes("checkpoint/inventory.img", []byte("x"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	idFile := filepath.Join(dir, "id.txt")
	os.WriteFile(idFile, []byte(id.String()+"\n"), 0o600)
	var enc bytes.Buffer
	ew, _, err := archive.NewEncodingWriter(&enc, true, []age.Recipient{id.Recipient()})
	if err != nil {
		t.Fatal(err)
	}
	ew.Write(plain.Bytes())
	ew.Close()
	file := filepath.Join(dir, "a.tar.zst.age")
	os.WriteFile(file, enc.Bytes(), 0o600)

	s, err := ckptimage.Open(filepath.Join(dir, "store"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := buildCheckpointImage(s, file, nil, "localhost/x"); !errors.Is(err, archive.ErrNoIdentity) {
		t.Errorf("without an identity: %v", err)
	}
	ids, err := loadIdentities(idFile)
	if err != nil {
		t.Fatal(err)
	}
	e, err := buildCheckpointImage(s, file, ids, "localhost/x")
	if err != nil {
		t.Fatal(err)
	}
	if e.Container != "counter" {
		t.Errorf("entry %+v", e)
	}
	rc, _, err := s.OpenArchive(context.Background(), "localhost/x", false, ckptimage.RemoteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if err != nil || !bytes.Equal(got, plain.Bytes()) {
		t.Errorf("image layer is not the plain archive (%v)", err)
	}
	if left, _ := os.ReadDir(filepath.Join(s.Dir(), "tmp")); len(left) != 0 {
		t.Errorf("%d staging files left", len(left))
	}
}

func TestUnknownSubcommandOfAGroupFails(t *testing.T) {
	for _, args := range [][]string{{"image", "frob"}, {"checkpoints", "frob"}} {
		root := newRootCommand()
		root.SetArgs(args)
		root.SetOut(io.Discard)
		root.SetErr(io.Discard)
		if err := root.Execute(); err == nil || !strings.Contains(err.Error(), `unknown command "frob"`) {
			t.Errorf("ckpt %v: %v, want unknown command", args, err)
		}
	}
	root := newRootCommand()
	root.SetArgs([]string{"image"})
	root.SetOut(io.Discard)
	if err := root.Execute(); err != nil {
		t.Errorf("ckpt image (help): %v", err)
	}
}

func TestExplicitRegistry(t *testing.T) {
	for ref, want := range map[string]bool{
		"127.0.0.1:5000/ckpt/c:1": true, "registry.example.com/a": true, "localhost/a:1": true,
		"foo/bar": false, "counter": false, "./x.tar": false,
	} {
		if got := explicitRegistry(ref); got != want {
			t.Errorf("explicitRegistry(%q) = %v", ref, got)
		}
	}
}
