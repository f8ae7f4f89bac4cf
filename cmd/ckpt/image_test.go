package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
	"time"

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

func TestHumanSize(t *testing.T) {
	for _, tc := range []struct {
		n    int64
		want string
	}{
		{0, "0B"}, {999, "999B"}, {1000, "1kB"}, {1710000, "1.71MB"}, {5 << 30, "5.37GB"}, {1 << 62, "4.61EB"},
	} {
		if got := humanSize(tc.n); got != tc.want {
			t.Errorf("humanSize(%d) = %q, want %q", tc.n, got, tc.want)
		}
	}
}

func TestImageCreated(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		t    time.Time
		want string
	}{
		{time.Time{}, "unknown"},
		{now.Add(-30 * time.Second), "less than a minute ago"},
		{now.Add(-time.Minute), "1 minute ago"},
		{now.Add(-3 * time.Hour), "3 hours ago"},
		{now.Add(-72 * time.Hour), "3 days ago"},
		{time.Date(2024, 1, 2, 0, 0, 0, 0, time.UTC), "2024-01-02"},
	} {
		if got := imageCreated(tc.t, now); got != tc.want {
			t.Errorf("imageCreated(%v) = %q, want %q", tc.t, got, tc.want)
		}
	}
}
