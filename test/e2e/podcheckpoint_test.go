package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ckpt-dev/ckpt/pkg/client"
)

// duoPod is a pod of two busybox containers sharing the emptyDir "data":
// the server writes a page into it and serves it on the pod's
// 127.0.0.1:8080, published on hostPort on the host's 127.0.0.1; the client
// fetches it over the pod's localhost every 40 rounds. Both append their
// own counter to one shared file, /data/seq.log ("a N", "b N"), every
// 50 ms: after a restore each counter must go on with no gap and no repeat,
// which holds only if both containers and the emptyDir are one cut.
func duoPod(name string, hostPort int) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: %s
spec:
  restartPolicy: Never
  volumes:
  - name: data
    emptyDir: {}
  containers:
  - name: server
    image: localhost/busybox:latest
    command: [/bin/busybox, sh, -c, 'echo pod-page > /data/index.html; (i=0; while true; do i=$((i+1)); echo "a $i" >> /data/seq.log; sleep 0.05; done) & exec httpd -f -p 127.0.0.1:8080 -h /data']
    ports:
    - containerPort: 8080
      hostPort: %d
      hostIP: 127.0.0.1
    volumeMounts:
    - name: data
      mountPath: /data
  - name: client
    image: localhost/busybox:latest
    command: [/bin/busybox, sh, -c, 'i=0; while true; do i=$((i+1)); echo "b $i" >> /data/seq.log; if [ $((i %% 40)) = 0 ]; then echo "talk $i $(wget -q -O - http://127.0.0.1:8080/index.html)"; fi; sleep 0.05; done']
    volumeMounts:
    - name: data
      mountPath: /data
`, name, hostPort)
}

// seqOf reads the shared sequence of a pod's emptyDir "data" and checks
// that each writer's counter runs 1, 2, 3, ... with no gap and no repeat.
// It returns how far each got.
func seqOf(t *testing.T, file string) map[string]int {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	last := map[string]int{}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	for i, line := range lines {
		who, num, ok := strings.Cut(line, " ")
		n, err := strconv.Atoi(num)
		if !ok || err != nil {
			if i == len(lines)-1 {
				continue // a line being written
			}
			t.Fatalf("%s line %d: %q", file, i+1, line)
		}
		if n != last[who]+1 {
			t.Fatalf("%s line %d: %s counted %d after %d: a gap or a repeat (not one cut)", file, i+1, who, n, last[who])
		}
		last[who] = n
	}
	return last
}

// podVolumeFile is a file in the emptyDir of the agent's only pod.
func (a *agent) podVolumeFile(volume, name string) string {
	a.t.Helper()
	m, _ := filepath.Glob(filepath.Join(a.rootDir, "ckpt", "pods", "*", "volumes", volume, name))
	if len(m) != 1 {
		a.t.Fatalf("%s in emptyDir %s: %v", name, volume, m)
	}
	return m[0]
}

// TestPodCheckpointRestore checkpoints a whole pod in one archive, removes
// it, and restores it from that archive under another name: it serves on
// its hostPort again with its emptyDir content, its containers talk over
// localhost again, and both counters in the shared emptyDir go on with no
// gap or repeat.
func TestPodCheckpointRestore(t *testing.T) {
	a := newAgent(t)
	hostPort := freePort(t)
	a.addPod("duo", duoPod("duo", hostPort))
	a.waitRunning("duo-n1", "server")
	client1 := a.waitRunning("duo-n1", "client")
	a.waitLog(client1, "talk 40 pod-page")
	page := fmt.Sprintf("http://127.0.0.1:%d/index.html", hostPort)
	a.waitFor(func() bool { b, err := httpGet(t, page); return err == nil && b == "pod-page" }, "hostPort to serve")
	seq := a.podVolumeFile("data", "seq.log")
	a.waitFor(func() bool { got := seqOf(t, seq); return got["a"] > 20 && got["b"] > 20 }, "both counters")

	// One archive for the pod, named as the kubelet names archives, 0600.
	path, resp := a.checkpoint("default/duo-n1", "?tcpEstablished=true")
	if path == "" {
		t.Fatalf("pod checkpoint: %d %s\nfailure logs:\n%s", resp.status, resp.body, a.failureLogs())
	}
	if resp.ctype != "application/json" {
		t.Errorf("content type %q", resp.ctype)
	}
	if ok, _ := regexp.MatchString(`^checkpoint-duo-n1_default-\d{4}-\d\d-\d\dT[0-9:]+Z\.tar$`, filepath.Base(path)); !ok {
		t.Errorf("archive name %s", filepath.Base(path))
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("archive %s: %v %v", path, st, err)
	}
	atCut := seqOf(t, seq)
	// The pod went on running, thawed.
	a.waitFor(func() bool { got := seqOf(t, seq); return got["a"] > atCut["a"]+5 && got["b"] > atCut["b"]+5 }, "the pod to go on after its checkpoint")

	// ckpt inspect lists each container of the pod archive.
	out := a.ckpt("inspect", path)
	for _, want := range []string{"Pod archive: default/duo-n1 (containers: client, server)", "Pod: default/duo-n1", "Signature: valid, "} {
		if !strings.Contains(out, want) {
			t.Errorf("inspect of the pod archive lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "Checkpoint size:"); n != 2 {
		t.Errorf("inspect shows %d containers, want 2:\n%s", n, out)
	}
	// The archive is listed as a pod's.
	list, err := a.api(testToken, nil).Archives(context.Background())
	if err != nil || len(list) != 1 || list[0].Kind != "pod" || list[0].Pod != "duo-n1" || list[0].Container != "" {
		t.Errorf("archive list %+v %v", list, err)
	}

	os.Remove(filepath.Join(a.manifests, "duo.yaml"))
	a.waitPodGone("duo-n1")

	// ckpt restore tells a pod archive and restores the whole pod.
	out = a.ckpt("restore", filepath.Base(path), "--pod", "default/duo-copy")
	if !strings.Contains(out, "restored pod default/duo-copy") || !strings.Contains(out, "server") || !strings.Contains(out, "client") {
		t.Fatalf("ckpt restore: %s", out)
	}
	a.waitRunning("duo-copy", "server")
	client2 := a.waitRunning("duo-copy", "client")
	// The hostPort serves the page from the restored emptyDir (nothing
	// wrote it again: the server resumed past that line).
	body, err := httpGet(t, page)
	if err != nil || body != "pod-page" {
		t.Fatalf("restored pod on its hostPort: %q %v", body, err)
	}
	// Over localhost again.
	a.waitLog(client2, " pod-page")
	// Each counter resumed where the cut was: no gap, no repeat.
	seq2 := a.podVolumeFile("data", "seq.log")
	start := seqOf(t, seq2)
	if start["a"] < atCut["a"] || start["b"] < atCut["b"] {
		t.Fatalf("restored sequence %v is behind the cut %v", start, atCut)
	}
	a.waitFor(func() bool { got := seqOf(t, seq2); return got["a"] > start["a"]+20 && got["b"] > start["b"]+20 }, "both counters to go on after the restore")
	t.Logf("cut at %v; restored at %v; now %v", atCut, start, seqOf(t, seq2))

	// The name is held: a second restore under it is refused.
	if got, _ := a.do("POST", "/restore/default/duo-copy?archive="+filepath.Base(path), testToken); got.status != http.StatusConflict {
		t.Errorf("restore into a taken pod name: %d %s", got.status, got.body)
	}
}

// TestPodCheckpointFailures: an unknown pod is 404, a container archive
// on the pod route and a pod archive on the container route are 400, a
// checkpoint that times out leaves every container of the pod thawed and
// running and no archive, and hostile pod archives are refused with 400.
func TestPodCheckpointFailures(t *testing.T) {
	a := newAgent(t, withArgs("--checkpoint-timeout-strict", "--restore-allow-unsigned"))

	resp, err := a.do("POST", "/checkpoint/default/nope", testToken)
	if err != nil || resp.status != http.StatusNotFound || resp.body != "pod does not exist" {
		t.Errorf("unknown pod: %d %q %v", resp.status, resp.body, err)
	}
	if resp, _ := a.do("POST", "/checkpoint/default/Bad_Pod", testToken); resp.status != http.StatusBadRequest {
		t.Errorf("bad pod name: %d %q", resp.status, resp.body)
	}
	if _, err := a.api(testToken, nil).CheckpointPod(context.Background(), "default", "nope", client.CheckpointOptions{}); err == nil {
		t.Error("client: unknown pod checkpointed")
	}

	// A pod whose second container holds 3 GiB: timeout=1 stops the dump.
	hostPort := freePort(t)
	a.addPod("big", strings.Replace(duoPod("big", hostPort), "  - name: client\n", `  - name: counter
    image: localhost/counter:latest
    env:
    - name: COUNTER_INTERVAL
      value: 200ms
    - name: COUNTER_MEM_MIB
      value: "3072"
  - name: client
`, 1))
	a.waitRunning("big-n1", "server")
	a.waitRunning("big-n1", "client")
	counter := a.waitRunning("big-n1", "counter")
	logPath := a.containerLog(counter)
	a.waitFor(func() bool { return len(countsIn(t, logPath)) > 0 }, "the 3 GiB counter's first line")
	var ids []string
	for _, c := range []string{"server", "client", "counter"} {
		ids = append(ids, a.fullID(strings.Fields(a.psLine("big-n1", c))[3]))
	}
	resp, err = a.do("POST", "/checkpoint/default/big-n1?timeout=1", testToken)
	if err != nil || resp.status != http.StatusInternalServerError || !strings.Contains(resp.body, "timed out") || !strings.Contains(resp.body, "default/big-n1") {
		t.Fatalf("timed-out pod checkpoint: %d %q %v", resp.status, resp.body, err)
	}
	t.Logf("timed out: %s", resp.body)
	for _, id := range ids {
		waitThawed(t, id, 10*time.Second)
	}
	keepsCounting(t, logPath)
	seq := a.podVolumeFile("data", "seq.log")
	before := seqOf(t, seq)
	a.waitFor(func() bool { got := seqOf(t, seq); return got["a"] > before["a"]+5 && got["b"] > before["b"]+5 }, "server and client to run on")
	// The pod's network works: the killed CRIU's network lock is gone
	// (the client's wget would hang in it, and so would the hostPort).
	if body, err := httpGet(t, fmt.Sprintf("http://127.0.0.1:%d/index.html", hostPort)); err != nil || body != "pod-page" {
		t.Errorf("hostPort after the timeout: %q %v", body, err)
	}
	clientID := strings.Fields(a.psLine("big-n1", "client"))[3]
	talks := strings.Count(string(mustRead(t, a.containerLog(clientID))), " pod-page")
	a.waitFor(func() bool { return strings.Count(string(mustRead(t, a.containerLog(clientID))), " pod-page") > talks }, "the client to talk to the server again")
	for _, c := range []string{"server", "client", "counter"} {
		if !strings.Contains(a.psLine("big-n1", c), " running ") {
			t.Errorf("%s after the timeout: %s", c, a.psLine("big-n1", c))
		}
	}
	if left := stagingEntries(t, a); len(left) > 0 {
		t.Errorf("staging holds %v", left)
	}
	if n := len(finalArchives(t, a)); n != 0 {
		t.Errorf("%d archives after a timeout", n)
	}

	// A real pod archive of a small pod, the base of the hostile ones.
	os.Remove(filepath.Join(a.manifests, "big.yaml"))
	a.waitPodGone("big-n1")
	a.addPod("duo", duoPod("duo", hostPort))
	a.waitRunning("duo-n1", "server")
	a.waitRunning("duo-n1", "client")
	path, resp := a.checkpoint("default/duo-n1", "?tcpEstablished=true")
	if path == "" {
		t.Fatalf("pod checkpoint: %d %s\nfailure logs:\n%s", resp.status, resp.body, a.failureLogs())
	}
	// The container route refuses a pod archive, and the pod route a
	// container archive, each saying which route to use.
	if got, _ := a.do("POST", "/restore/default/x/server?archive="+filepath.Base(path), testToken); got.status != http.StatusBadRequest || !strings.Contains(got.body, "pod archive") {
		t.Errorf("pod archive on the container route: %d %s", got.status, got.body)
	}
	ctrPath, resp := a.checkpoint("default/duo-n1/client", "?tcpEstablished=true")
	if ctrPath == "" {
		t.Fatalf("container checkpoint: %d %s", resp.status, resp.body)
	}
	if got, _ := a.do("POST", "/restore/default/x?archive="+filepath.Base(ctrPath), testToken); got.status != http.StatusBadRequest || !strings.Contains(got.body, "container archive") {
		t.Errorf("container archive on the pod route: %d %s", got.status, got.body)
	}

	var base []member
	for _, m := range readMembers(t, path) {
		if m.hdr.Name != "checksums.sha256" && m.hdr.Name != "checksums.sha256.sig" {
			base = append(base, m)
		}
	}
	var podJSON map[string]any
	for _, m := range base {
		if m.hdr.Name == "pod.json" {
			if err := json.Unmarshal(m.body, &podJSON); err != nil {
				t.Fatal(err)
			}
		}
	}
	victim := t.TempDir()
	up := strings.Repeat("../", 24) + strings.TrimPrefix(victim, "/")
	withHostPath := func() []byte {
		spec := podJSON["spec"].(map[string]any)
		vols := append([]any{}, spec["volumes"].([]any)...)
		spec2 := map[string]any{}
		for k, v := range spec {
			spec2[k] = v
		}
		spec2["volumes"] = append(vols, map[string]any{"name": "host", "hostPath": map[string]any{"path": victim}})
		p := map[string]any{}
		for k, v := range podJSON {
			p[k] = v
		}
		p["spec"] = spec2
		b, _ := json.Marshal(p)
		return b
	}
	add := func(extra ...member) []member { return append(append([]member{}, base...), extra...) }
	// The original goes, so that its hostPort is free for the restores.
	os.Remove(filepath.Join(a.manifests, "duo.yaml"))
	a.waitPodGone("duo-n1")
	for _, c := range []struct {
		name    string
		members []member
		want    string
	}{
		{"dotdot", add(regular("containers/server/"+up+"/pwned", []byte("x"), 0o644)), "path escapes"},
		{"volume-escape", replaceMember(base, "volumes/data.tar", writeTar(t, []member{regular(up+"/pwned", []byte("x"), 0o644)})), "path escapes"},
		{"volume-setuid", replaceMember(base, "volumes/data.tar", writeTar(t, []member{regular("evil", []byte("x"), 0o4755)})), "setuid"},
		{"volume-unknown", add(regular("volumes/other.tar", writeTar(t, nil), 0o600)), "not in the pod's spec"},
		{"container-unknown", add(regular("containers/intruder/config.dump", []byte("{}"), 0o600)), "not in the pod's spec"},
		{"container-missing", func() []member {
			var out []member
			for _, m := range base {
				if !strings.HasPrefix(m.hdr.Name, "containers/client") {
					out = append(out, m)
				}
			}
			return out
		}(), "no containers/client/"},
		{"hostpath", replaceMember(base, "pod.json", withHostPath()), "--restore-allow-host-path"},
		{"pod-json-garbage", replaceMember(base, "pod.json", []byte("{\"kind\":\"Pod\",\"spec\":{\"containers\":[{\"name\":\"x\"}]}, \"junk\": [")), "pod.json"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := a.post("/restore/default/evil-"+c.name, testToken, bytes.NewReader(writeTar(t, c.members)))
			if err != nil {
				t.Fatal(err)
			}
			if got.status != http.StatusBadRequest || !strings.Contains(got.body, c.want) {
				t.Errorf("%d %q, want 400 with %q", got.status, got.body, c.want)
			}
			if _, err := os.Stat(filepath.Join(victim, "pwned")); err == nil {
				t.Fatal("a file escaped into the victim directory")
			}
			if line := a.psLine("evil-"+c.name, "server"); line != "" {
				t.Errorf("a refused restore left %s", line)
			}
			if left, _ := os.ReadDir(filepath.Join(a.rootDir, "ckpt", "pods")); len(left) > 0 {
				t.Errorf("a refused restore left pod directories %v", left)
			}
		})
	}
	// The same members, unchanged (and unsigned: this agent allows it),
	// restore: the refusals above were the malice's.
	got, err := a.post("/restore/default/control", testToken, bytes.NewReader(writeTar(t, base)))
	if err != nil || got.status != http.StatusCreated {
		t.Fatalf("control: %d %s %v", got.status, got.body, err)
	}
	var rp client.RestoredPod
	if err := json.Unmarshal([]byte(got.body), &rp); err != nil || rp.Pod != "control" || len(rp.Containers) != 2 {
		t.Errorf("control answer %s: %v", got.body, err)
	}
	if left := stagingEntries(t, a); len(left) > 0 {
		t.Errorf("staging holds %v", left)
	}
}

// TestPodImage: a pod archive becomes a pod image (`ckpt image
// from-checkpoint`), which `ckpt inspect` reads, `ckpt restore REF` restores
// as a whole pod, and so does POST /restore/NS/POD?image=REF.
func TestPodImage(t *testing.T) {
	a := newAgent(t)
	hostPort := freePort(t)
	a.addPod("duo", duoPod("duo", hostPort))
	a.waitRunning("duo-n1", "server")
	a.waitRunning("duo-n1", "client")
	a.waitFor(func() bool {
		got := seqOf(t, a.podVolumeFile("data", "seq.log"))
		return got["a"] > 10 && got["b"] > 10
	}, "both counters")
	// From the CLI: NAMESPACE/POD is the whole pod.
	out, err := a.ckptErr("checkpoint", "default/duo-n1", "--tcp-established")
	path := strings.TrimSpace(out)
	if err != nil || !strings.HasPrefix(filepath.Base(path), "checkpoint-duo-n1_default-") {
		t.Fatalf("ckpt checkpoint default/duo-n1: %v\n%s\nfailure logs:\n%s", err, out, a.failureLogs())
	}
	const ref = "localhost/ckpt/duo:1"
	if out := a.ckpt("image", "from-checkpoint", path, ref); !strings.Contains(out, "checkpoint of pod default/duo-n1") {
		t.Errorf("from-checkpoint: %s", out)
	}
	if out := a.ckpt("inspect", ref); strings.Count(out, "Pod archive: default/duo-n1") != 2 {
		t.Errorf("inspect of the pod image:\n%s", out)
	}
	os.Remove(filepath.Join(a.manifests, "duo.yaml"))
	a.waitPodGone("duo-n1")
	page := fmt.Sprintf("http://127.0.0.1:%d/index.html", hostPort)

	// From the CLI: the local image's archive is streamed, and told a pod's.
	if out := a.ckpt("restore", ref, "--pod", "default/duo-img"); !strings.Contains(out, "restored pod default/duo-img") {
		t.Fatalf("ckpt restore %s: %s", ref, out)
	}
	a.waitRunning("duo-img", "server")
	if body, err := httpGet(t, page); err != nil || body != "pod-page" {
		t.Fatalf("pod restored from the image, on its hostPort: %q %v", body, err)
	}
	seqOf(t, a.podVolumeFile("data", "seq.log"))
	a.ckpt("rm", "default/duo-img/server", "default/duo-img/client")
	a.waitPodGoneCtr("duo-img", "server")

	// From the API, by reference.
	got, err := a.do("POST", "/restore/default/duo-api?image="+ref, testToken)
	if err != nil || got.status != http.StatusCreated {
		t.Fatalf("POST /restore/default/duo-api?image=%s: %d %s %v", ref, got.status, got.body, err)
	}
	var rp client.RestoredPod
	if err := json.Unmarshal([]byte(got.body), &rp); err != nil || rp.Pod != "duo-api" || len(rp.Containers) != 2 {
		t.Errorf("answer %s: %v", got.body, err)
	}
	a.waitRunning("duo-api", "client")
	if body, err := httpGet(t, page); err != nil || body != "pod-page" {
		t.Fatalf("pod restored by reference, on its hostPort: %q %v", body, err)
	}
	// The container route refuses the pod image, naming the pod route.
	if got, _ := a.do("POST", "/restore/default/x/server?image="+ref, testToken); got.status != http.StatusBadRequest || !strings.Contains(got.body, "pod archive") {
		t.Errorf("pod image on the container route: %d %s", got.status, got.body)
	}
	a.ckpt("rm", "default/duo-api/server", "default/duo-api/client")
	a.waitPodGoneCtr("duo-api", "server")

	// Through a registry: a client with nothing local names the image, the
	// agent pulls it, and the CLI goes to the pod route for a pod image.
	reg := startRegistry(t, false)
	remoteRef := reg.addr + "/ckpt/duo:1"
	a.ckpt("image", "push", ref, remoteRef)
	cli := exec.Command(ckptBin, "--root-dir", t.TempDir(), "restore", remoteRef, "--pod", "default/duo-reg",
		"--server", a.url(""), "--token", testToken)
	cliOut, err := cli.CombinedOutput()
	if err != nil || !strings.Contains(string(cliOut), "restored pod default/duo-reg") {
		t.Fatalf("ckpt restore %s: %v\n%s", remoteRef, err, cliOut)
	}
	a.waitRunning("duo-reg", "server")
	if body, err := httpGet(t, page); err != nil || body != "pod-page" {
		t.Fatalf("pod restored from the registry, on its hostPort: %q %v", body, err)
	}
}
