package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ckpt-dev/ckpt/internal/auth/authtest"
	"github.com/ckpt-dev/ckpt/pkg/client"
)

// nodes are two network namespaces joined by a veth pair whose ends live
// only inside them, with link-local addresses and no route out.
type nodes struct {
	nsA, nsB     string
	vethA, vethB string
	ipA, ipB     string
}

func ip(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// newNodes creates the namespaces; they are removed (with the veth pair)
// when the test ends.
func newNodes(t *testing.T) *nodes {
	t.Helper()
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("no ip command (iproute2)")
	}
	var b [3]byte
	rand.Read(b[:])
	tag := hex.EncodeToString(b[:])
	n := &nodes{nsA: "ckpt-live-" + tag + "-a", nsB: "ckpt-live-" + tag + "-b", vethA: "ckl" + tag + "a", vethB: "ckl" + tag + "b",
		ipA: fmt.Sprintf("169.254.%d.1", 1+int(b[0])%250), ipB: fmt.Sprintf("169.254.%d.2", 1+int(b[0])%250)}
	ip(t, "netns", "add", n.nsA)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", n.nsA).Run() })
	ip(t, "netns", "add", n.nsB)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", n.nsB).Run() })
	ip(t, "link", "add", n.vethA, "netns", n.nsA, "type", "veth", "peer", "name", n.vethB, "netns", n.nsB)
	for _, side := range []struct{ ns, dev, addr string }{{n.nsA, n.vethA, n.ipA}, {n.nsB, n.vethB, n.ipB}} {
		ip(t, "-n", side.ns, "addr", "add", side.addr+"/30", "dev", side.dev)
		ip(t, "-n", side.ns, "link", "set", side.dev, "up")
		ip(t, "-n", side.ns, "link", "set", "lo", "up")
	}
	return n
}

// copyEnded: a destination's copy is gone, or its process has exited
// (a restore that failed leaves no container; one that ran, an exit).
func copyEnded(psLine string) bool { return psLine == "" || strings.Contains(psLine, " exited ") }

// waitCopyEnded waits until the copy of pod on a has ended; on a timeout
// it fails with the copy's last ps line and its shim's log.
func waitCopyEnded(t *testing.T, a *agent, pod string) {
	t.Helper()
	var line string
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if line = a.psLine(pod, "counter"); copyEnded(line) {
			t.Logf("the copy ended: %q", line)
			if line != "" {
				stoppedNotCrashed(t, a, pod)
			}
			return
		}
	}
	shimLogs, _ := filepath.Glob(filepath.Join(a.rootDir, "ckpt", "containers", "*", "shim.log"))
	lazyLogs, _ := filepath.Glob(filepath.Join(a.rootDir, "ckpt", "containers", "*", "restore-work", "lazy-pages.log"))
	shimLogs = append(shimLogs, lazyLogs...)
	var logs strings.Builder
	for _, f := range shimLogs {
		b, _ := os.ReadFile(f)
		fmt.Fprintf(&logs, "== %s\n%s\n", f, tail(b, 3000))
	}
	agentLog, _ := os.ReadFile(a.logPath)
	t.Fatalf("the copy %s did not end: ps %q\nagent log:\n%s\nshim logs:\n%s", pod, line, tail(agentLog, 3000), logs.String())
}

// stoppedNotCrashed checks that the copy of pod on a was stopped by its
// shim (SIGKILL, 137) or never ran (128, StartError): a copy that ran on
// with pages the kernel filled with zeros crashes (2 for Go, 139).
func stoppedNotCrashed(t *testing.T, a *agent, pod string) {
	t.Helper()
	out, err := a.ckptErr("ps", "-o", "json")
	if err != nil {
		t.Fatalf("ps -o json: %v\n%s", err, out)
	}
	var entries []struct {
		Pod, Container string
		ExitCode       *int
		Reason         string
	}
	if err := json.Unmarshal([]byte(out), &entries); err != nil {
		t.Fatalf("ps -o json: %v\n%s", err, out)
	}
	for _, e := range entries {
		if e.Pod != pod || e.Container != "counter" {
			continue
		}
		if e.ExitCode == nil || (*e.ExitCode != 137 && !(*e.ExitCode == 128 && e.Reason == "StartError")) {
			t.Errorf("the copy %s exited %v %s: want 137 (stopped by its shim) or 128 (StartError), never a crash", pod, derefOr(e.ExitCode, -1), e.Reason)
		}
		return
	}
	t.Errorf("no ps entry for the copy %s", pod)
}

func derefOr(p *int, or int) int {
	if p == nil {
		return or
	}
	return *p
}

// liveAgents starts a source agent in nsA and a destination in nsB, over
// HTTPS with certificates of one CA for their link-local addresses; the
// destination trusts the source's archives.
func liveAgents(t *testing.T, n *nodes) (src, dst *agent, ca *authtest.CA) {
	ca = authtest.NewCA(t)
	in := func(ns, addr string, extra ...string) agentOption {
		return func(a *agent) {
			cert, key := authtest.WriteFiles(t, ca.ServerCert(t, addr))
			a.netns, a.addr, a.https, a.caPool = ns, addr, true, ca.Pool()
			a.extra = append(a.extra, append([]string{"--tls-cert-file", cert, "--tls-private-key-file", key}, extra...)...)
		}
	}
	src = newAgent(t, in(n.nsA, n.ipA))
	dst = newAgent(t, in(n.nsB, n.ipB, "--restore-trusted-keys", src.publicKeyFile()))
	return src, dst, ca
}

// migrateLive runs `ckpt migrate --live` in the source's namespace (which
// reaches both agents).
func migrateLive(ctx context.Context, n *nodes, src, dst *agent, ca *authtest.CA, ref, pod string, extra ...string) (string, error) {
	tokenFile := filepath.Join(src.rootDir, "..", "token")
	os.WriteFile(tokenFile, []byte(testToken), 0o600)
	args := append([]string{"--net=/run/netns/" + n.nsA, "--", ckptBin, "migrate", ref, "--live", "--from", src.url(""), "--to", dst.url(""),
		"--token-file", tokenFile, "--cacert", ca.File, "--pod", pod}, extra...)
	cmd := exec.CommandContext(ctx, "nsenter", args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// TestLiveMigration moves a counter holding 64 MiB live between two agents
// in two network namespaces: the counter continues on the destination with
// no gap and no repeat, its memory checksum is the source's, and the
// source ends. Then a second counter's link is broken half way: the copy
// on the destination is stopped and the source runs on.
func TestLiveMigration(t *testing.T) {
	needE2E(t)
	n := newNodes(t)
	src, dst, ca := liveAgents(t, n)

	t.Run("counter", func(t *testing.T) {
		src.in(t)
		dst.in(t)
		src.addPod("counter", counterManifest("counter", map[string]string{"COUNTER_MEM_MIB": strconv.Itoa(lazyMiB)}))
		orig := src.waitRunning("counter-n1", "counter")
		srcLog := src.containerLog(orig)
		want := waitMemsum(t, srcLog, 1)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		out, err := migrateLive(ctx, n, src, dst, ca, "default/counter-n1/counter", "default/counter-live")
		if err != nil || !strings.Contains(out, "migrated default/counter-n1/counter live to "+dst.url("")) {
			slog, _ := os.ReadFile(src.logPath)
			dlog, _ := os.ReadFile(dst.logPath)
			t.Fatalf("migrate --live: %v\n%s\nsource agent:\n%s\n%s\ndestination agent:\n%s\n%s", err, out, slog, src.failureLogs(), dlog, dst.failureLogs())
		}
		t.Log(out)
		id := dst.waitRunning("counter-live", "counter")
		src.waitFor(func() bool { return strings.Contains(src.psLine("counter-n1", "counter"), " exited ") }, "the source ended")
		last := countsIn(t, srcLog)
		if len(last) == 0 {
			t.Fatal("the source counted nothing")
		}
		dstLog := dst.containerLog(id)
		resumesAt(t, dstLog, last[len(last)-1])
		if err := syscall.Kill(dst.pidOf("counter-live", "counter"), syscall.SIGUSR1); err != nil {
			t.Fatal(err)
		}
		if got := waitMemsum(t, dstLog, 1); got != want {
			t.Fatalf("memory checksum on the destination %s, the source's %s", got, want)
		}
		dst.waitFor(func() bool { return strings.HasPrefix(dst.memoryColumn("counter-live", "counter"), "complete") }, "memory complete")
		keepsCounting(t, dstLog)
		counts := countsIn(t, dstLog)
		for i := 1; i < len(counts); i++ {
			if counts[i] != counts[i-1]+1 {
				t.Fatalf("destination counted %v: a gap or a repeat", counts)
			}
		}
		time.Sleep(time.Second) // two manifest re-reads: not started again
		if line := src.psLine("counter-n1", "counter"); !strings.Contains(line, " exited ") {
			t.Fatalf("the source after a live migration: %q", line)
		}
		dst.rmContainer(id)
	})

	t.Run("archive taken, link dropped", func(t *testing.T) {
		src.in(t)
		dst.in(t)
		// A client that takes the source's archive and goes: the source
		// runs on, and the archive (without its pages) restores nowhere.
		src.addPod("counter3", counterManifest("counter3", nil))
		orig := src.waitRunning("counter3-n1", "counter")
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		conn, err := src.api(testToken, nil).MigrateLiveFrom(ctx, client.Ref{Namespace: "default", Pod: "counter3-n1", Container: "counter"}, client.CheckpointOptions{}, 0)
		if err != nil {
			t.Fatal(err)
		}
		var n [8]byte
		if _, err := io.ReadFull(conn, n[:]); err != nil {
			t.Fatal(err)
		}
		archive := make([]byte, binary.BigEndian.Uint64(n[:]))
		if _, err := io.ReadFull(conn, archive); err != nil {
			t.Fatal(err)
		}
		conn.Close()
		src.waitFor(func() bool { return strings.Contains(src.psLine("counter3-n1", "counter"), " running ") }, "the source running")
		keepsCounting(t, src.containerLog(orig))
		resp, err := dst.send("POST", "/restore/default/counter-stolen/counter", testToken, bytes.NewReader(archive))
		if err != nil {
			t.Fatal(err)
		}
		if resp.status != 400 || !strings.Contains(resp.body, "restores only within its migration") {
			t.Fatalf("restoring a live dump's archive: %d %s, want 400", resp.status, resp.body)
		}
	})

	t.Run("broken link", func(t *testing.T) {
		src.in(t)
		dst.in(t)
		m := startSlowMigration(t, n, src, dst, ca, "counter2", "counter-cut")
		if mem := dst.memoryColumn("counter-cut", "counter"); !strings.HasPrefix(mem, "loading") {
			t.Fatalf("the destination's memory is %q before the cut, want loading", mem)
		}
		ip(t, "-n", n.nsA, "link", "set", n.vethA, "down")
		defer exec.Command("ip", "-n", n.nsA, "link", "set", n.vethA, "up").Run()
		var r migration
		select {
		case r = <-m.done:
		case <-time.After(2 * time.Minute):
			t.Fatal("migrate did not end after the link broke")
		}
		if r.err == nil || !strings.Contains(r.out, "the source runs on") {
			t.Fatalf("migrate over a broken link: %v\n%s", r.err, r.out)
		}
		t.Log(r.out)
		// One copy: the source counts on, the destination's is stopped.
		src.waitFor(func() bool { return strings.Contains(src.psLine("counter2-n1", "counter"), " running ") }, "the source running")
		keepsCounting(t, m.srcLog)
		waitCopyEnded(t, dst, "counter-cut")
		if mem := dst.memoryColumn("counter-cut", "counter"); dst.psLine("counter-cut", "counter") != "" && !strings.HasPrefix(mem, "failed") {
			t.Errorf("the destination's memory after the cut: %q, want failed", mem)
		}
		counts := countsIn(t, m.srcLog)
		for i := 1; i < len(counts); i++ {
			if counts[i] != counts[i-1]+1 {
				t.Fatalf("the source counted %v after an aborted migration: a gap or a repeat", counts)
			}
		}
	})
	// An agent killed half way. The source's relays CRIU's page server:
	// CRIU sees its connection reset, fails the session and resumes the
	// source. Either way the destination's copy loses its pages and is
	// stopped, also when its own agent is not there to stop it.
	for _, tc := range []struct {
		name, pod, copyPod string
		killed             *agent
	}{
		{"source agent killed", "counter4", "counter-orphan", src},
		{"destination agent killed", "counter5", "counter-lost", dst},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src.in(t)
			dst.in(t)
			m := startSlowMigration(t, n, src, dst, ca, tc.pod, tc.copyPod)
			tc.killed.stopWith(syscall.SIGKILL)
			if r := <-m.done; !strings.Contains(r.out, "the source runs on") {
				t.Errorf("migrate with the %s: %s", tc.name, r.out)
			}
			tc.killed.start()
			src.waitFor(func() bool { return strings.Contains(src.psLine(tc.pod+"-n1", "counter"), " running ") }, "the source running")
			keepsCounting(t, m.srcLog)
			waitCopyEnded(t, dst, tc.copyPod)
		})
	}
}

// migration is how a `ckpt migrate --live` ended.
type migration struct {
	out string
	err error
}

// slowMigration is a live migration under way over a slowed link.
type slowMigration struct {
	srcLog string
	done   chan migration
}

// startSlowMigration runs a counter of 256 MiB as pod on the source,
// slows the link (until the test ends) so that its pages take long to
// move, starts migrating it live to copyPod with a link timeout of 3 s, and
// returns once the copy runs.
func startSlowMigration(t *testing.T, n *nodes, src, dst *agent, ca *authtest.CA, pod, copyPod string) slowMigration {
	t.Helper()
	src.addPod(pod, counterManifest(pod, map[string]string{"COUNTER_MEM_MIB": "256"}))
	orig := src.waitRunning(pod+"-n1", "counter")
	m := slowMigration{srcLog: src.containerLog(orig), done: make(chan migration, 1)}
	waitMemsum(t, m.srcLog, 1)
	ip(t, "netns", "exec", n.nsA, "tc", "qdisc", "add", "dev", n.vethA, "root", "tbf", "rate", "40mbit", "burst", "64kb", "latency", "200ms")
	t.Cleanup(func() { exec.Command("ip", "netns", "exec", n.nsA, "tc", "qdisc", "del", "dev", n.vethA, "root").Run() })
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	go func() {
		out, err := migrateLive(ctx, n, src, dst, ca, "default/"+pod+"-n1/counter", "default/"+copyPod, "--link-timeout", "3s")
		m.done <- migration{out, err}
	}()
	dst.waitFor(func() bool { return strings.Contains(dst.psLine(copyPod, "counter"), " running ") }, "the destination runs")
	return m
}
