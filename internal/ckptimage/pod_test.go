package ckptimage

import (
	"bytes"
	"errors"
	"testing"

	metadata "github.com/checkpoint-restore/checkpointctl/lib"

	"github.com/ckpt-dev/ckpt/internal/archive"
	"github.com/ckpt-dev/ckpt/internal/runtime"
)

// testPodArchive writes a pod archive the way the embedded runtime does.
func testPodArchive(t testing.TB, dump string, withImages bool) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := archive.NewWriter(&buf)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(w.AddBytes(archive.PodDumpFile, []byte(dump)))
	must(w.AddBytes("pod.json", []byte(`{"kind":"Pod"}`)))
	for _, c := range []string{"a", "b"} {
		must(w.AddBytes("containers/"+c+"/"+metadata.ConfigDumpFile, []byte(`{"name":"`+c+`"}`)))
		if withImages {
			must(w.AddBytes("containers/"+c+"/checkpoint/inventory.img", []byte("criu")))
		}
		must(w.AddBytes("containers/"+c+"/"+metadata.DumpLogFile, []byte(dumpLog)))
	}
	must(w.Close())
	return buf.Bytes()
}

const podDump = `{"kind":"ckpt.dev/pod-checkpoint/v1","namespace":"default","pod":"web","containers":["a","b"],"checkpointedTime":"2026-12-01T10:00:00Z"}`

func TestBuildPodImage(t *testing.T) {
	data := testPodArchive(t, podDump, true)
	b := build(t, data)
	m, err := b.Image.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	a := m.Annotations
	if a[AnnotationPod] != "default/web" || a[metadata.CheckpointAnnotationPod] != "web" || a[metadata.CheckpointAnnotationNamespace] != "default" ||
		a[metadata.CheckpointAnnotationCriuVersion] != "4.2.1" || a[metadata.CheckpointAnnotationEngine] != "ckpt" {
		t.Errorf("annotations %v", a)
	}
	// Not one container's: CRI-O and containerd must not restore it as one.
	if _, ok := a[AnnotationName]; ok {
		t.Errorf("pod image has %s", AnnotationName)
	}
	if _, ok := a[AnnotationCRIOName]; ok {
		t.Errorf("pod image has %s", AnnotationCRIOName)
	}
	if what, ok := IsCheckpoint(a); !ok || what != "pod default/web" {
		t.Errorf("IsCheckpoint %q %v", what, ok)
	}
	// The layer is the archive, byte for byte.
	rc, err := Archive(b.Image, "the image")
	got := readAll(t, rc, err)
	if !bytes.Equal(got, data) {
		t.Error("the layer is not the archive")
	}
}

func TestBuildRefusesBadPodArchives(t *testing.T) {
	for name, data := range map[string][]byte{
		"no images": testPodArchive(t, podDump, false),
		"no pod":    testPodArchive(t, `{"containers":["a","b"]}`, true),
		"bad json":  testPodArchive(t, `{`, true),
		"extra ctr": testPodArchive(t, `{"namespace":"default","pod":"web","containers":["a","b","c"]}`, true),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Build(bytes.NewReader(data), t.TempDir(), archive.Limits{})
			var nc *NotCheckpointError
			if !errors.As(err, &nc) || !errors.Is(err, runtime.ErrInvalid) {
				t.Errorf("%v, want a NotCheckpointError", err)
			}
		})
	}
}
