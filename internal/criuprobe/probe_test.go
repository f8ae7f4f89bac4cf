package criuprobe

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	RunChildIfRequested()
	os.Exit(m.Run())
}

// TestProbeDumpsSockets runs the real probe with the installed CRIU.
func TestProbeDumpsSockets(t *testing.T) {
	if testing.Short() || os.Getuid() != 0 {
		t.Skip("needs root and CRIU (make test)")
	}
	criu, err := exec.LookPath("criu")
	if err != nil {
		t.Fatal("criu not found: run hack/install-deps.sh")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := Probe(ctx, criu); err != nil {
		t.Fatal(err)
	}
}

// TestProbeReportsCRIUErrors uses a fake criu that fails like CRIU 4.1 on
// a kernel >= 6.16, and checks that the error says so and skips the noise.
func TestProbeReportsCRIUErrors(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process")
	}
	fake := filepath.Join(t.TempDir(), "criu")
	script := `#!/bin/sh
while [ $# -gt 0 ]; do [ "$1" = -D ] && dir=$2; shift; done
printf '%s\n' "(00.01) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted" \
  "(00.02) Error (criu/sockets.c:1): sockets: Can't get 1:34 opt: Operation not supported" > "$dir/dump.log"
exit 1
`
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	err := Probe(context.Background(), fake)
	if err == nil {
		t.Fatal("probe passed with a criu that fails")
	}
	msg := err.Error()
	if !strings.Contains(msg, "Can't get 1:34 opt") || !strings.Contains(msg, "install-deps") || strings.Contains(msg, "RLIMIT_NOFILE") {
		t.Fatalf("error %q: want the socket error, the fix, and no RLIMIT_NOFILE noise", msg)
	}
}
