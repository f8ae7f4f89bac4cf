package embedded

import (
	"os"
	"path/filepath"
	"testing"
)

func TestCanStream(t *testing.T) {
	dir := t.TempDir()
	if !canStream(dir) {
		t.Fatal("no FIFO in a temp dir")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("probe left %v", entries)
	}
	if canStream(filepath.Join(dir, "missing")) {
		t.Fatal("FIFOs in a missing directory")
	}
}
