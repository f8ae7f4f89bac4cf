package ckptimage

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"testing"

	metadata "github.com/checkpoint-restore/checkpointctl/lib"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/ckpt-dev/ckpt/internal/archive"
	"github.com/ckpt-dev/ckpt/internal/runtime"
)

const dumpLog = "(00.000000) CRIU run id = x\n(00.000047) Version: 4.2.1 (gitid 0)\n" +
	"(00.000051) Running on vm Linux 6.18.44-fc #1 SMP PREEMPT_DYNAMIC @0 x86_64\n"

// testArchive writes a checkpoint archive the way ckpt does (with
// checksums.sha256) and returns its bytes.
func testArchive(t testing.TB, extra map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := archive.NewWriter(&buf)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(w.AddJSON(metadata.ConfigDumpFile, metadata.ContainerConfig{
		ID: "abc", Name: "counter", RootfsImageName: "localhost/counter:latest", RootfsImageRef: "sha256:1234",
		RootfsImage: "counter", OCIRuntime: "runc",
	}))
	must(w.AddJSON(metadata.SpecDumpFile, map[string]any{"annotations": map[string]string{
		"io.container.manager":                "ckpt",
		"io.kubernetes.cri.container-name":    "counter",
		"io.kubernetes.cri.sandbox-name":      "web",
		"io.kubernetes.cri.sandbox-namespace": "default",
	}}))
	must(w.AddBytes("checkpoint/inventory.img", []byte("criu images")))
	must(w.AddBytes("checkpoint/pages-1.img", bytes.Repeat([]byte{7}, 10000)))
	must(w.AddBytes(metadata.DumpLogFile, []byte(dumpLog)))
	names := make([]string, 0, len(extra))
	for n := range extra {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		must(w.AddBytes(n, []byte(extra[n])))
	}
	must(w.Close())
	return buf.Bytes()
}

// fixedSigner "signs" with fixed bytes: the store must carry them as they are.
type fixedSigner struct{}

func (fixedSigner) Sign([]byte) ([]byte, error) { return []byte("signature bytes"), nil }

// sealedArchive appends checksums.sha256.sig, as the agent does.
func sealedArchive(t testing.TB, tarBytes []byte) []byte {
	t.Helper()
	p := filepath.Join(t.TempDir(), "a.tar")
	if err := os.WriteFile(p, tarBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := archive.SealFile(p, fixedSigner{}, archive.Limits{}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func build(t testing.TB, tarBytes []byte) *Built {
	t.Helper()
	b, err := Build(bytes.NewReader(tarBytes), t.TempDir(), archive.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func TestBuildAnnotationsAndOneLayer(t *testing.T) {
	b := build(t, testArchive(t, nil))
	m, err := b.Image.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		AnnotationCRIOName:                           "counter",
		AnnotationName:                               "counter",
		metadata.CheckpointAnnotationEngine:          "ckpt",
		metadata.CheckpointAnnotationPod:             "web",
		metadata.CheckpointAnnotationNamespace:       "default",
		metadata.CheckpointAnnotationRootfsImageName: "localhost/counter:latest",
		metadata.CheckpointAnnotationRootfsImageID:   "sha256:1234",
		metadata.CheckpointAnnotationRuntimeName:     "runc",
		metadata.CheckpointAnnotationCriuVersion:     "4.2.1",
		metadata.CheckpointAnnotationHostKernel:      "6.18.44-fc",
		metadata.CheckpointAnnotationHostArch:        "x86_64",
	}
	for k, v := range want {
		if m.Annotations[k] != v {
			t.Errorf("annotation %s = %q, want %q", k, m.Annotations[k], v)
		}
	}
	if len(m.Layers) != 1 || m.Layers[0].MediaType != types.OCIUncompressedLayer {
		t.Fatalf("layers = %+v, want one uncompressed OCI layer", m.Layers)
	}
	if m.MediaType != types.OCIManifestSchema1 || m.Config.MediaType != types.OCIConfigJSON {
		t.Errorf("media types %s / %s, want OCI", m.MediaType, m.Config.MediaType)
	}
	cf, err := b.Image.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != "linux" || cf.Architecture != "amd64" {
		t.Errorf("platform %s/%s, want linux/amd64", cf.OS, cf.Architecture)
	}
	// The same archive gives the same image.
	b2 := build(t, testArchive(t, nil))
	d1, _ := b.Image.Digest()
	d2, _ := b2.Image.Digest()
	if d1 != d2 {
		t.Errorf("two builds of one archive: %s and %s", d1, d2)
	}
}

func TestBuildRefusesNonCheckpointArchives(t *testing.T) {
	var buf bytes.Buffer
	w := archive.NewWriter(&buf)
	if err := w.AddBytes("hello.txt", []byte("hi")); err != nil {
		t.Fatal(err)
	}
	w.Close()
	cases := map[string][]byte{
		"no config.dump": buf.Bytes(),
		"not a tar":      []byte(strings.Repeat("garbage ", 200)),
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			_, err := Build(bytes.NewReader(in), dir, archive.Limits{})
			if err == nil {
				t.Fatal("Build accepted it")
			}
			if left, _ := os.ReadDir(dir); len(left) != 0 {
				t.Errorf("left behind %d files", len(left))
			}
		})
	}
	var nc *NotCheckpointError
	if _, err := Build(bytes.NewReader(cases["no config.dump"]), t.TempDir(), archive.Limits{}); !errors.As(err, &nc) || !errors.Is(err, runtime.ErrInvalid) {
		t.Errorf("err = %v, want a NotCheckpointError matching ErrInvalid", err)
	}
}

func readAll(t testing.TB, rc io.ReadCloser, err error) []byte {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestStoreRoundTripKeepsTheArchiveBytes(t *testing.T) {
	in := sealedArchive(t, testArchive(t, nil))
	b := build(t, in)
	s, err := Open(filepath.Join(t.TempDir(), "store"))
	if err != nil {
		t.Fatal(err)
	}
	e, err := s.Add(b.Image, "localhost/ckpt/counter:v1")
	if err != nil {
		t.Fatal(err)
	}
	if e.Name != "localhost/ckpt/counter:v1" || e.Container != "counter" {
		t.Errorf("entry %+v", e)
	}
	b.Close()
	rc, _, err := s.OpenArchive(context.Background(), "localhost/ckpt/counter:v1", false, RemoteOptions{})
	out := readAll(t, rc, err)
	if !bytes.Equal(in, out) {
		t.Fatalf("archive from the image differs: %d bytes in, %d out", len(in), len(out))
	}
	// The members, signature included, are the archive's.
	dest := filepath.Join(t.TempDir(), "x")
	man, err := archive.Extract(bytes.NewReader(out), dest, archive.Limits{}, nil)
	if err != nil || man == nil {
		t.Fatalf("extract: %v (manifest %v)", err, man)
	}
	if string(man.Signature) != "signature bytes" {
		t.Errorf("signature member: %q", man.Signature)
	}
	// By digest prefix, and gone after Remove with its blobs.
	if _, _, err := s.Resolve(e.Digest[:14]); err != nil {
		t.Errorf("resolve by digest prefix: %v", err)
	}
	if _, err := s.Remove("localhost/ckpt/counter:v1"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Resolve("localhost/ckpt/counter:v1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("after remove: %v", err)
	}
	blobs, _ := os.ReadDir(filepath.Join(s.Dir(), "blobs", "sha256"))
	if len(blobs) != 0 {
		t.Errorf("%d blobs left after remove", len(blobs))
	}
	if fi, err := os.Stat(s.Dir()); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("store dir mode %v, %v", fi.Mode(), err)
	}
}

func TestSaveWritesAnOCIArchive(t *testing.T) {
	in := testArchive(t, nil)
	b := build(t, in)
	s, _ := Open(filepath.Join(t.TempDir(), "store"))
	if _, err := s.Add(b.Image, "example.com/ckpt/counter:v1"); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "img.tar")
	if err := s.SaveFile("example.com/ckpt/counter:v1", out); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(out)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("saved file: %v %v", fi, err)
	}
	// Unpack it and read it back as a layout.
	dir := t.TempDir()
	f, _ := os.Open(out)
	defer f.Close()
	if _, err := archive.Extract(f, dir, archive.Limits{}, nil); err != nil {
		t.Fatal(err)
	}
	lp, err := layout.FromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	idx, _ := lp.ImageIndex()
	im, err := idx.IndexManifest()
	if err != nil || len(im.Manifests) != 1 {
		t.Fatalf("index: %v %+v", err, im)
	}
	d := im.Manifests[0]
	if d.Annotations[annotationContainerdName] != "example.com/ckpt/counter:v1" {
		t.Errorf("annotations %v", d.Annotations)
	}
	img, err := idx.Image(d.Digest)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := Archive(img, "saved")
	if got := readAll(t, rc, err); !bytes.Equal(got, in) {
		t.Error("the saved image carries other bytes")
	}
}

func TestArchiveRefusesNonCheckpointImages(t *testing.T) {
	img, err := random.Image(1000, 2)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Archive(img, "random")
	var nc *NotCheckpointError
	if !errors.As(err, &nc) || !errors.Is(err, runtime.ErrInvalid) || !strings.Contains(err.Error(), AnnotationName) {
		t.Fatalf("err = %v, want a NotCheckpointError naming the annotation", err)
	}
	s, _ := Open(filepath.Join(t.TempDir(), "store"))
	if _, err := s.Add(img, "localhost/random"); !errors.As(err, &nc) {
		t.Errorf("Add: %v", err)
	}
}

func TestArchiveDetectsAChangedLayer(t *testing.T) {
	b := build(t, testArchive(t, nil))
	s, _ := Open(filepath.Join(t.TempDir(), "store"))
	if _, err := s.Add(b.Image, "localhost/c"); err != nil {
		t.Fatal(err)
	}
	m, _ := b.Image.Manifest()
	p := filepath.Join(s.Dir(), "blobs", "sha256", m.Layers[0].Digest.Hex)
	data, _ := os.ReadFile(p)
	data[len(data)/2] ^= 0xff
	os.WriteFile(p, data, 0o600)
	rc, _, err := s.OpenArchive(context.Background(), "localhost/c", false, RemoteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if _, err := io.ReadAll(rc); !errors.Is(err, errDigest) {
		t.Errorf("read changed layer: %v, want a digest mismatch", err)
	}
}

// truncating cuts blob downloads short, counting them.
type truncating struct {
	rt   http.RoundTripper
	hits atomic.Int32
}

func (t *truncating) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.rt.RoundTrip(r)
	if err == nil && r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") && resp.ContentLength > 2000 {
		t.hits.Add(1)
		body, _ := io.ReadAll(io.LimitReader(resp.Body, resp.ContentLength/2))
		resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(body))
	}
	return resp, err
}

func TestPushPull(t *testing.T) {
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	if !IsLoopback(host) {
		t.Fatalf("%s is not loopback?", host)
	}
	in := testArchive(t, nil)
	b := build(t, in)
	src, _ := Open(filepath.Join(t.TempDir(), "a"))
	if _, err := src.Add(b.Image, "localhost/counter:1"); err != nil {
		t.Fatal(err)
	}
	o := RemoteOptions{Keychain: authn.NewMultiKeychain()}
	ctx := context.Background()
	var moved int64
	o.Progress = func(done, total int64) { moved = done }
	pushed, err := src.Push(ctx, "localhost/counter:1", host+"/ckpt/counter:1", o)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(pushed, "@sha256:") || moved == 0 {
		t.Errorf("pushed %q, progress %d", pushed, moved)
	}
	o.Progress = nil

	dst, _ := Open(filepath.Join(t.TempDir(), "b"))
	t.Run("truncated", func(t *testing.T) {
		tr := &truncating{rt: http.DefaultTransport}
		o := o
		o.Transport = tr
		_, err := dst.Pull(ctx, host+"/ckpt/counter:1", o)
		if err == nil || tr.hits.Load() == 0 {
			t.Fatalf("pull through a truncating proxy: %v (%d cut)", err, tr.hits.Load())
		}
		if blobs, _ := os.ReadDir(filepath.Join(dst.Dir(), "blobs", "sha256")); len(blobs) != 0 {
			t.Errorf("left %d blobs behind", len(blobs))
		}
		if list, _ := dst.List(); len(list) != 0 {
			t.Errorf("left %v behind", list)
		}
	})
	t.Run("unknown", func(t *testing.T) {
		_, err := dst.Pull(ctx, host+"/ckpt/nothing:1", o)
		if !errors.Is(err, ErrNotFound) {
			t.Errorf("err = %v, want ErrNotFound", err)
		}
	})
	t.Run("not a checkpoint", func(t *testing.T) {
		img, _ := random.Image(5000, 1)
		ref, _ := name.ParseReference(host + "/plain/img:1")
		if err := remote.Write(ref, img); err != nil {
			t.Fatal(err)
		}
		tr := &truncating{rt: http.DefaultTransport}
		o := o
		o.Transport = tr
		_, err := dst.Pull(ctx, host+"/plain/img:1", o)
		var nc *NotCheckpointError
		if !errors.As(err, &nc) {
			t.Errorf("err = %v, want NotCheckpointError", err)
		}
		if tr.hits.Load() != 0 {
			t.Error("the layer was downloaded before the refusal")
		}
	})
	rc, e, err := dst.OpenArchive(ctx, host+"/ckpt/counter:1", true, o)
	if got := readAll(t, rc, err); !bytes.Equal(got, in) {
		t.Fatal("pulled archive differs")
	}
	if e.Name != host+"/ckpt/counter:1" {
		t.Errorf("pulled name %q", e.Name)
	}
}

func TestPlainHTTPOnlyToLoopback(t *testing.T) {
	for host, ok := range map[string]bool{
		"127.0.0.1:5000":    true,
		"127.5.6.7:5000":    true,
		"localhost:5000":    true,
		"[::1]:5000":        true,
		"10.0.0.1:5000":     false,
		"192.168.1.1":       false,
		"registry.example":  false,
		"localhost.example": false,
	} {
		var reached bool
		rt := httpsOnly{roundTripFunc(func(*http.Request) (*http.Response, error) {
			reached = true
			return &http.Response{StatusCode: 200, Body: http.NoBody}, nil
		})}
		req, _ := http.NewRequest(http.MethodGet, "http://"+host+"/v2/", nil)
		_, err := rt.RoundTrip(req)
		if reached != ok || (err == nil) != ok {
			t.Errorf("plain HTTP to %s: reached=%v err=%v, want allowed=%v", host, reached, err, ok)
		}
		req, _ = http.NewRequest(http.MethodGet, "https://"+host+"/v2/", nil)
		if _, err := rt.RoundTrip(req); err != nil {
			t.Errorf("HTTPS to %s: %v", host, err)
		}
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestTempDirRemovesStaleLayers(t *testing.T) {
	s, _ := Open(filepath.Join(t.TempDir(), "store"))
	dir, err := s.TempDir()
	if err != nil {
		t.Fatal(err)
	}
	// pid 2^22+1 is above pid_max: no such process.
	stale := filepath.Join(dir, "layer-4194305-x.tar")
	mine := filepath.Join(dir, fmt.Sprintf("layer-%d-y.tar", os.Getpid()))
	os.WriteFile(stale, nil, 0o600)
	os.WriteFile(mine, nil, 0o600)
	if _, err := s.TempDir(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("stale layer kept: %v", err)
	}
	if _, err := os.Stat(mine); err != nil {
		t.Errorf("a live process's layer removed: %v", err)
	}
}

func TestImportArchiveOfSave(t *testing.T) {
	in := testArchive(t, nil)
	b := build(t, in)
	src, _ := Open(filepath.Join(t.TempDir(), "a"))
	if _, err := src.Add(b.Image, "example.com/ckpt/counter:v1"); err != nil {
		t.Fatal(err)
	}
	saved := filepath.Join(t.TempDir(), "img.tar")
	if err := src.SaveFile("example.com/ckpt/counter:v1", saved); err != nil {
		t.Fatal(err)
	}
	dst, _ := Open(filepath.Join(t.TempDir(), "b"))
	es, ok, err := dst.ImportArchive(saved)
	if err != nil || !ok || len(es) != 1 || es[0].Name != "example.com/ckpt/counter:v1" {
		t.Fatalf("import: %v %v %+v", ok, err, es)
	}
	rc, _, err := dst.OpenArchive(context.Background(), "example.com/ckpt/counter:v1", false, RemoteOptions{})
	if got := readAll(t, rc, err); !bytes.Equal(got, in) {
		t.Error("imported image carries other bytes")
	}

	// A changed layer is refused and leaves nothing behind.
	data, _ := os.ReadFile(saved)
	i := bytes.Index(data, []byte("criu images"))
	data[i] ^= 1
	bad := filepath.Join(t.TempDir(), "bad.tar")
	os.WriteFile(bad, data, 0o600)
	other, _ := Open(filepath.Join(t.TempDir(), "c"))
	if _, ok, err := other.ImportArchive(bad); !ok || !errors.Is(err, errDigest) {
		t.Errorf("import of a changed layer: ok=%v err=%v, want a digest error", ok, err)
	}
	if blobs, _ := os.ReadDir(filepath.Join(other.Dir(), "blobs", "sha256")); len(blobs) != 0 {
		t.Errorf("%d blobs left", len(blobs))
	}
	if tmp, _ := os.ReadDir(filepath.Join(other.Dir(), "tmp")); len(tmp) != 0 {
		t.Errorf("%d staging entries left", len(tmp))
	}

	// An image that is no checkpoint is none of the store's business.
	img, _ := random.Image(1000, 1)
	dir := t.TempDir()
	lp, _ := layout.Write(filepath.Join(dir, "l"), empty.Index)
	lp.AppendImage(img)
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	filepath.Walk(filepath.Join(dir, "l"), func(p string, fi os.FileInfo, err error) error {
		rel, _ := filepath.Rel(filepath.Join(dir, "l"), p)
		if fi.Mode().IsRegular() {
			b, _ := os.ReadFile(p)
			tw.WriteHeader(&tar.Header{Name: rel, Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg})
			tw.Write(b)
		}
		return nil
	})
	tw.Close()
	plain := filepath.Join(dir, "plain.tar")
	os.WriteFile(plain, tb.Bytes(), 0o600)
	if _, ok, err := other.ImportArchive(plain); ok || err != nil {
		t.Errorf("import of a plain image: ok=%v err=%v, want not ours", ok, err)
	}
}

func TestGCKeepsLiveDownloads(t *testing.T) {
	s, _ := Open(filepath.Join(t.TempDir(), "store"))
	dir := filepath.Join(s.Dir(), "blobs", "sha256")
	os.MkdirAll(dir, 0o700)
	hex := strings.Repeat("a", 64)
	live := filepath.Join(dir, fmt.Sprintf(".%s-%d-1", hex, os.Getpid()))
	dead := filepath.Join(dir, fmt.Sprintf(".%s-%d-2", hex, 4194305))
	leftover := filepath.Join(dir, hex+"123.tmp")
	for _, p := range []string{live, dead, leftover} {
		os.WriteFile(p, []byte("x"), 0o600)
	}
	unlock, _ := s.lock()
	s.gc()
	unlock()
	if _, err := os.Stat(live); err != nil {
		t.Errorf("a live download was removed: %v", err)
	}
	for _, p := range []string{dead, leftover} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s kept: %v", filepath.Base(p), err)
		}
	}
}
