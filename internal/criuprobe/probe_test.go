package criuprobe

import (
	"context"
	"fmt"
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

// TestCachedProbesOncePerBinary counts the runs of a fake criu, for each
// cached probe: a pass is remembered until the binary changes, a failure
// never, and one probe's pass is not the other's.
func TestCachedProbesOncePerBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process")
	}
	probes := map[string]func(context.Context, string, string) error{"sockets": Cached, "userfaultfd": CachedUserfaultfd}
	for name, probe := range probes {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			runs := filepath.Join(dir, "runs")
			fake := filepath.Join(dir, "criu")
			write := func(exit int) {
				script := fmt.Sprintf("#!/bin/sh\necho run >> %s\nexit %d\n", runs, exit)
				if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			count := func() int {
				b, _ := os.ReadFile(runs)
				return strings.Count(string(b), "run\n")
			}
			cache := filepath.Join(dir, "cache")
			ctx := context.Background()
			for _, c := range []struct {
				name    string
				rewrite bool
				exit    int
				wantErr bool
				runs    int
			}{
				{"first probe runs", true, 0, false, 1},
				{"a pass is remembered", false, 0, false, 1},
				{"a changed binary is probed", true, 1, true, 2},
				{"a failure is not remembered", false, 1, true, 3},
				{"a fixed binary is probed", true, 0, false, 4},
				{"and remembered", false, 0, false, 4},
			} {
				if c.rewrite {
					time.Sleep(10 * time.Millisecond) // a new modification time
					write(c.exit)
				}
				err := probe(ctx, fake, cache)
				if (err != nil) != c.wantErr || count() != c.runs {
					t.Errorf("%s: err %v, %d runs; want error %v, %d runs", c.name, err, count(), c.wantErr, c.runs)
				}
			}
			for other, otherProbe := range probes {
				if other == name {
					continue
				}
				if otherProbe(ctx, fake, cache); count() != 5 {
					t.Errorf("the %s probe's pass was taken for %s's: %d runs, want 5", name, other, count())
				}
			}
		})
	}
}

// TestUserfaultfd asks a fake criu for the feature: its answer decides,
// and a refusal says what criu said.
func TestUserfaultfd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process")
	}
	dir := t.TempDir()
	args := filepath.Join(dir, "args")
	fake := filepath.Join(dir, "criu")
	for _, c := range []struct {
		name, output string
		exit         int
		wantErr      string
	}{
		{"supported", "Looks good.", 0, ""},
		{"refused", "Error (criu/kerndat.c:1): UFFD is not supported", 1, "UFFD is not supported"},
	} {
		script := fmt.Sprintf("#!/bin/sh\necho \"$@\" > %s\necho '%s'\nexit %d\n", args, c.output, c.exit)
		if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		err := Userfaultfd(context.Background(), fake)
		if got, _ := os.ReadFile(args); strings.TrimSpace(string(got)) != "check --feature uffd-noncoop" {
			t.Errorf("%s: criu was run with %q", c.name, got)
		}
		switch {
		case c.wantErr == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
			t.Errorf("%s: error %v, want one saying %q", c.name, err, c.wantErr)
		}
	}
	if os.Getuid() == 0 {
		if criu, err := exec.LookPath("criu"); err == nil {
			if err := Userfaultfd(context.Background(), criu); err != nil {
				t.Errorf("the installed criu: %v (make test needs userfaultfd for lazy restore)", err)
			}
		}
	}
}
