package e2e

import (
	"archive/tar"
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Reliability suites (issue 7). Each logs its measurements as lines that
// start with "FIGURE" (go test -v), which docs/reliability.md reports.

// killTrials is the number of SIGKILL trials; CKPT_KILL_TRIALS overrides it
// (hack/soak.sh runs more).
func killTrials() int {
	if n, err := strconv.Atoi(os.Getenv("CKPT_KILL_TRIALS")); err == nil && n > 0 {
		return n
	}
	return 20
}

// TestAgentKilledDuringCheckpoint SIGKILLs the agent at random moments of a
// checkpoint. In every trial the container keeps running, unfrozen, and
// keeps writing; no partial archive exists under a final name (every
// published archive is complete and matches its checksums); the next
// start of the agent empties the staging directory.
func TestAgentKilledDuringCheckpoint(t *testing.T) {
	a := newAgent(t)
	a.addPod("counter", counterManifest("counter", nil))
	short := a.waitRunning("counter-n1", "counter")
	id := a.fullID(short)
	logPath := a.containerLog(short)

	// How long one checkpoint takes here: the kills are spread over it.
	start := time.Now()
	if path, resp := a.checkpoint("default/counter-n1/counter", ""); path == "" {
		t.Fatalf("checkpoint: %d %s", resp.status, resp.body)
	}
	span := time.Since(start)

	var frozenAtKill, stagingAtKill, published, orphanWaits int
	var maxFrozenAfter time.Duration
	for trial := 0; trial < killTrials(); trial++ {
		// Odd trials kill at the worst moment, as soon as the dump has
		// frozen the container; even ones at a random point of a
		// checkpoint's span.
		delay := time.Duration(rand.Int64N(int64(span + span/5)))
		done := make(chan struct{})
		start := time.Now()
		go func() {
			defer close(done)
			a.do("POST", "/checkpoint/default/counter-n1/counter", testToken) // cut short by the kill
		}()
		if trial%2 == 1 {
			for !isFrozen(id) && time.Since(start) < 2*span {
				time.Sleep(200 * time.Microsecond)
			}
			delay = time.Since(start)
		} else {
			time.Sleep(delay)
		}
		frozen := isFrozen(id)
		staged := len(stagingEntries(t, a)) > 0
		a.stopWith(syscall.SIGKILL)
		killed := time.Now()
		<-done
		if frozen {
			frozenAtKill++
		}
		if staged {
			stagingAtKill++
		}

		// runc and CRIU run in their own process group and finish the
		// dump they started; then the container must be thawed.
		if a.waitOrphans(90 * time.Second) {
			orphanWaits++
		}
		waitThawed(t, id, 90*time.Second)
		if d := time.Since(killed); frozen && d > maxFrozenAfter {
			maxFrozenAfter = d
		}
		if line := a.psLine("counter-n1", "counter"); !strings.Contains(line, " running ") {
			t.Fatalf("trial %d (kill after %v): container not running: %q", trial, delay, line)
		}
		keepsCounting(t, logPath)
		for _, p := range finalArchives(t, a) {
			verifyComplete(t, p)
		}

		a.start()
		if left := stagingEntries(t, a); len(left) > 0 {
			t.Fatalf("trial %d: staging holds %v after the restart", trial, left)
		}
		if got := a.waitRunning("counter-n1", "counter"); got != short {
			t.Fatalf("trial %d: agent adopted %s, want %s", trial, got, short)
		}
	}
	published = len(finalArchives(t, a)) - 1
	t.Logf("FIGURE agent-kill: trials=%d checkpoint-span=%v killed-while-frozen=%d killed-with-staging=%d archives-published-before-kill=%d trials-with-orphan-dump=%d max-frozen-after-kill=%v",
		killTrials(), span.Round(time.Millisecond), frozenAtKill, stagingAtKill, published, orphanWaits, maxFrozenAfter.Round(time.Millisecond))

	// The odd trials wait for the freeze before killing: if none landed
	// while the container was frozen, the worst case was never tried.
	if frozenAtKill == 0 {
		t.Errorf("no kill of %d landed while the container was frozen", killTrials())
	}

	// And the agent still checkpoints.
	if path, resp := a.checkpoint("default/counter-n1/counter", ""); path == "" {
		t.Fatalf("checkpoint after the trials: %d %s", resp.status, resp.body)
	}
}

// TestRuntimeFailures: CRIU killed during a dump, runc failing, and a full
// disk. Each gets a 500 naming its cause, leaves no archive or staging
// behind, and the container keeps running unfrozen.
func TestRuntimeFailures(t *testing.T) {
	needE2E(t)
	for _, dir := range []string{"/usr/local/sbin", "/usr/local/bin"} {
		if _, err := os.Stat(filepath.Join(dir, "runc")); err == nil {
			t.Skipf("%s/runc exists: ckpt prefers it over PATH, so the failure-injecting runc wrapper cannot be put in front", dir)
		}
	}
	realRunc, err := exec.LookPath("runc")
	if err != nil {
		t.Skip("runc not on PATH")
	}
	realCriu := "/usr/local/sbin/criu"
	if _, err := os.Stat(realCriu); err != nil {
		if realCriu, err = exec.LookPath("criu"); err != nil {
			t.Skip("criu not found")
		}
	}
	inject := installWrappers(t, realRunc, realCriu)

	a := newAgent(t)
	a.addPod("counter", counterManifest("counter", nil))
	short := a.waitRunning("counter-n1", "counter")
	id := a.fullID(short)
	logPath := a.containerLog(short)
	if path, resp := a.checkpoint("default/counter-n1/counter", ""); path == "" {
		t.Fatalf("checkpoint through the wrappers: %d %s", resp.status, resp.body)
	}

	// after checks what every failure must leave: nothing.
	after := func(t *testing.T, archivesBefore int) {
		t.Helper()
		waitThawed(t, id, 10*time.Second)
		if line := a.psLine("counter-n1", "counter"); !strings.Contains(line, " running ") {
			t.Fatalf("container not running: %q", line)
		}
		keepsCounting(t, logPath)
		if left := stagingEntries(t, a); len(left) > 0 {
			t.Errorf("staging holds %v", left)
		}
		if n := len(finalArchives(t, a)); n != archivesBefore {
			t.Errorf("%d archives, want %d", n, archivesBefore)
		}
	}

	t.Run("runc-fails", func(t *testing.T) {
		before := len(finalArchives(t, a))
		os.WriteFile(filepath.Join(inject, "fail-checkpoint"), nil, 0o600)
		defer os.Remove(filepath.Join(inject, "fail-checkpoint"))
		resp, err := a.do("POST", "/checkpoint/default/counter-n1/counter", testToken)
		if err != nil {
			t.Fatal(err)
		}
		if resp.status != 500 || !strings.HasPrefix(resp.body, "checkpointing of default/counter-n1/counter failed (") ||
			!strings.Contains(resp.body, "injected runc failure") {
			t.Fatalf("answer %d %q, want 500 naming the injected failure", resp.status, resp.body)
		}
		t.Logf("FIGURE runc-fails: %d %s", resp.status, resp.body)
		after(t, before)
	})

	t.Run("criu-killed", func(t *testing.T) {
		before := len(finalArchives(t, a))
		pids := filepath.Join(inject, "criu.pids")
		os.Remove(pids)
		type result struct {
			resp response
			err  error
		}
		done := make(chan result, 1)
		go func() {
			r, err := a.do("POST", "/checkpoint/default/counter-n1/counter", testToken)
			done <- result{r, err}
		}()
		// Kill the CRIU that froze the container, by its PID.
		var killed int
		deadline := time.Now().Add(30 * time.Second)
		for killed == 0 && time.Now().Before(deadline) {
			if isFrozen(id) {
				if pid := lastCriu(pids); pid > 0 {
					if err := syscall.Kill(pid, syscall.SIGKILL); err == nil {
						killed = pid
					}
				}
			}
			time.Sleep(500 * time.Microsecond)
		}
		r := <-done
		if killed == 0 {
			t.Skipf("the dump finished before CRIU could be caught with the container frozen (%d %s)", r.resp.status, r.resp.body)
		}
		if r.err != nil {
			t.Fatal(r.err)
		}
		if r.resp.status != 500 || !strings.HasPrefix(r.resp.body, "checkpointing of default/counter-n1/counter failed (") ||
			!strings.Contains(r.resp.body, "runc checkpoint") {
			t.Fatalf("answer %d %q, want 500 naming runc/CRIU", r.resp.status, r.resp.body)
		}
		t.Logf("FIGURE criu-killed: pid %d; %d %s", killed, r.resp.status, r.resp.body)
		after(t, before)
	})

	t.Run("disk-full", func(t *testing.T) {
		// The checkpoints directory on a 256 KiB tmpfs: the counter's
		// images (~700 KiB) cannot fit. The agent is restarted on it.
		dir := filepath.Join(a.rootDir, "checkpoints")
		a.stop()
		if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "ckpt-e2e-full", dir).CombinedOutput(); err != nil {
			a.start()
			t.Skipf("cannot mount a small tmpfs: %v %s", err, out)
		}
		t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
		a.start()
		resp, err := a.do("POST", "/checkpoint/default/counter-n1/counter", testToken)
		if err != nil {
			t.Fatal(err)
		}
		if resp.status != 500 || !strings.HasPrefix(resp.body, "checkpointing of default/counter-n1/counter failed (") ||
			!strings.Contains(strings.ToLower(resp.body), "no space left on device") {
			t.Fatalf("answer %d %q, want 500 naming the full disk", resp.status, resp.body)
		}
		t.Logf("FIGURE disk-full: %d %s", resp.status, resp.body)
		after(t, 0)
		var st syscall.Statfs_t
		if err := syscall.Statfs(dir, &st); err == nil && st.Bfree != st.Blocks {
			t.Errorf("the full file system holds %d KiB after the failure", (st.Blocks-st.Bfree)*uint64(st.Bsize)/1024)
		}
	})
}

// TestCheckpointTimeoutLargeContainer: timeout=1 on a container holding
// 4 GiB answers 500 (a timeout), and the container keeps running. The
// agent runs with --checkpoint-timeout-strict (by default a timeout below
// --runtime-request-timeout does not shorten the wait, as in the kubelet).
func TestCheckpointTimeoutLargeContainer(t *testing.T) {
	if testing.Short() {
		t.Skip("needs 4 GiB of memory for the container")
	}
	a := newAgent(t, withArgs("--checkpoint-timeout-strict"))
	a.addPod("big", counterManifest("big", map[string]string{"COUNTER_MEM_MIB": "4096"}))
	short := a.waitRunning("big-n1", "counter")
	id := a.fullID(short)
	logPath := a.containerLog(short)
	// The counter touches its memory before the first line (seconds here).
	a.waitFor(func() bool { return len(countsIn(t, logPath)) > 0 }, "the 4 GiB counter's first line")
	keepsCounting(t, logPath)

	start := time.Now()
	resp, err := a.do("POST", "/checkpoint/default/big-n1/counter?timeout=1", testToken)
	elapsed := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if resp.status != 500 || !strings.Contains(resp.body, "timed out") {
		t.Fatalf("answer %d %q, want 500 timed out", resp.status, resp.body)
	}
	waitThawed(t, id, 10*time.Second)
	thawedAfter := time.Since(start)
	keepsCounting(t, logPath)
	if left := stagingEntries(t, a); len(left) > 0 {
		t.Errorf("staging holds %v", left)
	}
	if n := len(finalArchives(t, a)); n != 0 {
		t.Errorf("%d archives after a timeout", n)
	}
	t.Logf("FIGURE timeout-4GiB: answered 500 after %v, thawed by %v: %s", elapsed.Round(time.Millisecond), thawedAfter.Round(time.Millisecond), resp.body)
}

// installWrappers puts a runc wrapper first on PATH (for the agents this
// test starts). It passes everything to the real runc, except that it
// fails `checkpoint` while <dir>/fail-checkpoint exists, and it hands runc
// a CRIU wrapper that appends its PID to <dir>/criu.pids.
func installWrappers(t *testing.T, realRunc, realCriu string) (dir string) {
	t.Helper()
	dir = t.TempDir()
	criu := filepath.Join(dir, "criu")
	os.WriteFile(criu, []byte(fmt.Sprintf("#!/bin/sh\necho $$ >> %q\nexec %q \"$@\"\n", filepath.Join(dir, "criu.pids"), realCriu)), 0o755)
	runc := fmt.Sprintf(`#!/bin/bash
args=()
while [ $# -gt 0 ]; do
	case "$1" in
	--criu) args+=(--criu %q); shift 2; continue ;;
	checkpoint)
		if [ -e %q ]; then echo "injected runc failure" >&2; exit 1; fi ;;
	esac
	args+=("$1"); shift
done
exec %q "${args[@]}"
`, criu, filepath.Join(dir, "fail-checkpoint"), realRunc)
	bin := filepath.Join(dir, "bin")
	os.Mkdir(bin, 0o755)
	os.WriteFile(filepath.Join(bin, "runc"), []byte(runc), 0o755)
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	return dir
}

// lastCriu returns the PID the CRIU wrapper wrote last, if that process
// is still a CRIU.
func lastCriu(pidsFile string) int {
	b, err := os.ReadFile(pidsFile)
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	pid, _ := strconv.Atoi(f[len(f)-1])
	cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if !strings.Contains(string(cmd), "criu") {
		return 0
	}
	return pid
}

// fullID returns the full container ID for a short one.
func (a *agent) fullID(short string) string {
	a.t.Helper()
	m, _ := filepath.Glob(filepath.Join(a.rootDir, "ckpt", "containers", short+"*"))
	if len(m) != 1 {
		a.t.Fatalf("container %s: %v", short, m)
	}
	return filepath.Base(m[0])
}

// freezerState reads the container's cgroup v1 freezer ("THAWED",
// "FREEZING", "FROZEN"), or cgroup v2's cgroup.freeze as THAWED/FROZEN,
// or "NONE" when neither file exists.
func freezerState(id string) string {
	if b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/freezer/ckpt", id, "freezer.state")); err == nil {
		return strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/ckpt", id, "cgroup.freeze")); err == nil {
		if strings.TrimSpace(string(b)) == "1" {
			return "FROZEN"
		}
		return "THAWED"
	}
	return "NONE" // no freezer file: the container's cgroup is gone, or none was found
}

// isFrozen reports whether the container's freezer is FROZEN or FREEZING
// (a missing freezer is not "thawed": it is no answer).
func isFrozen(id string) bool {
	s := freezerState(id)
	return s == "FROZEN" || s == "FREEZING"
}

func waitThawed(t *testing.T, id string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for freezerState(id) != "THAWED" {
		if time.Now().After(deadline) {
			t.Fatalf("container %s still %s", id, freezerState(id))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitOrphans waits for runc processes of this agent's root to end and
// reports whether there were any.
func (a *agent) waitOrphans(within time.Duration) bool {
	a.t.Helper()
	root := filepath.Join(a.rootDir, "ckpt", "runc")
	any := false
	deadline := time.Now().Add(within)
	for {
		found := false
		procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
		for _, p := range procs {
			b, _ := os.ReadFile(p)
			if strings.Contains(string(b), root) && strings.Contains(string(b), "\x00checkpoint\x00") {
				found = true
				break
			}
		}
		if !found {
			return any
		}
		any = true
		if time.Now().After(deadline) {
			a.t.Fatalf("runc checkpoint of %s still running", root)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func stagingEntries(t *testing.T, a *agent) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(a.rootDir, "checkpoints", ".staging"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

// finalArchives lists the archives under their published names.
func finalArchives(t *testing.T, a *agent) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(a.rootDir, "checkpoints"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), ".") {
			out = append(out, filepath.Join(a.rootDir, "checkpoints", e.Name()))
		}
	}
	return out
}

// verifyComplete reads a published archive to its end and checks every
// member against checksums.sha256, which the writer adds last, followed by
// the node's signature.
func verifyComplete(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := map[string]string{}
	var manifest string
	signed := false
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("partial archive %s: %v", path, err)
		}
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		if hdr.Name == "checksums.sha256" {
			b, _ := io.ReadAll(tr)
			manifest = string(b)
			continue
		}
		if hdr.Name == "checksums.sha256.sig" {
			signed = manifest != ""
			continue
		}
		h := sha256.New()
		if _, err := io.Copy(h, tr); err != nil {
			t.Fatalf("partial archive %s: %s: %v", path, hdr.Name, err)
		}
		got[strings.TrimPrefix(hdr.Name, "./")] = hex.EncodeToString(h.Sum(nil))
	}
	if manifest == "" {
		t.Fatalf("archive %s has no checksums.sha256: it was published unfinished", path)
	}
	if !signed {
		t.Fatalf("archive %s has no checksums.sha256.sig after its manifest: it was published unsigned", path)
	}
	sc := bufio.NewScanner(strings.NewReader(manifest))
	n := 0
	for sc.Scan() {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		if !ok {
			continue
		}
		n++
		if got[name] != sum {
			t.Fatalf("archive %s: %s digest %q, listed %q", path, name, got[name], sum)
		}
	}
	if n == 0 || n != len(got) {
		t.Fatalf("archive %s: %d members, %d listed", path, len(got), n)
	}
}
