package embedded

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRaisePipeMaxSize: raises nest (a FIFO dump's 16 MiB during a live
// migration's 4 MiB), the last one out puts the original back, and a value
// left raised by a dead agent is put back at the next start.
func TestRaisePipeMaxSize(t *testing.T) {
	dir := t.TempDir()
	sysctl := filepath.Join(dir, "pipe-max-size")
	old := pipeMaxSizePath
	pipeMaxSizePath = sysctl
	t.Cleanup(func() { pipeMaxSizePath = old })
	orig := filepath.Join(dir, filePipeMaxSize)
	value := func() string {
		b, _ := os.ReadFile(sysctl)
		return strings.TrimSpace(string(b))
	}
	os.WriteFile(sysctl, []byte("1048576\n"), 0o600)

	raise := func(n int) func() {
		r, err := raisePipeMaxSize(orig, n)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	var live, fifo func()
	steps := []struct {
		name string
		do   func()
		want string
		kept bool // orig holds the value to put back
	}{
		{"live raises to 4 MiB", func() { live = raise(4 << 20) }, "4194304", true},
		{"a dump raises further to 16 MiB", func() { fifo = raise(16 << 20) }, "16777216", true},
		{"the dump is done: still raised for live", func() { fifo() }, "16777216", true},
		{"live is done: back to the original", func() { live() }, "1048576", false},
		{"high enough already: untouched", func() { raise(512 << 10)() }, "1048576", false},
	}
	for _, s := range steps {
		s.do()
		_, err := os.Stat(orig)
		if got := value(); got != s.want || (err == nil) != s.kept {
			t.Errorf("%s: sysctl %s (orig kept: %v), want %s (%v)", s.name, got, err == nil, s.want, s.kept)
		}
	}

	// An agent died with the value raised.
	raise(16 << 20)
	pipeUsers, pipeOld = 0, 0 // the new process knows nothing of it
	r := &Runtime{cfg: Config{StateDir: dir}}
	if msg := r.recoverPipeMaxSize(); msg == "" || value() != "1048576" {
		t.Errorf("recover: %q, sysctl %s; want it put back to 1048576", msg, value())
	}
}
