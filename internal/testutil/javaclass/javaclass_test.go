package javaclass

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

func TestCounterBadInput(t *testing.T) {
	for _, c := range []struct {
		name string
		ms   int64
	}{{"", 10}, {"a.b", 10}, {"a/b", 10}, {"Counter", 0}} {
		if _, err := Counter(c.name, c.ms); err == nil {
			t.Errorf("Counter(%q, %d): no error", c.name, c.ms)
		}
	}
}

// TestCounterRuns runs the class on the machine's JVM, if it has one: the
// class must verify and count 1, 2, 3.
func TestCounterRuns(t *testing.T) {
	java, err := exec.LookPath("java")
	if err != nil {
		t.Skip("no java on this machine")
	}
	b, err := Counter("Counter", 20)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "Counter.class"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, java, "-Xverify:all", "-Xmx32m", "-cp", dir, "Counter")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr safeBuf
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	sc := bufio.NewScanner(out)
	for _, want := range []string{"count 1", "count 2", "count 3"} {
		if !sc.Scan() {
			cmd.Wait()
			t.Fatalf("java stopped before %q: %s", want, stderr.String())
		}
		if sc.Text() != want {
			t.Fatalf("java printed %q, want %q (stderr %s)", sc.Text(), want, stderr.String())
		}
	}
}

type safeBuf struct{ b []byte }

func (s *safeBuf) Write(p []byte) (int, error) { s.b = append(s.b, p...); return len(p), nil }
func (s *safeBuf) String() string              { return string(s.b) }
