package main

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func runCkpt(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newRootCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

func TestImageCommands(t *testing.T) {
	dir := t.TempDir()
	img, err := random.Image(1024, 2)
	if err != nil {
		t.Fatal(err)
	}
	tar := filepath.Join(dir, "r.tar")
	if err := tarball.WriteToFile(tar, name.MustParseReference("localhost/rand:1").(name.Tag), img); err != nil {
		t.Fatal(err)
	}
	id, _ := img.ConfigName()
	root := filepath.Join(dir, "root")

	out, err := runCkpt(t, "--root-dir", root, "image", "import", tar)
	if err != nil || !strings.Contains(out, "localhost/rand:1 "+id.String()) {
		t.Fatalf("import: %v\n%s", err, out)
	}
	out, err = runCkpt(t, "--root-dir", root, "image", "ls")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || strings.Join(strings.Fields(lines[0]), " ") != "NAME ID SIZE CREATED" ||
		!strings.HasPrefix(lines[1], "localhost/rand:1") || !strings.Contains(lines[1], id.Hex[:12]+" ") {
		t.Fatalf("ls:\n%s", out)
	}
	out, err = runCkpt(t, "--root-dir", root, "image", "ls", "-o", "json")
	var entries []imageEntry
	if err != nil || json.Unmarshal([]byte(out), &entries) != nil || len(entries) != 1 || entries[0].ID != id.String() ||
		len(entries[0].Names) != 1 || entries[0].Names[0] != "localhost/rand:1" || entries[0].Size <= 0 {
		t.Fatalf("ls -o json: %v\n%s", err, out)
	}
	if out, err = runCkpt(t, "--root-dir", root, "image", "ls", "-o", "yaml"); err != nil || !strings.Contains(out, "- localhost/rand:1") {
		t.Fatalf("ls -o yaml: %v\n%s", err, out)
	}
	if out, err = runCkpt(t, "--root-dir", root, "image", "ls", "-o", "wide"); err != nil || !strings.Contains(out, id.String()) {
		t.Fatalf("ls -o wide: %v\n%s", err, out)
	}
	if out, err := runCkpt(t, "--root-dir", root, "image", "rm", "rand:1"); err != nil || !strings.Contains(out, id.String()) {
		t.Fatalf("rm: %v\n%s", err, out)
	}
	if _, err := runCkpt(t, "--root-dir", root, "image", "rm", "rand:1"); err == nil || !strings.Contains(err.Error(), `image "rand:1" not found`) {
		t.Fatalf("second rm: %v", err)
	}
	if _, err := runCkpt(t, "--root-dir", root, "image", "import", filepath.Join(dir, "missing.tar")); err == nil || !strings.Contains(err.Error(), "missing.tar") {
		t.Fatalf("import of a missing file: %v", err)
	}
}
