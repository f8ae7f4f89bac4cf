package checkpoint

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ckpt-dev/ckpt/internal/runtime"
)

// fakePodRuntime adds whole-pod checkpoints to fakeRuntime: pod "web" has
// containers a and b; "stopped" has one not running.
type fakePodRuntime struct {
	fakeRuntime
	got []runtime.Container
}

func (f *fakePodRuntime) LookupPod(_ context.Context, ns, pod string) ([]runtime.Container, error) {
	switch pod {
	case "web":
		return []runtime.Container{{ID: "id-b", Namespace: ns, Pod: pod, Name: "b"}, {ID: "id-a", Namespace: ns, Pod: pod, Name: "a"}}, nil
	case "stopped":
		return nil, runtime.ErrNotRunning
	}
	return nil, runtime.ErrPodNotFound
}

func (f *fakePodRuntime) CheckpointPod(ctx context.Context, cs []runtime.Container, path string, opts runtime.CheckpointOptions) (runtime.CheckpointResult, error) {
	f.got = cs
	return f.Checkpoint(ctx, cs[0], path, opts)
}

func TestCheckpointPod(t *testing.T) {
	rt := &fakePodRuntime{}
	s := newService(t, rt, Options{})
	path, err := s.CheckpointPod(context.Background(), "default", "web", runtime.CheckpointOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^checkpoint-web_default-\d{4}-\d\d-\d\dT[0-9:]+Z\.tar$`).MatchString(filepath.Base(path)) {
		t.Errorf("pod archive name %s", filepath.Base(path))
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("archive %v %v", st, err)
	}
	if len(rt.got) != 2 {
		t.Errorf("runtime got %v", rt.got)
	}
	list, err := s.List()
	if err != nil || len(list) != 1 || list[0].Kind != "pod" || list[0].Pod != "web" || list[0].Namespace != "default" || list[0].Container != "" {
		t.Errorf("listed %+v %v", list, err)
	}
	// A second one in the same second gets another name.
	path2, err := s.CheckpointPod(context.Background(), "default", "web", runtime.CheckpointOptions{})
	if err != nil || path2 == path {
		t.Errorf("second pod checkpoint %s %v", path2, err)
	}

	for _, c := range []struct {
		pod  string
		want error
	}{{"nope", runtime.ErrPodNotFound}, {"stopped", runtime.ErrNotRunning}} {
		if _, err := s.CheckpointPod(context.Background(), "default", c.pod, runtime.CheckpointOptions{}); !errors.Is(err, c.want) {
			t.Errorf("pod %s: %v, want %v", c.pod, err, c.want)
		}
	}
}

// A pod checkpoint waits for a container checkpoint of one of its
// containers (the locks are the containers'), and one that times out
// leaves no archive and an empty staging directory.
func TestCheckpointPodLocksAndTimeout(t *testing.T) {
	rt := &fakePodRuntime{}
	rt.block = 300 * time.Millisecond
	s := newService(t, rt, Options{DefaultTimeout: 100 * time.Millisecond, StrictTimeout: true})
	if err := s.locks.lock(context.Background(), "id-a"); err != nil {
		t.Fatal(err)
	}
	_, err := s.CheckpointPod(context.Background(), "default", "web", runtime.CheckpointOptions{})
	if !errors.Is(err, runtime.ErrTimeout) || !strings.Contains(err.Error(), "pod default/web") {
		t.Errorf("while a container is locked: %v", err)
	}
	s.locks.unlock("id-a")
	// Every lock it took was given back.
	for _, id := range []string{"id-a", "id-b"} {
		if err := s.locks.lock(context.Background(), id); err != nil {
			t.Fatal(err)
		}
		s.locks.unlock(id)
	}
	_, err = s.CheckpointPod(context.Background(), "default", "web", runtime.CheckpointOptions{})
	if !errors.Is(err, runtime.ErrTimeout) {
		t.Errorf("slow pod checkpoint: %v", err)
	}
	if names := publishedNames(t, s); len(names) != 0 {
		t.Errorf("published %v", names)
	}
	if left, _ := os.ReadDir(s.StagingDir()); len(left) != 0 {
		t.Errorf("staging holds %v", left)
	}
}

func TestPodCapabilitiesMissing(t *testing.T) {
	s := newService(t, &fakeRuntime{}, Options{})
	if _, err := s.CheckpointPod(context.Background(), "default", "web", runtime.CheckpointOptions{}); !errors.Is(err, runtime.ErrUnsupported) {
		t.Errorf("checkpoint pod: %v", err)
	}
	if _, err := s.RestorePod(context.Background(), strings.NewReader(""), runtime.Ref{}, "x"); !errors.Is(err, runtime.ErrUnsupported) {
		t.Errorf("restore pod: %v", err)
	}
}
