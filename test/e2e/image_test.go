package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// registryBin is Debian 12's docker-registry, unpacked by
// hack/install-registry.sh (make deps).
func registryBin(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("CKPT_REGISTRY"); p != "" {
		return p
	}
	prefix := os.Getenv("CKPT_REGISTRY_PREFIX")
	if prefix == "" {
		prefix = "/opt/ckpt/registry"
	}
	p := filepath.Join(prefix, "usr/bin/docker-registry")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("no registry at %s: run hack/install-registry.sh (make deps)", p)
	}
	return p
}

// testRegistry is a docker-registry on 127.0.0.1, stopped by PID when the
// test ends.
type testRegistry struct {
	addr string
	dir  string
	cmd  *exec.Cmd
}

func startRegistry(t *testing.T, readOnly bool) *testRegistry {
	t.Helper()
	dir := t.TempDir()
	r := &testRegistry{addr: fmt.Sprintf("127.0.0.1:%d", freePort(t)), dir: dir}
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  maintenance:
    uploadpurging:
      enabled: false
    readonly:
      enabled: %v
http:
  addr: %s
`, filepath.Join(dir, "data"), readOnly, r.addr)
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "registry.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	r.cmd = exec.Command(registryBin(t), "serve", cfgPath)
	r.cmd.Stdout, r.cmd.Stderr = logf, logf
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		r.cmd.Process.Signal(syscall.SIGTERM)
		r.cmd.Wait()
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := r.catalog()
		if err == nil {
			return r
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "registry.log"))
			t.Fatalf("registry on %s did not start: %v\n%s", r.addr, err, log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// catalog lists the registry's repositories (a registry, not ckpt's API:
// through go-containerregistry).
func (r *testRegistry) catalog() ([]string, error) {
	reg, err := name.NewRegistry(r.addr, name.Insecure)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return remote.Catalog(ctx, reg)
}

func (r *testRegistry) repos(t *testing.T) []string {
	t.Helper()
	repos, err := r.catalog()
	if err != nil {
		t.Fatal(err)
	}
	return repos
}

// truncatingProxy forwards to a registry and cuts every large blob
// download in half.
func truncatingProxy(t *testing.T, target string) (string, *atomic.Int32) {
	t.Helper()
	var cut atomic.Int32
	u, _ := url.Parse("http://" + target)
	p := httputil.NewSingleHostReverseProxy(u)
	p.ModifyResponse = func(resp *http.Response) error {
		if resp.Request.Method == http.MethodGet && strings.Contains(resp.Request.URL.Path, "/blobs/") && resp.ContentLength > 64<<10 {
			cut.Add(1)
			b, _ := io.ReadAll(io.LimitReader(resp.Body, resp.ContentLength/2))
			resp.Body.Close()
			// Declare the full length and hang up early, as a broken
			// connection does.
			resp.Body = io.NopCloser(bytes.NewReader(b))
		}
		return nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: p}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String(), &cut
}

// restoreImage POSTs a restore from a checkpoint image.
func (a *agent) restoreImage(ref, ns, pod, ctr string) (restored, response) {
	a.t.Helper()
	resp, err := a.do("POST", fmt.Sprintf("/restore/%s/%s/%s?image=%s", ns, pod, ctr, url.QueryEscape(ref)), testToken)
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

// checkpointImageNames lists the checkpoint images in an agent's store.
func (a *agent) checkpointImageNames() []string {
	a.t.Helper()
	b, err := os.ReadFile(filepath.Join(a.rootDir, "ckpt", "images", "checkpoint-images", "index.json"))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		a.t.Fatal(err)
	}
	var idx struct {
		Manifests []struct{ Annotations map[string]string }
	}
	json.Unmarshal(b, &idx)
	var out []string
	for _, m := range idx.Manifests {
		out = append(out, m.Annotations["org.opencontainers.image.ref.name"])
	}
	return out
}

// checkpointBlobs counts the blobs (and partial blobs) in an agent's store.
func (a *agent) checkpointBlobs() int {
	ents, _ := os.ReadDir(filepath.Join(a.rootDir, "ckpt", "images", "checkpoint-images", "blobs", "sha256"))
	return len(ents)
}

// layerOfSaved unpacks an OCI archive written by `ckpt image save` and
// returns the path of its one layer.
func layerOfSaved(t *testing.T, file string) string {
	t.Helper()
	dir := t.TempDir()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, filepath.Clean("/"+h.Name))
		if h.Typeflag == tar.TypeDir {
			os.MkdirAll(p, 0o700)
			continue
		}
		os.MkdirAll(filepath.Dir(p), 0o700)
		b, _ := io.ReadAll(tr)
		os.WriteFile(p, b, 0o600)
	}
	var idx struct {
		Manifests []struct {
			Digest      string
			Annotations map[string]string
		}
	}
	b, _ := os.ReadFile(filepath.Join(dir, "index.json"))
	if err := json.Unmarshal(b, &idx); err != nil || len(idx.Manifests) != 1 {
		t.Fatalf("index.json of %s: %v %s", file, err, b)
	}
	blob := func(d string) string { return filepath.Join(dir, "blobs", "sha256", strings.TrimPrefix(d, "sha256:")) }
	var m struct {
		Annotations map[string]string
		Layers      []struct{ Digest string }
	}
	b, _ = os.ReadFile(blob(idx.Manifests[0].Digest))
	if err := json.Unmarshal(b, &m); err != nil || len(m.Layers) != 1 {
		t.Fatalf("manifest of %s: %v %s", file, err, b)
	}
	for _, k := range []string{"io.kubernetes.cri-o.annotations.checkpoint.name", "org.criu.checkpoint.container.name"} {
		if m.Annotations[k] != "counter" {
			t.Errorf("saved manifest: %s = %q, want counter", k, m.Annotations[k])
		}
	}
	return blob(m.Layers[0].Digest)
}

// TestCheckpointImages: a checkpoint on agent A becomes an image, is
// pushed to a real registry on loopback, pulled by agent B (another root
// dir) and restored there with its counter continuing; then bad input.
func TestCheckpointImages(t *testing.T) {
	a := newAgent(t)
	b := newAgent(t, withArgs("--restore-trusted-keys", a.publicKeyFile()))
	reg := startRegistry(t, false)
	tokenFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tokenFile, []byte(testToken), 0o600)

	a.addPod("counter", counterManifest("counter", nil))
	a.waitRunning("counter-n1", "counter")
	path, resp := a.checkpoint("default/counter-n1/counter", "")
	if path == "" {
		t.Fatalf("checkpoint: %d %s", resp.status, resp.body)
	}
	k := archivedCount(t, path)
	ref := reg.addr + "/ckpt/counter:v1"

	out := a.ckpt("image", "from-checkpoint", path, ref)
	if !strings.Contains(out, "Built "+ref) || !strings.Contains(out, "checkpoint of counter") {
		t.Fatalf("from-checkpoint said %q", out)
	}
	if out := a.ckpt("image", "ls"); !strings.Contains(out, ref+" (checkpoint of counter)") {
		t.Errorf("image ls:\n%s", out)
	}

	t.Run("checkpointctl reads the archive the image carries", func(t *testing.T) {
		saved := filepath.Join(t.TempDir(), "counter-ckpt.tar")
		a.ckpt("image", "save", ref, "-o", saved)
		layer := layerOfSaved(t, saved)
		want, _ := os.ReadFile(path)
		got, _ := os.ReadFile(layer)
		if !bytes.Equal(want, got) {
			t.Errorf("the layer (%d bytes) is not the archive (%d bytes)", len(got), len(want))
		}
		out, err := exec.Command("checkpointctl", "inspect", layer).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "counter") || !strings.Contains(string(out), "localhost/counter:latest") {
			t.Errorf("checkpointctl inspect: %v\n%s", err, out)
		}
	})

	if out := a.ckpt("image", "push", ref); !strings.Contains(out, "Pushed "+reg.addr+"/ckpt/counter@sha256:") {
		t.Fatalf("push said %q", out)
	}
	// B restores what A signed once it trusts A's key.
	b.stop()
	b.extra = append(b.extra, "--restore-trusted-keys", a.publicKeyFile())
	b.start()

	t.Run("agent B pulls and restores it through the API", func(t *testing.T) {
		r, resp := b.restoreImage(ref, "default", "counter-img", "counter")
		if resp.status != 201 || r.State != "running" {
			log, _ := os.ReadFile(b.logPath)
			t.Fatalf("restore from %s: %d %s\nagent log:\n%s", ref, resp.status, resp.body, log)
		}
		resumesAt(t, b.containerLog(r.ID[:12]), k)
		if names := b.checkpointImageNames(); len(names) != 1 || names[0] != ref {
			t.Errorf("B's store after the pull: %v", names)
		}
		b.rmContainer(r.ID)
	})

	t.Run("ckpt restore REF and inspect REF on B", func(t *testing.T) {
		out := b.ckpt("restore", ref, "--server", b.url(""), "--token-file", tokenFile, "--pod", "default/counter-cli")
		if !strings.Contains(out, "restored default/counter-cli/counter") {
			t.Fatalf("restore said %q", out)
		}
		id := b.waitRunning("counter-cli", "counter")
		resumesAt(t, b.containerLog(id), k)
		b.rmContainer(id)
		if out := b.ckpt("inspect", ref); !strings.Contains(out, "counter") || !strings.Contains(out, "Pod: default/counter") {
			t.Errorf("inspect %s:\n%s", ref, out)
		}
		if out, err := b.ckptErr("memsearch", ref, "--search", "COUNTER_INTERVAL=200ms"); err != nil || !strings.Contains(out, "COUNTER_INTERVAL") {
			t.Errorf("memsearch %s: %v\n%s", ref, err, out)
		}
	})

	t.Run("migrate --via the registry", func(t *testing.T) {
		out := a.ckpt("migrate", "default/counter-n1/counter", "--from", a.url(""), "--to", b.url(""),
			"--token-file", tokenFile, "--pod", "default/counter-via", "--via", reg.addr+"/ckpt/migrated")
		if !strings.Contains(out, "pushed "+reg.addr+"/ckpt/migrated@sha256:") || !strings.Contains(out, "migrated default/counter-n1/counter") {
			t.Fatalf("migrate said %q", out)
		}
		_, rest, _ := strings.Cut(out, "checkpointed on "+a.url("")+": ")
		name, _, _ := strings.Cut(rest, "\n")
		k := archivedCount(t, filepath.Join(a.rootDir, "checkpoints", name))
		id := b.waitRunning("counter-via", "counter")
		resumesAt(t, b.containerLog(id), k)
		b.rmContainer(id)
	})

	// Bad input: a clear error, and nothing left behind.
	c := newAgent(t)
	nothingLeft := func(t *testing.T) {
		t.Helper()
		if names := c.checkpointImageNames(); len(names) != 0 {
			t.Errorf("images left in the store: %v", names)
		}
		if n := c.checkpointBlobs(); n != 0 {
			t.Errorf("%d blobs left in the store", n)
		}
		if line := c.psLine("x", "counter"); line != "" {
			t.Errorf("a container was left: %s", line)
		}
	}
	t.Run("unknown reference", func(t *testing.T) {
		_, resp := c.restoreImage(reg.addr+"/ckpt/nothing:v1", "default", "x", "counter")
		if resp.status != 404 || !strings.Contains(resp.body, "not found") {
			t.Errorf("restore from an unknown image: %d %s, want 404", resp.status, resp.body)
		}
		out, err := c.ckptErr("image", "pull", reg.addr+"/ckpt/nothing:v1")
		t.Logf("restore: %d %s; pull: %s", resp.status, resp.body, out)
		if err == nil || !strings.Contains(out, "not found") {
			t.Errorf("pull of an unknown image: %v %s", err, out)
		}
		out, err = c.ckptErr("image", "save", "localhost/nothing", "-o", filepath.Join(t.TempDir(), "x.tar"))
		if err == nil || !strings.Contains(out, "not found") {
			t.Errorf("save of an unknown image: %v %s", err, out)
		}
		nothingLeft(t)
	})
	t.Run("not a checkpoint image", func(t *testing.T) {
		img, err := random.Image(100<<10, 1)
		if err != nil {
			t.Fatal(err)
		}
		plain, _ := name.ParseReference(reg.addr+"/plain/app:1", name.Insecure)
		if err := remote.Write(plain, img); err != nil {
			t.Fatal(err)
		}
		_, resp := c.restoreImage(plain.String(), "default", "x", "counter")
		if resp.status != 400 || !strings.Contains(resp.body, "not a checkpoint image") {
			t.Errorf("restore from a plain image: %d %s, want 400", resp.status, resp.body)
		}
		out, err := c.ckptErr("image", "pull", plain.String())
		t.Logf("restore: %d %s; pull: %s", resp.status, resp.body, out)
		if err == nil || !strings.Contains(out, "not a checkpoint image") {
			t.Errorf("pull of a plain image: %v %s", err, out)
		}
		nothingLeft(t)
	})
	t.Run("a registry that refuses the push", func(t *testing.T) {
		ro := startRegistry(t, true)
		out, err := a.ckptErr("image", "push", ref, ro.addr+"/ckpt/counter:v1")
		t.Logf("read-only: %s", out)
		if err == nil || !strings.Contains(out, "push "+ro.addr) {
			t.Errorf("push to a read-only registry: %v %s", err, out)
		}
		if repos := ro.repos(t); len(repos) != 0 {
			t.Errorf("the read-only registry has %v", repos)
		}
		closed := fmt.Sprintf("127.0.0.1:%d", freePort(t))
		out, err = a.ckptErr("image", "push", ref, closed+"/ckpt/counter:v1")
		t.Logf("closed port: %s", out)
		if err == nil || !strings.Contains(out, "connection refused") {
			t.Errorf("push to a closed port: %v %s", err, out)
		}
		if names := a.checkpointImageNames(); len(names) != 1 {
			t.Errorf("A's store after failed pushes: %v", names)
		}
	})
	t.Run("image rm removes the name and its blobs", func(t *testing.T) {
		if out := a.ckpt("image", "rm", ref); !strings.Contains(out, "Removed "+ref) {
			t.Errorf("rm said %q", out)
		}
		if names, n := a.checkpointImageNames(), a.checkpointBlobs(); len(names) != 0 || n != 0 {
			t.Errorf("after rm: %v, %d blobs", names, n)
		}
		if out, err := a.ckptErr("image", "rm", ref); err == nil {
			t.Errorf("rm of a removed image: %s", out)
		}
	})
	t.Run("the signature rules apply to images", func(t *testing.T) {
		// c does not trust a's key: the image's archive is refused like
		// the archive itself would be.
		_, resp := c.restoreImage(reg.addr+"/ckpt/counter:v1", "default", "x", "counter")
		if resp.status != 400 || !strings.Contains(resp.body, "untrusted key") {
			t.Errorf("restore of an image signed by an untrusted key: %d %s, want 400", resp.status, resp.body)
		}
		nothingLeft(t)
	})
	t.Run("a truncated pull", func(t *testing.T) {
		proxy, cut := truncatingProxy(t, reg.addr)
		out, err := c.ckptErr("image", "pull", proxy+"/ckpt/counter:v1")
		if err == nil || cut.Load() == 0 {
			t.Fatalf("pull through a truncating proxy: %v (%d cut) %s", err, cut.Load(), out)
		}
		_, resp := c.restoreImage(proxy+"/ckpt/counter:v1", "default", "x", "counter")
		t.Logf("pull: %s; restore: %d %s", out, resp.status, resp.body)
		if resp.status == 201 {
			t.Fatalf("restored from a truncated download")
		}
		nothingLeft(t)
	})
}
