package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// webPod is a pod of two busybox containers sharing an emptyDir: a web
// server on 127.0.0.1:8080 inside the pod, published on hostPort on the
// host's 127.0.0.1, and a client that fetches from it over the pod's
// localhost and prints what it got, who it runs as and its hostname.
func webPod(name string, hostPort int) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: %s
spec:
  hostname: webhost
  volumes:
  - name: shared
    emptyDir: {}
  initContainers:
  - name: init
    image: localhost/busybox:latest
    command: [/bin/busybox, sh, -c, 'sleep 1; echo from-init > /www/index.html']
    volumeMounts:
    - name: shared
      mountPath: /www
  containers:
  - name: server
    image: localhost/busybox:latest
    command: [/bin/busybox, sh, -c, 'echo "server saw $(cat /www/index.html)"; mkdir -p /srv && echo from-rootfs > /srv/index.html && exec httpd -f -p 127.0.0.1:8080 -h /www']
    ports:
    - containerPort: 8080
      hostPort: %d
      hostIP: 127.0.0.1
    volumeMounts:
    - name: shared
      mountPath: /www
  - name: client
    image: localhost/busybox-nobody:latest
    command: [/bin/busybox, sh, -c, 'while true; do echo "got=$(wget -q -O - http://127.0.0.1:8080/) id=$(id -u):$(id -g) host=$(hostname) hosts=$(grep -c webhost /etc/hosts) shared=$(cat /www/index.html)"; sleep 0.3; done']
    volumeMounts:
    - name: shared
      mountPath: /www
      readOnly: true
  - name: limited
    image: localhost/busybox:latest
    command: [/bin/busybox, sh, -c, 'echo "limited id=$(id -u):$(id -g) groups=$(id -G)"; exec sleep 3600']
    securityContext:
      runAsUser: 1234
      runAsGroup: 2345
    resources:
      limits:
        memory: 48Mi
        cpu: 250m
`, name, hostPort)
}

func (a *agent) waitLog(short, want string) string {
	a.t.Helper()
	var line string
	a.waitFor(func() bool {
		b, _ := os.ReadFile(a.containerLog(short))
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, want) {
				line = l
				return true
			}
		}
		return false
	}, fmt.Sprintf("log of %s to show %q", short, want))
	return line
}

func httpGet(t *testing.T, url string) (string, error) {
	t.Helper()
	c := &http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return string(b), fmt.Errorf("status %d", resp.StatusCode)
	}
	return strings.TrimSpace(string(b)), err
}

func nsOf(t *testing.T, pid int, kind string) string {
	t.Helper()
	l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", pid, kind))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// pidOf reads a container's PID from `ckpt ps`.

// TestPodSandboxNetworkVolumesSecurity runs a pod with an init container
// that fills an emptyDir, then three containers: the
// containers share one network namespace (lo up) and UTS namespace held by
// the pause process, an emptyDir, and a hostPort served on the host's
// 127.0.0.1; the image's User, runAsUser/runAsGroup and the memory and CPU
// limits are applied.
func TestPodSandboxNetworkVolumesSecurity(t *testing.T) {
	a := newAgent(t)
	hostPort := freePort(t)
	a.addPod("web", webPod("web", hostPort))
	server := a.waitRunning("web-n1", "server")
	client := a.waitRunning("web-n1", "client")
	limited := a.waitRunning("web-n1", "limited")

	// Over the pod's localhost, with the kubelet's hostname and /etc/hosts;
	// the image's User (nobody) is honoured.
	line := a.waitLog(client, "got=from-init")
	for _, want := range []string{"id=65534:65534", "host=webhost", "hosts=1", "shared=from-init"} {
		if !strings.Contains(line, want) {
			t.Errorf("client printed %q, want %q", line, want)
		}
	}
	// From the host, through the hostPort.
	var body string
	var err error
	a.waitFor(func() bool { body, err = httpGet(t, fmt.Sprintf("http://127.0.0.1:%d/", hostPort)); return err == nil }, "hostPort to serve")
	if body != "from-init" {
		t.Errorf("hostPort served %q", body)
	}
	// The init container ran to completion before the server started.
	a.waitLog(server, "server saw from-init")
	if f := strings.Fields(a.psLine("web-n1", "init")); len(f) < 12 || f[5] != "exited" || f[len(f)-3] != "0" {
		t.Errorf("init container: %q, want exited 0", f)
	}
	// runAsUser and runAsGroup win over the image's user.
	if l := a.waitLog(limited, "limited id="); !strings.Contains(l, "limited id=1234:2345") {
		t.Errorf("limited container printed %q, want uid 1234 gid 2345", l)
	}
	id := a.fullID(limited)
	for file, want := range map[string]string{
		"/sys/fs/cgroup/memory/ckpt/" + id + "/memory.limit_in_bytes": fmt.Sprint(48 << 20),
		"/sys/fs/cgroup/cpu/ckpt/" + id + "/cpu.cfs_quota_us":         "25000",
		"/sys/fs/cgroup/cpu/ckpt/" + id + "/cpu.shares":               "256",
	} {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Skipf("cgroup v1 file %s: %v", file, err)
		}
		if got := strings.TrimSpace(string(b)); got != want {
			t.Errorf("%s = %s, want %s", file, got, want)
		}
	}
	// One network and UTS namespace for the pod, not the host's.
	ps, pc := a.pidOf("web-n1", "server"), a.pidOf("web-n1", "client")
	for _, kind := range []string{"net", "uts", "ipc"} {
		if nsOf(t, ps, kind) != nsOf(t, pc, kind) {
			t.Errorf("server and client are in different %s namespaces", kind)
		}
		if nsOf(t, ps, kind) == nsOf(t, os.Getpid(), kind) {
			t.Errorf("the pod is in the host's %s namespace", kind)
		}
	}
	if nsOf(t, ps, "pid") == nsOf(t, pc, "pid") {
		t.Error("containers share a pid namespace (shareProcessNamespace is not set)")
	}

	// A removed manifest stops the pod and frees its hostPort.
	os.Remove(filepath.Join(a.manifests, "web.yaml"))
	a.waitPodGone("web-n1")
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", hostPort))
	if err != nil {
		t.Fatalf("hostPort still held after the pod went: %v", err)
	}
	l.Close()
}

// waitPodGone waits until a pod's server container and every sandbox are gone.
func (a *agent) waitPodGone(pod string) { a.t.Helper(); a.waitPodGoneCtr(pod, "server") }

func (a *agent) waitPodGoneCtr(pod, ctr string) {
	a.t.Helper()
	a.waitFor(func() bool {
		left, _ := os.ReadDir(filepath.Join(a.rootDir, "ckpt", "pods"))
		return a.psLine(pod, ctr) == "" && len(left) == 0
	}, pod+" and its sandbox removed")
}

// TestHostPortTakenRefusesPod: a hostPort in use refuses the pod with the
// port named, and leaves no container or sandbox behind.
func TestHostPortTakenRefusesPod(t *testing.T) {
	a := newAgent(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	a.addPod("web", webPod("web", port))
	want := fmt.Sprintf("hostPort %d/TCP", port)
	a.waitFor(func() bool {
		log, _ := os.ReadFile(a.logPath)
		return strings.Contains(string(log), want)
	}, "agent log to name the taken port")
	if dirs := a.containerDirs(); len(dirs) != 0 {
		t.Errorf("a refused pod left containers %v", dirs)
	}
	if left, _ := os.ReadDir(filepath.Join(a.rootDir, "ckpt", "pods")); len(left) != 0 {
		t.Errorf("a refused pod left pod directories %v", left)
	}
}

// TestRestoredContainerServesOnItsPort checkpoints the web server, removes
// its pod, and restores it: the copy runs in a fresh sandbox (its own
// network namespace with lo up), its listening socket is back, and it serves
// again on its hostPort. Its spec is ckpt's, built from the archive's
// pod.json: it joins the new pause process's namespaces.
func TestRestoredContainerServesOnItsPort(t *testing.T) {
	a := newAgent(t)
	hostPort := freePort(t)
	// The page comes from the root filesystem, which the archive carries.
	// Only the server: a client in the pod would leave connections in
	// flight, which CRIU refuses to dump.
	manifest := strings.Replace(webPod("web", hostPort), "-h /www", "-h /srv", 1)
	manifest, _, _ = strings.Cut(manifest, "  - name: client\n")
	a.addPod("web", manifest)
	a.waitRunning("web-n1", "server")
	a.waitFor(func() bool {
		b, err := httpGet(t, fmt.Sprintf("http://127.0.0.1:%d/", hostPort))
		return err == nil && b == "from-rootfs"
	}, "server")
	path, resp := a.checkpoint("default/web-n1/server", "")
	if path == "" {
		t.Fatalf("checkpoint: %d %s", resp.status, resp.body)
	}
	// While the original holds the hostPort, a restore is refused by port.
	if got, _ := a.do("POST", "/restore/default/web-copy/server?archive="+filepath.Base(path), testToken); got.status != 409 || !strings.Contains(got.body, fmt.Sprintf("hostPort %d/TCP", hostPort)) {
		t.Errorf("restore with the hostPort taken: %d %s", got.status, got.body)
	}
	os.Remove(filepath.Join(a.manifests, "web.yaml"))
	a.waitPodGone("web-n1")

	r := a.restoreArchive(filepath.Base(path), "default", "web-copy", "server")
	if r.State != "running" {
		t.Fatalf("restored %+v", r)
	}
	body, err := httpGet(t, fmt.Sprintf("http://127.0.0.1:%d/", hostPort))
	if err != nil || body != "from-rootfs" {
		t.Fatalf("restored server on hostPort: %q %v", body, err)
	}
	if nsOf(t, r.Pid, "net") == nsOf(t, os.Getpid(), "net") {
		t.Error("restored container is in the host's network namespace")
	}
	lo, err := exec.Command("nsenter", "-t", fmt.Sprint(r.Pid), "-n", "ip", "-o", "link", "show", "lo").CombinedOutput()
	if err != nil || !strings.Contains(string(lo), "<LOOPBACK,UP") {
		t.Errorf("lo in the restored container: %s %v", lo, err)
	}
	spec, err := os.ReadFile(filepath.Join(a.rootDir, "ckpt", "containers", r.ID, "bundle", "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(spec), `"hooks"`) || !strings.Contains(string(spec), `"path": "/proc/`) {
		t.Errorf("restored spec is not a sandbox member built by ckpt:\n%s", spec)
	}
}

// TestRestorePolicyRefusesHostNetwork: a pod that asks for the host's
// network is refused on restore, naming the field and the flag.
func TestRestorePolicyRefusesHostNetwork(t *testing.T) {
	a := newAgent(t)
	a.addPod("hn", strings.Replace(counterManifest("hn", nil), "spec:\n", "spec:\n  hostNetwork: true\n", 1))
	a.waitRunning("hn-n1", "counter")
	if nsOf(t, a.pidOf("hn-n1", "counter"), "net") != nsOf(t, os.Getpid(), "net") {
		t.Error("hostNetwork pod is not in the host's network namespace")
	}
	path, resp := a.checkpoint("default/hn-n1/counter", "")
	if path == "" {
		t.Fatalf("checkpoint: %d %s", resp.status, resp.body)
	}
	got, _ := a.do("POST", "/restore/default/hn-copy/counter?archive="+filepath.Base(path), testToken)
	if got.status != 400 || !strings.Contains(got.body, "spec.hostNetwork") || !strings.Contains(got.body, "--restore-allow-host-network") {
		t.Errorf("restore of a hostNetwork pod: %d %s, want 400 naming spec.hostNetwork and --restore-allow-host-network", got.status, got.body)
	}
}

// TestOOMKillReported: a container over its memory limit is killed by the
// kernel, and `ckpt ps` says OOMKilled, as the kubelet would.
func TestOOMKillReported(t *testing.T) {
	a := newAgent(t)
	a.addPod("hog", `apiVersion: v1
kind: Pod
metadata:
  name: hog
spec:
  restartPolicy: Never
  containers:
  - name: hog
    image: localhost/busybox:latest
    command: [/bin/busybox, sh, -c, 'sleep 1; exec tail /dev/zero']
    resources:
      limits:
        memory: 16Mi
`)
	var line string
	a.waitFor(func() bool {
		line = a.psLine("hog-n1", "hog")
		return strings.Contains(line, " exited ")
	}, "hog to exit")
	if !strings.Contains(line, " 137 (OOMKilled) ") {
		t.Errorf("ps line %q, want the exit reported as 137 (OOMKilled)", line)
	}
}

// TestChangedManifestRecreatesPod: as the kubelet, a changed pod spec
// gives a new pod; an unchanged one is left alone.
func TestChangedManifestRecreatesPod(t *testing.T) {
	a := newAgent(t)
	a.addPod("counter", counterManifest("counter", nil))
	first := a.waitRunning("counter-n1", "counter")
	time.Sleep(1500 * time.Millisecond) // a few manifest re-reads
	if got := a.waitRunning("counter-n1", "counter"); got != first {
		t.Fatalf("an unchanged manifest recreated the container: %s, then %s", first, got)
	}
	a.addPod("counter", counterManifest("counter", map[string]string{"COUNTER_MARKER": "v2"}))
	a.waitFor(func() bool {
		f := strings.Fields(a.psLine("counter-n1", "counter"))
		return len(f) > 5 && f[3] != first && f[5] == "running"
	}, "the changed pod to be recreated")
	if _, err := os.Stat(a.containerLog(a.waitRunning("counter-n1", "counter"))); err != nil {
		t.Fatal(err)
	}
	if dirs := a.containerDirs(); len(dirs) != 2 { // the new container and its pod's pause
		t.Errorf("containers after recreate: %v, want the new one and its sandbox", dirs)
	}
}

// TestRestartPolicyAlways: an exiting container under restartPolicy Always
// comes back (at once the first time, as the kubelet's back-off), and
// `ckpt ps` shows the restart count and the last exit code. One stopped on
// request (POST /stop) stays stopped.
func TestRestartPolicyAlways(t *testing.T) {
	a := newAgent(t)
	a.addPod("flaky", `apiVersion: v1
kind: Pod
metadata:
  name: flaky
spec:
  restartPolicy: Always
  containers:
  - name: flaky
    image: localhost/busybox:latest
    command: [/bin/busybox, sh, -c, 'echo started; sleep 1; exit 3']
`)
	first := a.waitRunning("flaky-n1", "flaky")
	var f []string
	a.waitFor(func() bool {
		f = strings.Fields(a.psLine("flaky-n1", "flaky"))
		return len(f) >= 12 && f[3] != first && f[len(f)-2] == "1"
	}, "the container to be restarted once")
	if f[len(f)-3] != "3" {
		t.Errorf("ps %v: EXIT %s, want the last exit code 3", f, f[len(f)-3])
	}
	// The second restart waits the back-off (10 s after the exit).
	time.Sleep(4 * time.Second)
	if g := strings.Fields(a.psLine("flaky-n1", "flaky")); len(g) < 12 || g[len(g)-2] != "1" || g[5] != "exited" {
		t.Errorf("within the back-off: %v, want still exited after 1 restart", g)
	}
	a.waitFor(func() bool {
		g := strings.Fields(a.psLine("flaky-n1", "flaky"))
		return len(g) >= 12 && g[len(g)-2] == "2"
	}, "the second restart after the back-off")
	a.waitFor(func() bool { return len(a.containerDirs()) == 2 }, "the exited run removed (the current run and the pause remain)")
	a.addPod("steady", strings.Replace(counterManifest("steady", nil), "spec:\n", "spec:\n  restartPolicy: Always\n", 1))
	a.waitRunning("steady-n1", "counter")
	if got, _ := a.do("POST", "/stop/default/steady-n1/counter", testToken); got.status != 200 {
		t.Fatalf("stop: %d %s", got.status, got.body)
	}
	time.Sleep(2500 * time.Millisecond)
	if l := a.psLine("steady-n1", "counter"); !strings.Contains(l, " exited ") {
		t.Errorf("a container stopped on request was restarted: %q", l)
	}
}

// TestProbes: a readiness probe (httpGet) makes the container READY in
// `ckpt ps`; a failing liveness probe (tcpSocket to a closed port) kills the
// container and the restart policy brings it back; a passing exec liveness
// probe leaves its container alone.
func TestProbes(t *testing.T) {
	a := newAgent(t)
	a.addPod("probed", `apiVersion: v1
kind: Pod
metadata:
  name: probed
spec:
  restartPolicy: Always
  containers:
  - name: web
    image: localhost/busybox:latest
    command: [/bin/busybox, sh, -c, 'mkdir /www && echo ok > /www/index.html && sleep 2 && exec httpd -f -p 127.0.0.1:8080 -h /www']
    readinessProbe:
      httpGet:
        path: /index.html
        port: 8080
      periodSeconds: 1
  - name: doomed
    image: localhost/busybox:latest
    command: [/bin/busybox, sleep, "3600"]
    livenessProbe:
      tcpSocket:
        port: 9999
      periodSeconds: 1
      failureThreshold: 2
  - name: fine
    image: localhost/busybox:latest
    command: [/bin/busybox, sleep, "3600"]
    livenessProbe:
      exec:
        command: [/bin/busybox, "true"]
      periodSeconds: 1
`)
	a.waitRunning("probed-n1", "web")
	if f := strings.Fields(a.psLine("probed-n1", "web")); f[len(f)-1] != "false" {
		t.Errorf("web is ready before its server listens: %v", f)
	}
	a.waitFor(func() bool {
		f := strings.Fields(a.psLine("probed-n1", "web"))
		return len(f) > 0 && f[len(f)-1] == "true"
	}, "web to become ready")
	a.waitFor(func() bool {
		f := strings.Fields(a.psLine("probed-n1", "doomed"))
		return len(f) >= 12 && f[len(f)-2] == "1"
	}, "doomed to be restarted by its liveness probe")
	f := strings.Fields(a.psLine("probed-n1", "doomed"))
	if exit := f[len(f)-3]; exit != "137" {
		t.Errorf("doomed's last exit %s, want 137 (killed)", exit)
	}
	if g := strings.Fields(a.psLine("probed-n1", "fine")); g[len(g)-2] != "0" || g[5] != "running" {
		t.Errorf("a passing liveness probe restarted its container: %v", g)
	}
}

// TestPodsInitContainerRetries: a failing init container is retried as the
// kubelet retries it: with restartPolicy Always or OnFailure it runs again
// (at once, then after the 10 s back-off) until it succeeds, and only then
// do the app containers start; with Never the pod fails and they never do.
func TestPodsInitContainerRetries(t *testing.T) {
	a := newAgent(t)
	manifest := func(name, policy string) string {
		return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: %s
spec:
  restartPolicy: %s
  volumes:
  - name: w
    emptyDir: {}
  initContainers:
  - name: init
    image: localhost/busybox:latest
    command: [/bin/busybox, sh, -c, 'n=$(cat /w/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /w/n; echo "attempt $n"; [ $n -ge 3 ]']
    volumeMounts:
    - name: w
      mountPath: /w
  containers:
  - name: app
    image: localhost/busybox:latest
    command: [/bin/busybox, sh, -c, 'echo "app after $(cat /w/n) attempts"; exec sleep 3600']
    volumeMounts:
    - name: w
      mountPath: /w
`, name, policy)
	}
	cases := []struct{ pod, policy string }{{"always", "Always"}, {"onfailure", "OnFailure"}, {"never", "Never"}}
	for _, c := range cases {
		a.addPod(c.pod, manifest(c.pod, c.policy))
	}
	for _, c := range cases[:2] {
		pod := c.pod + "-n1"
		app := a.waitRunning(pod, "app")
		if l := a.waitLog(app, "app after"); !strings.Contains(l, "app after 3 attempts") {
			t.Errorf("%s: %q, want the app to start after the third attempt", c.policy, l)
		}
		f := strings.Fields(a.psLine(pod, "init"))
		if len(f) < 12 || f[5] != "exited" || f[len(f)-2] != "2" || f[len(f)-3] != "0" {
			t.Errorf("%s: init container %v, want exited 0 after 2 restarts", c.policy, f)
		}
	}
	// Never: one attempt, the pod failed, no app container.
	f := strings.Fields(a.psLine("never-n1", "init"))
	if len(f) < 12 || f[5] != "exited" || f[len(f)-2] != "0" || f[len(f)-3] != "1" {
		t.Errorf("Never: init container %v, want exited 1, no restart", f)
	}
	if l := a.psLine("never-n1", "app"); l != "" {
		t.Errorf("Never: the app container started after a failed init container: %s", l)
	}
}
