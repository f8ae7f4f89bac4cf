package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ckpt-dev/ckpt/internal/metrics"
	"github.com/ckpt-dev/ckpt/internal/runtime"
)

// fakeRuntime is a one-layer fake: it writes a small file as the archive.
type fakeRuntime struct {
	mu      sync.Mutex
	block   time.Duration
	running int
	maxPar  int
	err     error
	freeze  time.Duration
}

func (f *fakeRuntime) Lookup(_ context.Context, ref runtime.Ref) (runtime.Container, error) {
	switch {
	case ref.Pod == "nopod":
		return runtime.Container{}, runtime.ErrPodNotFound
	case ref.Container == "noctr":
		return runtime.Container{}, runtime.ErrContainerNotFound
	}
	return runtime.Container{ID: ref.String(), Namespace: ref.Namespace, Pod: ref.Pod, Name: ref.Container, State: runtime.StateRunning}, nil
}

func (f *fakeRuntime) Checkpoint(ctx context.Context, c runtime.Container, path string, _ runtime.CheckpointOptions) (runtime.CheckpointResult, error) {
	f.mu.Lock()
	f.running++
	if f.running > f.maxPar {
		f.maxPar = f.running
	}
	f.mu.Unlock()
	defer func() { f.mu.Lock(); f.running--; f.mu.Unlock() }()
	if err := os.WriteFile(path, []byte("partial"), 0o644); err != nil {
		return runtime.CheckpointResult{}, err
	}
	select {
	case <-time.After(f.block):
	case <-ctx.Done():
		return runtime.CheckpointResult{}, ctx.Err()
	}
	return runtime.CheckpointResult{FreezeTime: f.freeze}, f.err
}

func newService(t *testing.T, rt Runtime, opts Options) *Service {
	t.Helper()
	opts.RootDir = t.TempDir()
	s, err := New(rt, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func publishedNames(t *testing.T, s *Service) []string {
	t.Helper()
	list, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, a := range list {
		names = append(names, a.Name)
	}
	return names
}

func TestCheckpointNamesModesAndNoOverwrite(t *testing.T) {
	s := newService(t, &fakeRuntime{}, Options{})
	fixed := time.Date(2026, 11, 27, 11, 34, 53, 0, time.UTC)
	s.now = func() time.Time { return fixed }
	ref := runtime.Ref{Namespace: "default", Pod: "counter", Container: "counter"}
	var paths []string
	for i := 0; i < 3; i++ {
		p, err := s.Checkpoint(context.Background(), ref, runtime.CheckpointOptions{Timeout: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	want := []string{
		"checkpoint-counter_default-counter-2026-11-27T11:34:53Z.tar",
		"checkpoint-counter_default-counter-2026-11-27T11:34:53Z.tar", // taken: next layout
		"",
	}
	if filepath.Base(paths[0]) != want[0] {
		t.Errorf("first archive %s, want %s", filepath.Base(paths[0]), want[0])
	}
	if paths[0] == paths[1] || paths[1] == paths[2] || paths[0] == paths[2] {
		t.Fatalf("archives collided: %v", paths)
	}
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v", p, st.Mode().Perm())
		}
		if !ValidArchiveName(filepath.Base(p)) {
			t.Errorf("published name %s is not a valid archive name", filepath.Base(p))
		}
		if _, err := time.Parse(time.RFC3339Nano, strings.TrimSuffix(strings.TrimPrefix(filepath.Base(p), "checkpoint-counter_default-counter-"), ".tar")); err != nil {
			t.Errorf("%s: time part is not RFC 3339: %v", p, err)
		}
	}
	st, _ := os.Stat(s.Dir())
	if st.Mode().Perm() != 0o700 {
		t.Errorf("checkpoints dir mode %v", st.Mode().Perm())
	}
	list, _ := s.List()
	if len(list) != 3 || list[0].Namespace != "default" || list[0].Pod != "counter" || list[0].Container != "counter" {
		t.Fatalf("List = %+v", list)
	}
}

func TestCheckpointErrorsLeaveNothing(t *testing.T) {
	cases := []struct {
		name    string
		rt      *fakeRuntime
		ref     runtime.Ref
		timeout time.Duration
		want    error
	}{
		{"pod missing", &fakeRuntime{}, runtime.Ref{Namespace: "default", Pod: "nopod", Container: "c"}, time.Minute, runtime.ErrPodNotFound},
		{"container missing", &fakeRuntime{}, runtime.Ref{Namespace: "default", Pod: "p", Container: "noctr"}, time.Minute, runtime.ErrContainerNotFound},
		{"runtime fails", &fakeRuntime{err: errors.New("criu exploded")}, runtime.Ref{Namespace: "default", Pod: "p", Container: "c"}, time.Minute, nil},
		{"timeout", &fakeRuntime{block: time.Hour}, runtime.Ref{Namespace: "default", Pod: "p", Container: "c"}, 50 * time.Millisecond, runtime.ErrTimeout},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := newService(t, c.rt, Options{StrictTimeout: true})
			_, err := s.Checkpoint(context.Background(), c.ref, runtime.CheckpointOptions{Timeout: c.timeout})
			if err == nil {
				t.Fatal("no error")
			}
			if c.want != nil && !errors.Is(err, c.want) {
				t.Fatalf("error %v is not %v", err, c.want)
			}
			if c.want == runtime.ErrTimeout && !strings.Contains(err.Error(), "50ms") {
				t.Errorf("timeout error does not name the timeout: %v", err)
			}
			entries, _ := os.ReadDir(s.Dir())
			for _, e := range entries {
				if e.Name() != stagingDir {
					t.Errorf("left %s behind", e.Name())
				}
			}
			staged, _ := os.ReadDir(filepath.Join(s.Dir(), stagingDir))
			if len(staged) != 0 {
				t.Errorf("staging not cleaned: %d entries", len(staged))
			}
		})
	}
}

func TestSameContainerSerializedOthersParallel(t *testing.T) {
	rt := &fakeRuntime{block: 100 * time.Millisecond}
	s := newService(t, rt, Options{StrictTimeout: true})
	var wg sync.WaitGroup
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.Checkpoint(context.Background(), runtime.Ref{Namespace: "default", Pod: "p", Container: "same"}, runtime.CheckpointOptions{Timeout: time.Minute}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if rt.maxPar != 1 {
		t.Fatalf("same container checkpointed %d at once", rt.maxPar)
	}
	rt.maxPar = 0
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.Checkpoint(context.Background(), runtime.Ref{Namespace: "default", Pod: "p", Container: fmt.Sprintf("c%d", i)}, runtime.CheckpointOptions{Timeout: time.Minute})
		}()
	}
	wg.Wait()
	if rt.maxPar < 2 {
		t.Fatalf("different containers were not checkpointed in parallel (max %d)", rt.maxPar)
	}
	// A waiter gives up at its own deadline.
	rt.block = time.Second
	go s.Checkpoint(context.Background(), runtime.Ref{Namespace: "default", Pod: "p", Container: "same"}, runtime.CheckpointOptions{Timeout: time.Minute})
	time.Sleep(50 * time.Millisecond)
	_, err := s.Checkpoint(context.Background(), runtime.Ref{Namespace: "default", Pod: "p", Container: "same"}, runtime.CheckpointOptions{Timeout: 100 * time.Millisecond})
	if !errors.Is(err, runtime.ErrTimeout) || !strings.Contains(err.Error(), "waiting for another checkpoint") {
		t.Fatalf("waiter error = %v", err)
	}
}

func TestStartRemovesStagingLeftovers(t *testing.T) {
	root := t.TempDir()
	left := filepath.Join(root, "checkpoints", stagingDir, "ckpt-123", "archive.tar")
	os.MkdirAll(filepath.Dir(left), 0o700)
	os.WriteFile(left, []byte("partial"), 0o600)
	if _, err := New(&fakeRuntime{}, Options{RootDir: root}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(left); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("staging leftover survived a restart: %v", err)
	}
}

func TestRetention(t *testing.T) {
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	type arch struct {
		ctr  string
		age  time.Duration
		size int
	}
	archives := []arch{ // oldest first
		{"a", 50 * time.Hour, 100}, {"a", 40 * time.Hour, 100}, {"b", 30 * time.Hour, 100},
		{"a", 20 * time.Hour, 100}, {"b", 10 * time.Hour, 100}, {"a", 1 * time.Hour, 100},
	}
	cases := []struct {
		name   string
		pol    Retention
		pinned int // index of a pinned archive, or -1
		keep   []int
	}{
		{"none", Retention{}, -1, []int{0, 1, 2, 3, 4, 5}},
		{"per container 1", Retention{PerContainer: 1}, -1, []int{4, 5}},
		{"per container 2", Retention{PerContainer: 2}, -1, []int{2, 3, 4, 5}},
		{"max bytes 250", Retention{MaxBytes: 250}, -1, []int{4, 5}},
		{"max age 25h", Retention{MaxAge: 25 * time.Hour}, -1, []int{3, 4, 5}},
		{"combined", Retention{PerContainer: 2, MaxAge: 35 * time.Hour, MaxBytes: 200}, -1, []int{4, 5}},
		{"pinned survives", Retention{PerContainer: 1}, 0, []int{0, 4, 5}},
		// The pinned archive stays, so it counts against the budget: one
		// more goes instead.
		{"pinned doomed counts against the budget", Retention{PerContainer: 1, MaxBytes: 200}, 0, []int{0, 5}},
		{"pinned oldest counts against the budget", Retention{MaxBytes: 250}, 0, []int{0, 5}},
		{"pinned newest", Retention{MaxBytes: 150}, 5, []int{5}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := newService(t, &fakeRuntime{}, Options{Retention: c.pol})
			now := base.Add(100 * time.Hour)
			s.now = func() time.Time { return now }
			var names []string
			for _, a := range archives {
				ref := runtime.Ref{Namespace: "default", Pod: "p", Container: a.ctr}
				name := ArchiveName(ref, now.Add(-a.age), time.RFC3339)
				p := filepath.Join(s.Dir(), name)
				os.WriteFile(p, make([]byte, a.size), 0o600)
				setRef(p, ref)
				names = append(names, name)
			}
			if c.pinned >= 0 {
				defer s.pins.pin(names[c.pinned])()
			}
			if _, err := s.ApplyRetention(); err != nil {
				t.Fatal(err)
			}
			var want []string
			for _, i := range c.keep {
				want = append(want, names[i])
			}
			got := publishedNames(t, s)
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Fatalf("kept\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
		})
	}
}

func TestValidArchiveName(t *testing.T) {
	cases := map[string]bool{
		"checkpoint-counter_default-counter-2026-11-27T11:34:53Z.tar":            true,
		"checkpoint-counter_default-counter-2026-11-27T11:34:53.123456789Z.tar":  true,
		"checkpoint-counter_kube-system-c-2026-11-27T11:34:53+01:00.tar.zst.age": true,
		"checkpoint-counter_default-counter-2026-11-27T11:34:53Z.tar.age":        true,
		"../checkpoint-counter_default-counter-2026-11-27T11:34:53Z.tar":         false,
		"checkpoint-counter_default-counter-2026-11-27T11:34:53Z.tar/../../x":    false,
		".staging": false,
		"checkpoint-counter_default-counter-now.tar":                      false,
		"checkpoint-Counter_default-counter-2026-11-27T11:34:53Z.tar":     false,
		"checkpoint-counter_default-counter-2026-11-27T11:34:53Z.tar\x00": false,
		"checkpoint-counter_default-counter-2026-11-27T11:34:53Z.tar.gz":  false,
	}
	for name, want := range cases {
		if got := ValidArchiveName(name); got != want {
			t.Errorf("ValidArchiveName(%q) = %v, want %v", name, got, want)
		}
	}
}

func FuzzValidArchiveName(f *testing.F) {
	f.Add("checkpoint-counter_default-counter-2026-11-27T11:34:53Z.tar")
	f.Add("../../etc/passwd")
	f.Fuzz(func(t *testing.T, name string) {
		if ValidArchiveName(name) && (strings.Contains(name, "/") || strings.HasPrefix(name, ".")) {
			t.Fatalf("accepted %q", name)
		}
	})
}

// TestCheckpointMetrics: the service records every checkpoint, once, in the
// Prometheus metrics that /metrics serves.
func TestCheckpointMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	rt := &fakeRuntime{freeze: 250 * time.Millisecond}
	s := newService(t, rt, Options{Recorder: metrics.New(reg)})
	ok := runtime.Ref{Namespace: "default", Pod: "p", Container: "c"}
	if _, err := s.Checkpoint(context.Background(), ok, runtime.CheckpointOptions{Timeout: time.Minute}); err != nil {
		t.Fatal(err)
	}
	s.Checkpoint(context.Background(), runtime.Ref{Namespace: "default", Pod: "nopod", Container: "c"}, runtime.CheckpointOptions{Timeout: time.Minute})
	rt.err = errors.New("criu exploded")
	s.Checkpoint(context.Background(), ok, runtime.CheckpointOptions{Timeout: time.Minute})

	rec := httptest.NewRecorder()
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	text := rec.Body.String()
	for _, want := range []string{
		`ckpt_checkpoints_total{result="success"} 1`,
		`ckpt_checkpoints_total{result="failure"} 2`,
		`ckpt_checkpoint_errors_total{reason="pod_not_found"} 1`,
		`ckpt_checkpoint_errors_total{reason="internal"} 1`,
		`ckpt_checkpoint_archive_bytes_sum 7`, // the fake's "partial"
		`ckpt_checkpoint_archive_bytes_count 1`,
		`ckpt_checkpoint_duration_seconds_count 3`,
		`ckpt_checkpoint_last_freeze_seconds 0.25`,
		`ckpt_checkpoints_in_flight 0`,
	} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("metrics lack %q:\n%s", want, text)
		}
	}
}

func TestTimeoutRule(t *testing.T) {
	cases := []struct {
		name      string
		strict    bool
		requested time.Duration
		want      time.Duration
	}{
		{"kubelet: none", false, 0, 2 * time.Minute},
		{"kubelet: shorter does not shorten", false, time.Second, 2 * time.Minute},
		{"kubelet: longer lengthens", false, 5 * time.Minute, 5 * time.Minute},
		{"strict: none", true, 0, 2 * time.Minute},
		{"strict: shorter shortens", true, time.Second, time.Second},
		{"strict: longer lengthens", true, 5 * time.Minute, 5 * time.Minute},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := newService(t, &fakeRuntime{}, Options{DefaultTimeout: 2 * time.Minute, StrictTimeout: c.strict})
			if got := s.Timeout(c.requested); got != c.want {
				t.Fatalf("Timeout(%s) = %s, want %s", c.requested, got, c.want)
			}
		})
	}
	// The kubelet's rule in effect: a runtime that takes 150ms finishes
	// although the request asked for 50ms, because the default is longer.
	s := newService(t, &fakeRuntime{block: 150 * time.Millisecond}, Options{DefaultTimeout: time.Minute})
	if _, err := s.Checkpoint(context.Background(), runtime.Ref{Namespace: "default", Pod: "p", Container: "c"},
		runtime.CheckpointOptions{Timeout: 50 * time.Millisecond}); err != nil {
		t.Fatalf("kubelet rule: %v", err)
	}
}

// The archive carries the time the request came, not when it finished.
func TestArchiveNamedAtRequestTime(t *testing.T) {
	s := newService(t, &fakeRuntime{block: 20 * time.Millisecond}, Options{})
	var mu sync.Mutex
	clock := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	s.now = func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		t := clock
		clock = clock.Add(time.Hour) // every later reading is an hour on
		return t
	}
	p, err := s.Checkpoint(context.Background(), runtime.Ref{Namespace: "default", Pod: "p", Container: "c"}, runtime.CheckpointOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if want := "checkpoint-p_default-c-2026-12-01T10:00:00Z.tar"; filepath.Base(p) != want {
		t.Fatalf("archive %s, want %s", filepath.Base(p), want)
	}
}

func TestRetentionErrorsReported(t *testing.T) {
	var reported []error
	s := newService(t, &fakeRuntime{}, Options{Retention: Retention{PerContainer: 1},
		RetentionError: func(err error) { reported = append(reported, err) }})
	ref := runtime.Ref{Namespace: "default", Pod: "p", Container: "a"}
	var names []string
	for i := 0; i < 3; i++ {
		name := ArchiveName(ref, time.Date(2026, 1, 1, i, 0, 0, 0, time.UTC), time.RFC3339)
		p := filepath.Join(s.Dir(), name)
		os.WriteFile(p, []byte("x"), 0o600)
		setRef(p, ref)
		names = append(names, name)
	}
	stuck := names[0]
	s.remove = func(p string) error {
		if filepath.Base(p) == stuck {
			return fmt.Errorf("remove %s: %w", p, os.ErrPermission)
		}
		return os.Remove(p)
	}
	deleted, err := s.ApplyRetention()
	if !errors.Is(err, os.ErrPermission) || !strings.Contains(err.Error(), stuck) {
		t.Fatalf("error %v, want the failed deletion of %s", err, stuck)
	}
	if len(deleted) != 1 || deleted[0] != names[1] {
		t.Fatalf("deleted %v, want %s (the other deletions go on)", deleted, names[1])
	}

	// After a checkpoint, the failure is reported, and the checkpoint
	// still succeeds.
	path, err := s.Checkpoint(context.Background(), ref, runtime.CheckpointOptions{})
	if err != nil || path == "" {
		t.Fatalf("checkpoint: %q %v", path, err)
	}
	if len(reported) != 1 || !errors.Is(reported[0], os.ErrPermission) {
		t.Fatalf("reported %v", reported)
	}
}
