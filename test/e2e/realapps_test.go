package e2e

import (
	"archive/tar"
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The real-application suite: real software from Debian packages on the
// embedded runtime, each checkpointed while it runs and restored as a copy
// beside the original. Every copy must have lo up, and the original must
// keep running throughout.

// podSpec is a one-container pod manifest.
type podSpec struct {
	name        string
	image       string
	command     []string
	annotations map[string]string
}

// manifest renders the pod as JSON, which is YAML too.
func (p podSpec) manifest() string {
	meta := map[string]any{"name": p.name, "namespace": "default"}
	if len(p.annotations) > 0 {
		meta["annotations"] = p.annotations
	}
	b, _ := json.Marshal(map[string]any{
		"apiVersion": "v1", "kind": "Pod", "metadata": meta,
		"spec": map[string]any{"containers": []any{map[string]any{
			"name": "app", "image": p.image, "command": p.command,
		}}},
	})
	return string(b)
}

// startPod writes the manifest and waits for its container to run; it
// returns the pod's name as the agent runs it, and the container's PID.
func (a *agent) startPod(p podSpec) (string, int) {
	a.t.Helper()
	a.addPod(p.name, p.manifest())
	pod := a.staticPod(p.name, "app")
	return pod, a.containerPid(pod, "app")
}

// restoreAs restores an archive of the checkpoints directory as
// default/<pod>/app and returns the API's answer, whatever its status.
func (a *agent) restoreAs(archivePath, pod string) (restored, response) {
	a.t.Helper()
	resp, err := a.do("POST", fmt.Sprintf("/restore/default/%s/app?archive=%s", pod, filepath.Base(archivePath)), testToken)
	if err != nil {
		a.t.Fatal(err)
	}
	var r restored
	if resp.status == 201 {
		if err := json.Unmarshal([]byte(resp.body), &r); err != nil {
			a.t.Fatal(err)
		}
	}
	return r, resp
}

// restoreUpload restores an archive sent as the request body.
func (a *agent) restoreUpload(file, pod string) (restored, response) {
	a.t.Helper()
	f, err := os.Open(file)
	if err != nil {
		a.t.Fatal(err)
	}
	defer f.Close()
	resp, err := a.send("POST", fmt.Sprintf("/restore/default/%s/counter", pod), testToken, f)
	if err != nil {
		a.t.Fatal(err)
	}
	var r restored
	if resp.status == 201 {
		if err := json.Unmarshal([]byte(resp.body), &r); err != nil {
			a.t.Fatal(err)
		}
	}
	return r, resp
}

// mustCheckpoint checkpoints default/<pod>/app with query and returns the
// archive's path.
func (a *agent) mustCheckpoint(pod, query string) string {
	a.t.Helper()
	path, resp := a.checkpoint("default/"+pod+"/app", query)
	if path == "" {
		log, _ := os.ReadFile(a.logPath)
		a.t.Fatalf("checkpoint %s: %d %s\nagent log (tail):\n%s\nfailure logs:\n%s", pod, resp.status, resp.body, tail(log, 3000), a.failureLogs())
	}
	return path
}

// forTest is the agent as seen by a subtest: its failures are the subtest's.
func (a *agent) forTest(t *testing.T) *agent {
	c := *a
	c.t = t
	return &c
}

// failureLogs returns the error lines of the agent's kept CRIU and runc
// failure logs, for a failure message.
func (a *agent) failureLogs() string {
	files, _ := filepath.Glob(filepath.Join(a.rootDir, "ckpt", "failure-logs", "*", "*"))
	var b strings.Builder
	for _, f := range files {
		data, _ := os.ReadFile(f)
		fmt.Fprintf(&b, "== %s\n", filepath.Base(f))
		for _, line := range strings.Split(string(data), "\n") {
			if strings.Contains(line, "Error") || strings.Contains(line, "error") || strings.Contains(line, "Warn") {
				fmt.Fprintln(&b, line)
			}
		}
	}
	return tail([]byte(b.String()), 4000)
}

// mustRestore restores a copy and returns it with its PID, after checking
// that it runs with lo up.
func (a *agent) mustRestore(archivePath, pod string) (restored, int) {
	a.t.Helper()
	r, resp := a.restoreAs(archivePath, pod)
	if resp.status != 201 {
		log, _ := os.ReadFile(a.logPath)
		a.t.Fatalf("restore %s as %s: %d %s\nagent log (tail):\n%s\nfailure logs:\n%s", filepath.Base(archivePath), pod, resp.status, resp.body, tail(log, 3000), a.failureLogs())
	}
	if r.State != "running" {
		a.t.Fatalf("restored %+v, want running", r)
	}
	pid := a.containerPid(pod, "app")
	requireLoUp(a.t, "restored "+pod, pid)
	return r, pid
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// tarMember reads one member of a tar archive, nil if absent.
func tarMember(t *testing.T, r io.Reader, name string) []byte {
	t.Helper()
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			t.Fatalf("read tar for %s: %v", name, err)
		}
		if strings.TrimPrefix(h.Name, "./") == name {
			b, err := io.ReadAll(io.LimitReader(tr, 64<<20))
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
	}
}

func archiveMember(t *testing.T, archive, name string) []byte {
	t.Helper()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return tarMember(t, f, name)
}

// lastCount is the last "count N" of a CRI log (what a log reader of the
// archive or of a container sees).
func lastCount(log []byte) int {
	k := -1
	for _, line := range strings.Split(string(log), "\n") {
		if _, msg, ok := strings.Cut(line, " stdout F count "); ok {
			if n, err := strconv.Atoi(strings.TrimSpace(msg)); err == nil {
				k = n
			}
		}
	}
	return k
}

// sequence checks that data is the lines "1\n2\n…\nN\n" (an unfinished last
// line is ignored) and returns N.
func sequence(data []byte) (int, error) {
	lines := strings.Split(string(data), "\n")
	lines = lines[:len(lines)-1] // after the last newline: unfinished or empty
	for i, l := range lines {
		n, err := strconv.Atoi(l)
		if err != nil {
			return i, fmt.Errorf("line %d is %q", i+1, l)
		}
		switch {
		case n == i:
			return i, fmt.Errorf("line %d repeats %d", i+1, n)
		case n < i:
			return i, fmt.Errorf("line %d is %d: it goes back", i+1, n)
		case n > i+1:
			return i, fmt.Errorf("line %d is %d: %d to %d are missing", i+1, n, i+1, n-1)
		}
	}
	return len(lines), nil
}

// TestRealAppRedis: redis-server with 100,000 keys, restored as a copy
// while the original runs. The copy has the same keys and digest, and
// takes writes of its own.
func TestRealAppRedis(t *testing.T) {
	img := debImage(t, imgRedis)
	a := newAgent(t, withImages(img))
	pod, pid := a.startPod(podSpec{name: "redis", image: imgRedis, command: []string{
		"/usr/bin/redis-server", "--port", "6379", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--protected-mode", "no", "--enable-debug-command", "yes", "--dir", "/tmp",
	}})
	requireLoUp(t, "original", pid)
	cli := func(pid int, args ...string) string {
		t.Helper()
		out, err := nsExec(pid, append([]string{"redis-cli", "-p", "6379"}, args...)...)
		if err != nil {
			t.Fatalf("redis-cli %v in %d: %v", args, pid, err)
		}
		return out
	}
	a.waitFor(func() bool {
		out, err := nsExec(pid, "redis-cli", "-p", "6379", "PING")
		return err == nil && out == "PONG"
	}, "redis answers PING")
	if out := cli(pid, "DEBUG", "POPULATE", "100000", "key", "64"); out != "OK" {
		t.Fatalf("DEBUG POPULATE: %q", out)
	}
	cli(pid, "SET", "greeting", "hello from the original")
	size, digest := cli(pid, "DBSIZE"), cli(pid, "DEBUG", "DIGEST")
	if size != "100001" {
		t.Fatalf("DBSIZE %q, want 100001", size)
	}

	archive := a.mustCheckpoint(pod, "")
	// The original goes on: it answers and takes a write after the cut.
	if out := cli(pid, "SET", "after-checkpoint", "1"); out != "OK" {
		t.Fatalf("original after the checkpoint: SET said %q", out)
	}

	_, cpid := a.mustRestore(archive, "copy-redis")
	stopUnlessLoUp(t, "the copy", cpid)
	a.waitFor(func() bool {
		out, err := nsExec(cpid, "redis-cli", "-p", "6379", "PING")
		return err == nil && out == "PONG"
	}, "the copy answers PING")
	if got := cli(cpid, "DBSIZE"); got != size {
		t.Errorf("copy DBSIZE %s, original had %s at the checkpoint", got, size)
	}
	if got := cli(cpid, "DEBUG", "DIGEST"); got != digest {
		t.Errorf("copy DEBUG DIGEST %s, original had %s at the checkpoint", got, digest)
	}
	if got := cli(cpid, "GET", "greeting"); got != "hello from the original" {
		t.Errorf("copy GET greeting = %q", got)
	}
	if got := cli(cpid, "EXISTS", "after-checkpoint"); got != "0" {
		t.Errorf("copy has a key written to the original after the checkpoint (EXISTS %s)", got)
	}
	// The copy takes writes of its own; the original does not see them.
	if out := cli(cpid, "SET", "copy-only", "42"); out != "OK" {
		t.Fatalf("copy SET: %q", out)
	}
	if got := cli(cpid, "GET", "copy-only"); got != "42" {
		t.Errorf("copy GET copy-only = %q", got)
	}
	if got := cli(cpid, "DBSIZE"); got != "100002" {
		t.Errorf("copy DBSIZE after a write %s, want 100002", got)
	}
	if got := cli(pid, "EXISTS", "copy-only"); got != "0" {
		t.Errorf("the original sees the copy's write")
	}
	if got := cli(pid, "DBSIZE"); got != "100002" {
		t.Errorf("original DBSIZE %s, want 100002", got)
	}
	requireLoUp(t, "original", pid)
}

// httpConn is one HTTP/1.1 keep-alive connection.
type httpConn struct {
	c  net.Conn
	br *bufio.Reader
}

func (h *httpConn) get(path string) (string, error) {
	h.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(h.c, "GET %s HTTP/1.1\r\nHost: counter\r\n\r\n", path); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(h.br, nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return strings.TrimSpace(string(b)), err
}

func dialHTTP(t *testing.T, pid int, port string) *httpConn {
	t.Helper()
	var c net.Conn
	var err error
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if c, err = dialIn(pid, "127.0.0.1:"+port); err == nil {
			t.Cleanup(func() { c.Close() })
			return &httpConn{c: c, br: bufio.NewReader(c)}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("connect to 127.0.0.1:%s in %d: %v", port, pid, err)
	return nil
}

func wantGet(t *testing.T, h *httpConn, what, path, want string) {
	t.Helper()
	got, err := h.get(path)
	if err != nil {
		t.Fatalf("%s: GET %s: %v", what, path, err)
	}
	if got != want {
		t.Fatalf("%s: GET %s = %s, want %s", what, path, got, want)
	}
}

// TestRealAppPythonHTTP: a Python HTTP server counts requests in memory. It
// is checkpointed while a keep-alive client holds a connection: refused
// without the opt-in (the error says how to opt in), done with it, and the
// copy continues the count.
func TestRealAppPythonHTTP(t *testing.T) {
	img := debImage(t, imgPython)
	for _, c := range []struct {
		name        string
		annotations map[string]string
		query       string
	}{
		{"query", nil, "?tcpEstablished=true"},
		{"annotation", map[string]string{"checkpoint.ckpt.dev/tcp-established": "true"}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			a := newAgent(t, withImages(img))
			pod, pid := a.startPod(podSpec{name: "web", image: imgPython, annotations: c.annotations,
				command: []string{"/usr/bin/python3", "/srv/counter.py", "8080"}})
			requireLoUp(t, "original", pid)
			conn := dialHTTP(t, pid, "8080")
			for i := 1; i <= 3; i++ {
				wantGet(t, conn, "original", "/inc", strconv.Itoa(i))
			}
			if c.annotations == nil {
				_, resp := a.checkpoint("default/"+pod+"/app", "")
				if resp.status == 200 {
					t.Fatalf("checkpoint with an established connection and no opt-in succeeded")
				}
				if !strings.Contains(resp.body, "tcpEstablished=true") {
					t.Errorf("refusal %d %q does not say how to opt in", resp.status, resp.body)
				}
				wantGet(t, conn, "original after the refused checkpoint", "/inc", "4")
			} else {
				wantGet(t, conn, "original", "/inc", "4")
			}

			archive := a.mustCheckpoint(pod, c.query)
			wantGet(t, conn, "original after the checkpoint, same connection", "/inc", "5")

			_, cpid := a.mustRestore(archive, "copy-web")
			stopUnlessLoUp(t, "the copy", cpid)
			copyConn := dialHTTP(t, cpid, "8080")
			wantGet(t, copyConn, "copy", "/get", "4")
			wantGet(t, copyConn, "copy", "/inc", "5")
			wantGet(t, copyConn, "copy", "/inc", "6")
			wantGet(t, conn, "original after the restore", "/inc", "6")
			requireLoUp(t, "original", pid)
		})
	}
}

// TestRealAppJVM: a JVM's heap counter continues in a copy.
func TestRealAppJVM(t *testing.T) {
	img := debImage(t, imgJVM)
	a := newAgent(t, withImages(img))
	pod, pid := a.startPod(podSpec{name: "jvm", image: imgJVM, command: []string{
		jvmJava, "-Xmx64m", "-XX:+UseSerialGC", "-XX:-UsePerfData", "-XX:TieredStopAtLevel=1", "-cp", "/app", "Counter",
	}})
	orig := a.waitRunning(pod, "app")
	requireLoUp(t, "original", pid)
	keepsCounting(t, a.containerLog(orig))
	for i := 0; i < 3; i++ {
		archive := a.mustCheckpoint(pod, "")
		k := archivedCount(t, archive)
		r, _ := a.mustRestore(archive, "copy-jvm")
		resumesAt(t, a.containerLog(r.ID[:12]), k)
		keepsCounting(t, a.containerLog(orig))
		a.rmContainer(r.ID)
	}
}

// TestRealAppFileWriter: a shell appends the next number to a file in its
// root filesystem every 10 ms. Ten checkpoints, each restored as a copy:
// every copy continues the file with no gap and no repeat, which holds
// only if memory and the rootfs diff are one cut.
func TestRealAppFileWriter(t *testing.T) {
	img := debImage(t, imgBusybox)
	a := newAgent(t, withImages(img))
	pod, pid := a.startPod(podSpec{name: "writer", image: imgBusybox, command: []string{"/bin/sh", "/bin/writer.sh"}})
	origFile := fmt.Sprintf("/proc/%d/root/data/log", pid)
	a.waitFor(func() bool { b, _ := os.ReadFile(origFile); return bytes.Count(b, []byte("\n")) > 20 }, "the writer writes")
	consistent := 0
	for run := 0; run < restoreRuns; run++ {
		archive := a.mustCheckpoint(pod, "")
		diff := archiveMember(t, archive, "rootfs-diff.tar")
		if diff == nil {
			t.Errorf("run %d: the archive has no rootfs-diff.tar", run)
			continue
		}
		inArchive, err := sequence(tarMember(t, bytes.NewReader(diff), "data/log"))
		if err != nil {
			t.Errorf("run %d: the archived file: %v", run, err)
			continue
		}
		r, resp := a.restoreAs(archive, "copy-writer")
		if resp.status != 201 {
			t.Errorf("run %d: restore: %d %s\nfailure logs:\n%s", run, resp.status, resp.body, a.failureLogs())
			continue
		}
		cpid := a.containerPid("copy-writer", "app")
		requireLoUp(t, fmt.Sprintf("run %d copy", run), cpid)
		copyFile := fmt.Sprintf("/proc/%d/root/data/log", cpid)
		var data []byte
		a.waitFor(func() bool {
			data, _ = os.ReadFile(copyFile)
			return bytes.Count(data, []byte("\n")) > inArchive+20
		}, "the copy writes on")
		n, err := sequence(data)
		if err != nil {
			t.Errorf("run %d: the archive held 1..%d; the copy's file: %v", run, inArchive, err)
		} else {
			consistent++
			t.Logf("run %d: archive 1..%d, copy continued to %d", run, inArchive, n)
		}
		a.rmContainer(r.ID)
	}
	if consistent != restoreRuns {
		t.Errorf("%d of %d copies continued the file with no gap and no repeat", consistent, restoreRuns)
	}
	before, _ := os.ReadFile(origFile)
	time.Sleep(200 * time.Millisecond)
	after, err := os.ReadFile(origFile)
	if err != nil {
		t.Fatalf("the original stopped: %v", err)
	}
	if n, err := sequence(after); err != nil || len(after) <= len(before) {
		t.Errorf("the original's file after ten checkpoints: %d lines, %v (grew: %v)", n, err, len(after) > len(before))
	}
}

// TestRealAppForeignArchives restores the containerd and Podman fixtures on
// the embedded runtime, started with --restore-allow-unsigned (a default
// node refuses them and says so). Without their image the error names it; with the
// image (busybox from Debian, named as the archive records it) the counter
// continues.
func TestRealAppForeignArchives(t *testing.T) {
	// Both fixtures were dumped on a CPU with AVX-512: the static glibc in
	// their busybox chose its EVEX string functions at start (strchr at
	// 0x409840 is vpbroadcastb into %ymm17). CRIU restores that code as
	// it is, so on a CPU without AVX512VL and AVX512BW the copy dies with
	// SIGILL at its first strchr.
	missing := missingCPUFlags(t, "avx512vl", "avx512bw")
	for _, c := range []struct {
		name, fixture, image, log string
		pid                       int // the archived process's PID in its namespace
	}{
		// containerd's process shared its pod's PID namespace, so it comes
		// back as PID 12 beside the new sandbox's pause (a single thread, so
		// it holds no PID a restored process needs).
		{"containerd", "containerd-2.4.2-cri-counter.tar", imgContainerdCounter, "container.log", 12},
		{"podman", "podman-4.3.1-export-counter.tar", imgPodmanCounter, "ctr.log", 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			img := debImage(t, c.image)
			fixture := filepath.Join("..", "..", "internal", "archive", "testdata", c.fixture)
			k := lastCount(archiveMember(t, fixture, c.log))
			if k < 1 {
				t.Fatalf("fixture %s has no count in %s", c.fixture, c.log)
			}
			// An unsigned archive is refused unless the node allows them.
			strict := newAgent(t)
			if _, resp := strict.restoreUpload(fixture, "copy-"+c.name); resp.status == 201 || !strings.Contains(resp.body, "--restore-allow-unsigned") {
				t.Errorf("unsigned %s on a default node: %d %q, want a refusal naming --restore-allow-unsigned", c.fixture, resp.status, resp.body)
			}
			strict.stop()

			a := newAgent(t, withArgs("--restore-allow-unsigned"))
			_, resp := a.restoreUpload(fixture, "copy-"+c.name)
			if resp.status == 201 {
				t.Fatalf("restore without the image %s succeeded", c.image)
			}
			if !strings.Contains(resp.body, c.image) {
				t.Errorf("restore without the image: %d %q does not name %s", resp.status, resp.body, c.image)
			}
			a.ckpt("image", "import", img)
			r, resp := a.restoreUpload(fixture, "copy-"+c.name)
			if resp.status != 201 {
				log, _ := os.ReadFile(a.logPath)
				t.Fatalf("restore %s: %d %s\nagent log (tail):\n%s\nfailure logs:\n%s", c.fixture, resp.status, resp.body, tail(log, 3000), a.failureLogs())
			}
			if len(missing) > 0 {
				var line string
				a.waitFor(func() bool { line = a.psLine("copy-"+c.name, "counter"); return strings.Contains(line, " exited ") }, "the copy to die of SIGILL")
				if !strings.Contains(line, " 132 ") {
					t.Errorf("the copy on a CPU without %v: %q, want exited 132 (SIGILL)", missing, line)
				}
				t.Skipf("this CPU lacks %v, which the fixture's process uses: it died of SIGILL, as it must", missing)
			}
			pid := a.containerPid("copy-"+c.name, "counter")
			requireLoUp(t, "restored "+c.name, pid)
			if got := nsPid(t, pid); got != c.pid {
				t.Errorf("restored %s runs as PID %d in its PID namespace, want %d as archived", c.name, got, c.pid)
			}
			resumesAt(t, a.containerLog(r.ID[:12]), k)
			file, err := os.ReadFile(fmt.Sprintf("/proc/%d/root/tmp/counter.log", pid))
			if err != nil {
				t.Fatal(err)
			}
			if n, err := sequence(file); err != nil || n <= k {
				t.Errorf("/tmp/counter.log of the copy: %d lines (archive at %d): %v", n, k, err)
			}
		})
	}
}

// missingCPUFlags returns which of flags /proc/cpuinfo does not list.
func missingCPUFlags(t *testing.T, flags ...string) []string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "flags" {
			for _, f := range strings.Fields(v) {
				have[f] = true
			}
			break
		}
	}
	var missing []string
	for _, f := range flags {
		if !have[f] {
			missing = append(missing, f)
		}
	}
	return missing
}

// nsPid returns pid's PID in its innermost PID namespace.
func nsPid(t *testing.T, pid int) int {
	t.Helper()
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(st), "\n") {
		if f := strings.Fields(l); len(f) > 1 && f[0] == "NSpid:" {
			n, _ := strconv.Atoi(f[len(f)-1])
			return n
		}
	}
	t.Fatalf("no NSpid in /proc/%d/status", pid)
	return 0
}

// stateLines returns the "state N KIND=VALUE" lines of a CRI log: N and VALUE.
func stateLines(t *testing.T, logPath, kind string) (ns []int, values []string) {
	t.Helper()
	b, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		_, msg, ok := strings.Cut(line, " stdout F state ")
		if !ok {
			continue
		}
		num, kv, _ := strings.Cut(msg, " ")
		k, v, _ := strings.Cut(kv, "=")
		n, err := strconv.Atoi(num)
		if err != nil || k != kind {
			t.Fatalf("bad state line %q", line)
		}
		ns, values = append(ns, n), append(values, v)
	}
	return ns, values
}

// checkStates waits for min state lines and checks each against want.
func checkStates(t *testing.T, what, logPath, kind string, min int, want func(n int) string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var ns []int
	var vs []string
	for time.Now().Before(deadline) {
		if ns, vs = stateLines(t, logPath, kind); len(ns) >= min {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(ns) < min {
		b, _ := os.ReadFile(logPath)
		t.Fatalf("%s: %d state lines, want %d; log:\n%s", what, len(ns), min, tail(b, 2000))
	}
	for i, n := range ns {
		if vs[i] != want(n) {
			t.Errorf("%s: state %d %s=%s, want %s", what, n, kind, vs[i], want(n))
		}
	}
}

func hasCapSysResource() bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && caps&(1<<24) != 0
		}
	}
	return false
}

// TestRealAppProcessState: state that real applications hold, each kind
// held by a parent and the child it forks, survives a restore as a copy.
func TestRealAppProcessState(t *testing.T) {
	img := debImage(t, imgPython)
	a := newAgent(t, withImages(img))
	itoa := strconv.Itoa
	for _, c := range []struct {
		kind string
		want func(n int) string
	}{
		{"pipe", itoa},     // pipes between the two processes
		{"posixshm", itoa}, // a MAP_SHARED file in /dev/shm
		{"sysvshm", itoa},  // a SysV segment attached by both
		{"eventfd", itoa},  // an eventfd shared by both
		{"flock", func(int) string { return "held,held" }},  // flock and POSIX locks kept
		{"timerfd", func(int) string { return "10000000" }}, // a periodic 10 ms timerfd still fires
		{"inotify", func(int) string { return "modify" }},   // an inotify watch still reports
	} {
		t.Run(c.kind, func(t *testing.T) {
			a := a.forTest(t)
			pod, pid := a.startPod(podSpec{name: "state-" + c.kind, image: imgPython, command: []string{"/usr/bin/python3", "/srv/state.py", c.kind}})
			orig := a.waitRunning(pod, "app")
			checkStates(t, "original", a.containerLog(orig), c.kind, 3, c.want)
			archive := a.mustCheckpoint(pod, "")
			k := archivedCount(t, archive)
			r, _ := a.mustRestore(archive, "copy-state-"+c.kind)
			copyLog := a.containerLog(r.ID[:12])
			resumesAt(t, copyLog, k)
			checkStates(t, "copy", copyLog, c.kind, 5, c.want)
			keepsCounting(t, a.containerLog(orig))
			checkStates(t, "original after the checkpoint", a.containerLog(orig), c.kind, 1, c.want)
			requireLoUp(t, "original", pid)
			a.rmContainer(r.ID)
		})
	}
}

// TestRealAppNonRoot: a process that runs as another user (uid 1000). Root
// here lacks CAP_SYS_RESOURCE, so CRIU cannot read that process's rlimits:
// the checkpoint fails and says so in plain words, and the original runs
// on. Where root has the capability the checkpoint and copy must work.
func TestRealAppNonRoot(t *testing.T) {
	img := debImage(t, imgPython)
	a := newAgent(t, withImages(img))
	pod, _ := a.startPod(podSpec{name: "nonroot", image: imgPython, command: []string{"/usr/bin/python3", "/srv/state.py", "nonroot"}})
	orig := a.waitRunning(pod, "app")
	checkStates(t, "original", a.containerLog(orig), "nonroot", 3, strconv.Itoa)
	if hasCapSysResource() {
		archive := a.mustCheckpoint(pod, "")
		k := archivedCount(t, archive)
		r, _ := a.mustRestore(archive, "copy-nonroot")
		resumesAt(t, a.containerLog(r.ID[:12]), k)
	} else {
		_, resp := a.checkpoint("default/"+pod+"/app", "")
		if resp.status == 200 {
			t.Fatalf("checkpoint of another user's process succeeded without CAP_SYS_RESOURCE")
		}
		for _, want := range []string{"CAP_SYS_RESOURCE", "another user"} {
			if !strings.Contains(resp.body, want) {
				t.Errorf("the error %d %q does not say %q", resp.status, resp.body, want)
			}
		}
	}
	keepsCounting(t, a.containerLog(orig))
}
