package inspect

import (
	"archive/tar"
	"os"
	"path/filepath"
	"testing"
)

// podFixture wraps the containerd fixture's members as the containers "a"
// and "b" of a pod archive.
func podFixture(t testing.TB) []byte {
	t.Helper()
	ms := []member{
		{tar.Header{Typeflag: tar.TypeReg, Name: "pod.dump", Mode: 0o600},
			[]byte(`{"kind":"ckpt.dev/pod-checkpoint/v1","namespace":"default","pod":"web","containers":["b","a"]}`)},
		{tar.Header{Typeflag: tar.TypeReg, Name: "pod.json", Mode: 0o600}, []byte(`{"kind":"Pod"}`)},
	}
	for _, c := range []string{"a", "b"} {
		ms = append(ms, member{tar.Header{Typeflag: tar.TypeDir, Name: "containers/" + c + "/", Mode: 0o700}, nil})
		for _, m := range readMembers(t, containerdFixture) {
			m.hdr.Name = "containers/" + c + "/" + m.hdr.Name
			ms = append(ms, m)
		}
	}
	return tarBytes(t, ms)
}

func TestOpenAllPodArchive(t *testing.T) {
	path := writeFile(t, podFixture(t))
	tmp := t.TempDir()
	cs, err := OpenAll(path, Options{TempDir: tmp})
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 2 {
		t.Fatalf("%d checkpoints, want one per container", len(cs))
	}
	for _, c := range cs {
		if c.PodArchive == nil || c.PodArchive.Pod != "web" || len(c.PodArchive.Containers) != 2 || c.Archive != path {
			t.Errorf("checkpoint %+v", c)
		}
		if len(c.Processes) == 0 {
			t.Error("no process tree read from a pod archive's container")
		}
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Errorf("left %v", left)
	}
	// A container archive gives one checkpoint, without PodArchive.
	cs, err = OpenAll(containerdFixture, Options{TempDir: tmp})
	if err != nil || len(cs) != 1 || cs[0].PodArchive != nil {
		t.Fatalf("container archive: %v %v", cs, err)
	}
}

// FuzzOpenAll: arbitrary bytes after a pod.dump never panic the pod
// archive reader nor leave anything in its temporary root.
func FuzzOpenAll(f *testing.F) {
	data := podFixture(f)
	f.Add(data)
	f.Add(data[:len(data)/2])
	f.Add(data[:2048])
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		path := filepath.Join(dir, "a.tar")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		tmp := filepath.Join(dir, "tmp")
		if err := os.Mkdir(tmp, 0o700); err != nil {
			t.Fatal(err)
		}
		OpenAll(path, Options{TempDir: tmp})
		if left, _ := os.ReadDir(tmp); len(left) != 0 {
			t.Fatalf("temporary root left behind: %v", left)
		}
	})
}
