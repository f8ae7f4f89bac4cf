package main

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/checkpoint-restore/go-criu/v8/crit"
)

const (
	ctrdBin = "/opt/ckpt/containerd/bin"
	ns      = "default"
)

// env holds the agents and runtimes for the whole run.
type env struct {
	o        options
	emb      *agent // embedded runtime, static pods
	cri      *agent // CRI backend on containerd
	ctrdDir  string
	crictlY  string
	podman   bool
	versions map[string]string
	failures []string
	// lazyMemory is row rl's last time to memory complete, for row rm.
	lazyMemory *sample
	// criuRestore is CRIU's own restore time in row ra's last run, for
	// row rr.
	criuRestore *sample
	// mig is the two nodes of the migration rows; liveTotal is row ml's
	// last time until every page moved, for row mlt.
	mig       *migration
	liveTotal *sample
}

func newEnv(o options) *env { return &env{o: o, versions: map[string]string{}} }

func (e *env) need(rows ...string) bool {
	for _, r := range rows {
		if e.o.rows[r] {
			return true
		}
	}
	return false
}

func (e *env) start(ctx context.Context) error {
	e.recordVersions(ctx)
	var err error
	if e.need("a", "b", "c", "cf", "ra", "rc", "rl", "rm") {
		dir := filepath.Join(e.o.work, "embedded")
		if e.emb, err = startEmbeddedAgent(ctx, e.o.ckpt, dir); err != nil {
			return err
		}
		// The pause image holds each pod's sandbox.
		for _, img := range []string{"counter.tar", "pause.tar"} {
			if _, err := e.emb.ckpt(ctx, "image", "import", filepath.Join(e.o.images, img)); err != nil {
				return err
			}
		}
	}
	if e.need("d", "e") {
		e.ctrdDir = filepath.Join(e.o.work, "ctrd")
		cmd := exec.CommandContext(ctx, filepath.Join(e.o.repo, "hack/start-containerd.sh"), e.ctrdDir)
		cmd.Env = append(os.Environ(), "CKPT_IMAGES="+e.o.images)
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if err != nil {
			return fmt.Errorf("start containerd: %w", err)
		}
		sock := strings.TrimSpace(string(out))
		e.crictlY = filepath.Join(e.ctrdDir, "crictl.yaml")
		if e.cri, err = startAgent(ctx, e.o.ckpt, filepath.Join(e.o.work, "cri-agent"), "--container-runtime-endpoint", "unix://"+sock); err != nil {
			return err
		}
	}
	if e.need("mc", "ml", "mlt") {
		if _, err := e.startMigration(ctx); err != nil {
			return fmt.Errorf("migration nodes: %w", err)
		}
	}
	if e.need("f", "rf") {
		if _, err := exec.LookPath("podman"); err != nil {
			return errors.New("podman not found: run hack/install-bench-deps.sh")
		}
		e.podman = true
		if out, err := exec.CommandContext(ctx, "podman", "load", "-i", filepath.Join(e.o.images, "counter.tar")).CombinedOutput(); err != nil {
			return fmt.Errorf("podman load: %v: %s", err, out)
		}
	}
	return nil
}

func (e *env) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if e.emb != nil {
		e.emb.ckpt(ctx, "rm", "--all")
		e.emb.stop()
	}
	e.mig.close()
	e.cri.stop()
	if e.ctrdDir != "" {
		cmd := exec.CommandContext(ctx, filepath.Join(e.o.repo, "hack/stop-containerd.sh"), e.ctrdDir)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		cmd.Run()
	}
	if e.podman {
		exec.CommandContext(ctx, "podman", "rm", "-f", "--filter", "label=ckptbench=1").Run()
	}
}

func (e *env) recordVersions(ctx context.Context) {
	first := func(name string, args ...string) string {
		out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
		if err != nil {
			return "not available"
		}
		return strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
	}
	e.versions["kernel"] = first("uname", "-r")
	e.versions["runc"] = first("runc", "--version")
	e.versions["criu"] = first("criu", "--version")
	e.versions["containerd"] = first(filepath.Join(ctrdBin, "containerd"), "--version")
	e.versions["crictl"] = first(filepath.Join(ctrdBin, "crictl"), "--version")
	e.versions["podman"] = first("podman", "--version")
	e.versions["tar"] = first("tar", "--version")
	e.versions["ckpt"] = first("git", "-C", e.o.repo, "describe", "--always", "--dirty")
	e.versions["go"] = first("go", "version")
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				e.versions["cpu"] = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	e.versions["cpus"] = first("nproc")
	e.versions["memory"] = first("sh", "-c", "free -g | awk '/Mem:/ {print $2 \" GiB\"}'")
	e.versions["filesystem"] = first("sh", "-c", "df -T "+e.o.work+" | awk 'NR==2 {print $2}'")
	e.versions["os"] = first("sh", "-c", ". /etc/os-release; echo $PRETTY_NAME")
}

// target is one counter container in each runtime, all with the same memory.
type target struct {
	mib     int
	embName string // manifest name; the pod is staticPod(embName)
	embPod  string
	// filesName/filesPod: the same counter with changedFilesMiB of
	// changed files in its root filesystem (row cf).
	filesName, filesPod string
	embID               string
	criPod              string
	criID               string
	podName             string
}

// runc root of the embedded runtime (<root-dir>/ckpt/runc).
func (e *env) runcRoot() string { return filepath.Join(e.emb.root, "ckpt", "runc") }

// benchRow is one row: the function measuring one run of it.
type benchRow struct {
	id string
	fn func(context.Context, target, int) (sample, error)
}

// rowGroup is the rows that share a container: only one group's
// containers are alive at a time, so that a 4 GiB run fits in memory.
type rowGroup struct {
	name  string
	rows  []benchRow
	start func(ctx context.Context, t *target) (cleanup func(), err error)
}

func (e *env) groups() []rowGroup {
	return []rowGroup{
		{"embedded runtime", []benchRow{{"a", e.rowRaw}, {"b", e.rowRawTar}, {"c", e.rowCkpt}, {"ra", e.rowRuncRestore}, {"rr", e.rowCriuRestore},
			{"rc", e.rowCkptRestore}, {"rl", e.rowCkptLazyRestore}, {"rm", e.rowLazyMemory}}, e.startEmbedded},
		{"changed files", []benchRow{{"cf", e.rowCkptFiles}}, e.startFiles},
		{"containerd", []benchRow{{"d", e.rowCkptCRI}, {"e", e.rowCrictl}}, e.startCRI},
		{"podman", []benchRow{{"f", e.rowPodman}, {"rf", e.rowPodmanRestore}}, e.startPodman},
		{"migration", []benchRow{{"mc", e.rowMigrateCopy}, {"ml", e.rowMigrateLive}, {"mlt", e.rowLiveTotal}}, e.startMigrationPods},
	}
}

func (e *env) measureSize(ctx context.Context, mib int) ([]sample, error) {
	var out []sample
	for _, g := range e.groups() {
		var rows []benchRow
		for _, r := range g.rows {
			if e.o.rows[r.id] {
				rows = append(rows, r)
			}
		}
		if len(rows) == 0 {
			continue
		}
		s, err := e.measureGroup(ctx, mib, g, rows)
		out = append(out, s...)
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

// measureGroup starts the group's container and runs its rows in turns:
// run 0 is the warm-up.
func (e *env) measureGroup(ctx context.Context, mib int, g rowGroup, rows []benchRow) ([]sample, error) {
	t := target{mib: mib}
	log.Printf("== %d MiB, %s: starting containers", mib, g.name)
	cleanup, err := g.start(ctx, &t)
	if cleanup != nil {
		defer cleanup()
	}
	if err != nil {
		return nil, err
	}
	var out []sample
	broken := map[string]bool{}
	for run := 0; run <= e.o.runs; run++ {
		for _, r := range rows {
			if broken[r.id] {
				continue
			}
			if err := ctx.Err(); err != nil {
				return out, err
			}
			s, err := r.fn(ctx, t, run)
			if err != nil {
				msg := fmt.Sprintf("%d MiB row %s run %d: %v", mib, r.id, run, err)
				log.Printf("FAILED %s", msg)
				e.failures = append(e.failures, msg)
				broken[r.id] = true
				continue
			}
			s.Row, s.MiB, s.Run = r.id, mib, run
			log.Printf("%5d MiB %-3s run %d: %7.3fs frozen %7.3fs size %6.0f MiB rss %4.0f MiB", mib, r.id, run,
				s.Latency.Seconds(), s.Freeze.Seconds(), float64(s.Size)/(1<<20), float64(s.RSS)/(1<<20))
			if run > 0 {
				out = append(out, s)
			}
		}
	}
	return out, nil
}

func (e *env) startEmbedded(ctx context.Context, t *target) (func(), error) {
	t.embName = fmt.Sprintf("bench-%d", t.mib)
	t.embPod = staticPod(t.embName)
	var err error
	t.embID, err = e.emb.addCounterPod(ctx, t.embName, t.mib, 0)
	return func() {
		e.emb.removePod(context.Background(), t.embName)
		os.RemoveAll(filepath.Join(e.o.work, "raw"))
		os.Remove(readLink(filepath.Join(e.o.work, "ckpt-last")))
	}, err
}

func (e *env) startFiles(ctx context.Context, t *target) (func(), error) {
	t.filesName = fmt.Sprintf("bench-files-%d", t.mib)
	t.filesPod = staticPod(t.filesName)
	_, err := e.emb.addCounterPod(ctx, t.filesName, t.mib, changedFilesMiB)
	return func() { e.emb.removePod(context.Background(), t.filesName) }, err
}

func (e *env) startCRI(ctx context.Context, t *target) (func(), error) {
	t.criPod = fmt.Sprintf("bench-cri-%d", t.mib)
	podID, ctrID, err := e.criRun(ctx, t.criPod, t.mib)
	if err != nil {
		return nil, err
	}
	t.criID = ctrID
	return func() { e.crictl(context.Background(), "rmp", "-f", podID) }, nil
}

func (e *env) startPodman(ctx context.Context, t *target) (func(), error) {
	t.podName = fmt.Sprintf("bench-%d", t.mib)
	err := e.podmanRun(ctx, t.podName, t.mib)
	return func() {
		exec.Command("podman", "rm", "-f", t.podName).Run()
		os.Remove(filepath.Join(e.o.work, "podman.tar"))
	}, err
}

func (e *env) startMigrationPods(ctx context.Context, t *target) (func(), error) {
	return e.prepareMigration(ctx, t.mib)
}

// --- checkpoint rows --------------------------------------------------------

// rawDump runs `runc checkpoint --leave-running` into dir/images, the way
// ckpt's embedded runtime calls it, and returns the work dir.
func (e *env) rawDump(ctx context.Context, t target, dir string) (string, error) {
	images, work := filepath.Join(dir, "images"), filepath.Join(dir, "work")
	for _, d := range []string{images, work} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return "", err
		}
	}
	out, err := exec.CommandContext(ctx, "runc", "--root", e.runcRoot(), "checkpoint", "--leave-running", "--file-locks",
		"--image-path", images, "--work-path", work, t.embID).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("runc checkpoint: %v: %s", err, out)
	}
	return work, nil
}

func (e *env) rowRaw(ctx context.Context, t target, run int) (sample, error) {
	dir := filepath.Join(e.o.work, "raw")
	os.RemoveAll(dir)
	start := time.Now()
	work, err := e.rawDump(ctx, t, dir)
	if err != nil {
		return sample{}, err
	}
	size, err := fsyncTree(filepath.Join(dir, "images"))
	if err != nil {
		return sample{}, err
	}
	s := sample{Latency: time.Since(start), Size: size, Freeze: freezeIn(work), Phases: phasesIn(filepath.Join(work, "dump.log"))}
	// The images stay for the runc restore row.
	return s, nil
}

func (e *env) rowRawTar(ctx context.Context, t target, run int) (sample, error) {
	dir := filepath.Join(e.o.work, "rawtar")
	os.RemoveAll(dir)
	defer os.RemoveAll(dir)
	start := time.Now()
	work, err := e.rawDump(ctx, t, dir)
	if err != nil {
		return sample{}, err
	}
	archive := filepath.Join(dir, "checkpoint.tar")
	if out, err := exec.CommandContext(ctx, "tar", "-cf", archive, "-C", filepath.Join(dir, "images"), ".").CombinedOutput(); err != nil {
		return sample{}, fmt.Errorf("tar: %v: %s", err, out)
	}
	if err := fsyncFile(archive); err != nil {
		return sample{}, err
	}
	s := sample{Latency: time.Since(start), Freeze: freezeIn(work), Size: fileSize(archive)}
	return s, nil
}

func (e *env) rowCkpt(ctx context.Context, t target, run int) (sample, error) {
	// The previous archive goes first, as row a removes its images first:
	// both then write into the memory just freed (DESIGN.md: memory the VM
	// took back is slow on first touch).
	last := filepath.Join(e.o.work, "ckpt-last")
	os.Remove(readLink(last))
	os.Remove(last)
	e.emb.resetPeakRSS()
	start := time.Now()
	path, err := e.emb.checkpoint(ctx, ns, t.embPod, "counter")
	if err != nil {
		return sample{}, err
	}
	s := sample{Latency: time.Since(start), RSS: e.emb.peakRSS(), Size: fileSize(path), Freeze: freezeInArchive(path), Phases: phasesInArchive(path)}
	// The newest archive stays for the restore rows.
	os.Symlink(path, last)
	return s, nil
}

// changedFilesMiB is how much the row cf's container changed in its root
// filesystem: every checkpoint captures it while the container is frozen.
const changedFilesMiB = 64

// rowCkptFiles is row c for a container that changed changedFilesMiB of
// files: its freeze time against row c's is the cost of the consistent cut.
func (e *env) rowCkptFiles(ctx context.Context, t target, run int) (sample, error) {
	e.emb.resetPeakRSS()
	start := time.Now()
	path, err := e.emb.checkpoint(ctx, ns, t.filesPod, "counter")
	if err != nil {
		return sample{}, err
	}
	s := sample{Latency: time.Since(start), RSS: e.emb.peakRSS(), Size: fileSize(path), Freeze: freezeInArchive(path), Phases: phasesInArchive(path)}
	os.Remove(path)
	return s, nil
}

func (e *env) rowCkptCRI(ctx context.Context, t target, run int) (sample, error) {
	e.cri.resetPeakRSS()
	start := time.Now()
	path, err := e.cri.checkpoint(ctx, ns, t.criPod, "counter")
	if err != nil {
		return sample{}, err
	}
	s := sample{Latency: time.Since(start), RSS: e.cri.peakRSS(), Size: fileSize(path), Freeze: freezeInArchive(path)}
	os.Remove(path)
	return s, nil
}

func (e *env) rowCrictl(ctx context.Context, t target, run int) (sample, error) {
	path := filepath.Join(e.o.work, "crictl.tar")
	os.Remove(path)
	defer os.Remove(path)
	start := time.Now()
	if _, err := e.crictl(ctx, "checkpoint", "--export="+path, t.criID); err != nil {
		return sample{}, err
	}
	return sample{Latency: time.Since(start), Size: fileSize(path), Freeze: freezeInArchive(path)}, nil
}

func (e *env) rowPodman(ctx context.Context, t target, run int) (sample, error) {
	path := filepath.Join(e.o.work, "podman.tar")
	os.Remove(path)
	start := time.Now()
	out, err := exec.CommandContext(ctx, "podman", "container", "checkpoint", "-R", "--export", path, "--compress", "none", t.podName).CombinedOutput()
	if err != nil {
		return sample{}, fmt.Errorf("podman checkpoint: %v: %s", err, out)
	}
	// The export stays for the podman restore row.
	return sample{Latency: time.Since(start), Size: fileSize(path), Freeze: freezeInArchive(path)}, nil
}

// --- restore rows -----------------------------------------------------------

// rowRuncRestore restores row a's images with `runc restore --detach` as a
// new container on a copy of the original's bundle (own cgroup, no CRIU
// config), with pipes of ours as stdio, then removes it.
func (e *env) rowRuncRestore(ctx context.Context, t target, run int) (sample, error) {
	images := filepath.Join(e.o.work, "raw", "images")
	if _, err := os.Stat(images); err != nil {
		return sample{}, fmt.Errorf("no images from row a: %w", err)
	}
	cdir := filepath.Join(e.emb.root, "ckpt", "containers", t.embID)
	var spec map[string]any
	b, err := os.ReadFile(filepath.Join(cdir, "bundle", "config.json"))
	if err != nil {
		return sample{}, err
	}
	if err := json.Unmarshal(b, &spec); err != nil {
		return sample{}, err
	}
	id := fmt.Sprintf("ckptbench-restore-%d-%d", t.mib, run)
	if l, ok := spec["linux"].(map[string]any); ok {
		l["cgroupsPath"] = "/ckptbench/" + id
	}
	if a, ok := spec["annotations"].(map[string]any); ok {
		delete(a, "org.criu.config")
	}
	bundle := filepath.Join(e.o.work, "restore-bundle")
	os.RemoveAll(bundle)
	if err := os.MkdirAll(bundle, 0o700); err != nil {
		return sample{}, err
	}
	if root, ok := spec["root"].(map[string]any); ok {
		if p, ok := root["path"].(string); ok && !filepath.IsAbs(p) {
			root["path"] = filepath.Join(cdir, "bundle", p)
		}
	}
	b, _ = json.Marshal(spec)
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), b, 0o600); err != nil {
		return sample{}, err
	}
	work := filepath.Join(e.o.work, "restore-work")
	os.RemoveAll(work)
	os.MkdirAll(work, 0o700)
	// stdio: pipes we drain until the container is gone.
	inR, inW, _ := os.Pipe()
	outR, outW, _ := os.Pipe()
	defer inW.Close()
	defer inR.Close()
	go io.Copy(io.Discard, outR)
	defer outR.Close()
	cmd := exec.CommandContext(ctx, "runc", "--root", e.runcRoot(), "restore", "--detach", "--file-locks",
		"--image-path", images, "--work-path", work, "--bundle", bundle, id)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, outW
	start := time.Now()
	err = cmd.Run()
	elapsed := time.Since(start)
	outW.Close()
	defer func() {
		exec.Command("runc", "--root", e.runcRoot(), "kill", id, "KILL").Run()
		time.Sleep(200 * time.Millisecond)
		exec.Command("runc", "--root", e.runcRoot(), "delete", "-f", id).Run()
		os.Remove(filepath.Join("/sys/fs/cgroup/ckptbench", id))
	}()
	if err != nil {
		detail, _ := os.ReadFile(filepath.Join(work, "restore.log"))
		return sample{}, fmt.Errorf("runc restore: %v: %s", err, lastLines(string(detail), 5))
	}
	e.criuRestore = nil
	s := sample{Latency: elapsed, CRIURestore: criuRestoreTime(work)}
	if s.CRIURestore > 0 {
		e.criuRestore = &sample{Latency: s.CRIURestore}
	}
	return s, nil
}

// criuRestoreTime is restore_time from CRIU's stats-restore in work (0:
// none).
func criuRestoreTime(work string) time.Duration {
	st, err := crit.GetRestoreStats(work)
	if err != nil {
		return 0
	}
	return time.Duration(st.GetRestoreTime()) * time.Microsecond
}

// rowCriuRestore reports CRIU's own restore time (restore_time of its
// stats-restore) in row ra's run: the images restored straight from a
// directory, without runc around CRIU.
func (e *env) rowCriuRestore(ctx context.Context, t target, run int) (sample, error) {
	if e.criuRestore == nil {
		return sample{}, errors.New("no CRIU restore statistics from row ra")
	}
	s := *e.criuRestore
	e.criuRestore = nil
	return s, nil
}

func (e *env) rowCkptRestore(ctx context.Context, t target, run int) (sample, error) {
	path := readLink(filepath.Join(e.o.work, "ckpt-last"))
	if path == "" {
		return sample{}, errors.New("no archive from row c")
	}
	pod := fmt.Sprintf("restored-%d-%d", t.mib, run)
	e.emb.resetPeakRSS()
	start := time.Now()
	id, err := e.emb.restore(ctx, ns, pod, "counter", filepath.Base(path))
	if err != nil {
		return sample{}, err
	}
	s := sample{Latency: time.Since(start), RSS: e.emb.peakRSS(),
		CRIURestore: criuRestoreTime(filepath.Join(e.emb.root, "ckpt", "containers", id, "restore-work"))}
	e.emb.ckpt(context.Background(), "rm", ns+"/"+pod+"/counter")
	return s, nil
}

// rowCkptLazyRestore restores lazily: the time until the API answers with
// the container running. It keeps the time until its memory was complete
// for row rm.
func (e *env) rowCkptLazyRestore(ctx context.Context, t target, run int) (sample, error) {
	e.lazyMemory = nil
	path := readLink(filepath.Join(e.o.work, "ckpt-last"))
	if path == "" {
		return sample{}, errors.New("no archive from row c")
	}
	pod := fmt.Sprintf("lazy-%d-%d", t.mib, run)
	e.emb.resetPeakRSS()
	start := time.Now()
	if err := e.emb.restoreLazy(ctx, ns, pod, "counter", filepath.Base(path)); err != nil {
		return sample{}, err
	}
	s := sample{Latency: time.Since(start)}
	defer e.emb.ckpt(context.Background(), "rm", ns+"/"+pod+"/counter")
	var complete time.Time
	err := waitFor(ctx, func() bool {
		out, err := e.emb.ckpt(ctx, "ps", "-o", "json")
		if err != nil {
			return false
		}
		var list []struct {
			Pod    string
			Memory *struct {
				State    string
				Error    string
				Complete time.Time
			}
		}
		if json.Unmarshal([]byte(out), &list) != nil {
			return false
		}
		for _, c := range list {
			if c.Pod == pod && c.Memory != nil && c.Memory.State != "loading" {
				complete = c.Memory.Complete
				if c.Memory.State != "complete" {
					complete = time.Time{}
				}
				return true
			}
		}
		return false
	})
	if err != nil || complete.IsZero() {
		return sample{}, fmt.Errorf("memory of the lazy restore not complete: %v", err)
	}
	s.RSS = e.emb.peakRSS()
	e.lazyMemory = &sample{Latency: complete.Sub(start), RSS: s.RSS}
	return s, nil
}

// rowLazyMemory reports row rl's time until memory was complete.
func (e *env) rowLazyMemory(ctx context.Context, t target, run int) (sample, error) {
	if e.lazyMemory == nil {
		return sample{}, errors.New("no lazy restore from row rl")
	}
	return *e.lazyMemory, nil
}

func (e *env) rowPodmanRestore(ctx context.Context, t target, run int) (sample, error) {
	path := filepath.Join(e.o.work, "podman.tar")
	if _, err := os.Stat(path); err != nil {
		return sample{}, fmt.Errorf("no export from row f: %w", err)
	}
	name := fmt.Sprintf("restored-%d-%d", t.mib, run)
	start := time.Now()
	out, err := exec.CommandContext(ctx, "podman", "container", "restore", "--import", path, "--name", name).CombinedOutput()
	elapsed := time.Since(start)
	defer exec.Command("podman", "rm", "-f", name).Run()
	if err != nil {
		return sample{}, fmt.Errorf("podman restore: %v: %s", err, out)
	}
	return sample{Latency: elapsed}, nil
}

// --- parallel ---------------------------------------------------------------

type parallelResult struct {
	N, MiB     int
	Sequential []float64 // seconds, per run
	Parallel   []float64
}

// measureParallel checkpoints n containers of mib MiB one after another and
// then all at once, in turns, through the embedded agent.
func (e *env) measureParallel(ctx context.Context, n, mib int) (parallelResult, error) {
	res := parallelResult{N: n, MiB: mib}
	var pods []string
	defer func() {
		for _, p := range pods {
			e.emb.removePod(context.Background(), p)
		}
	}()
	for i := 0; i < n; i++ {
		p := fmt.Sprintf("par-%d", i)
		if _, err := e.emb.addCounterPod(ctx, p, mib, 0); err != nil {
			return res, err
		}
		pods = append(pods, p)
	}
	once := func(p string) error {
		path, err := e.emb.checkpoint(ctx, ns, staticPod(p), "counter")
		os.Remove(path)
		return err
	}
	for run := 0; run <= e.o.runs; run++ {
		start := time.Now()
		for _, p := range pods {
			if err := once(p); err != nil {
				return res, err
			}
		}
		seq := time.Since(start).Seconds()
		start = time.Now()
		var wg sync.WaitGroup
		errs := make([]error, len(pods))
		for i, p := range pods {
			wg.Add(1)
			go func() { defer wg.Done(); errs[i] = once(p) }()
		}
		wg.Wait()
		par := time.Since(start).Seconds()
		if err := errors.Join(errs...); err != nil {
			return res, err
		}
		log.Printf("parallel %d x %d MiB run %d: sequential %.3fs, parallel %.3fs", n, mib, run, seq, par)
		if run > 0 {
			res.Sequential = append(res.Sequential, seq)
			res.Parallel = append(res.Parallel, par)
		}
	}
	return res, nil
}

// --- containerd and podman --------------------------------------------------

func (e *env) crictl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(ctrdBin, "crictl"), append([]string{"--config", e.crictlY, "--timeout", "10m"}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output() // stdout only: crictl warns on stderr
	if err != nil {
		return "", fmt.Errorf("crictl %s: %v: %s", args[0], err, lastLines(stderr.String(), 3))
	}
	return strings.TrimSpace(string(out)), nil
}

// criRun starts a pod with the counter through CRI and waits until it counts.
func (e *env) criRun(ctx context.Context, pod string, mib int) (string, string, error) {
	dir := filepath.Join(e.o.work, "cri-"+pod)
	os.MkdirAll(filepath.Join(dir, "logs"), 0o700)
	podCfg := map[string]any{
		"metadata":      map[string]any{"name": pod, "namespace": ns, "uid": "uid-" + pod, "attempt": 0},
		"log_directory": filepath.Join(dir, "logs"),
		"linux":         map[string]any{},
		// the kubelet's labels, by which ckpt finds the pod
		"labels": map[string]string{"io.kubernetes.pod.name": pod, "io.kubernetes.pod.namespace": ns, "io.kubernetes.pod.uid": "uid-" + pod},
	}
	ctrCfg := map[string]any{
		"metadata": map[string]any{"name": "counter"},
		"image":    map[string]any{"image": "localhost/counter:latest"},
		"envs":     []any{map[string]any{"key": "COUNTER_MEM_MIB", "value": fmt.Sprint(mib)}},
		"log_path": "counter/0.log",
		"labels": map[string]string{"io.kubernetes.container.name": "counter", "io.kubernetes.pod.name": pod,
			"io.kubernetes.pod.namespace": ns, "io.kubernetes.pod.uid": "uid-" + pod},
	}
	podJSON, ctrJSON := filepath.Join(dir, "pod.json"), filepath.Join(dir, "ctr.json")
	b, _ := json.Marshal(podCfg)
	os.WriteFile(podJSON, b, 0o600)
	b, _ = json.Marshal(ctrCfg)
	os.WriteFile(ctrJSON, b, 0o600)
	podID, err := e.crictl(ctx, "runp", podJSON)
	if err != nil {
		return "", "", err
	}
	ctrID, err := e.crictl(ctx, "create", podID, ctrJSON, podJSON)
	if err != nil {
		return podID, "", err
	}
	if _, err := e.crictl(ctx, "start", ctrID); err != nil {
		return podID, ctrID, err
	}
	logPath := filepath.Join(dir, "logs", "counter", "0.log")
	if err := waitFor(ctx, func() bool { b, _ := os.ReadFile(logPath); return strings.Contains(string(b), "count 1") }); err != nil {
		return podID, ctrID, fmt.Errorf("CRI pod %s did not count: %w", pod, err)
	}
	return podID, ctrID, nil
}

func (e *env) podmanRun(ctx context.Context, name string, mib int) error {
	exec.Command("podman", "rm", "-f", name).Run()
	out, err := exec.CommandContext(ctx, "podman", "run", "-d", "--name", name, "--label", "ckptbench=1", "--network", "none",
		"-e", fmt.Sprintf("COUNTER_MEM_MIB=%d", mib), "localhost/counter:latest").CombinedOutput()
	if err != nil {
		return fmt.Errorf("podman run: %v: %s", err, out)
	}
	return waitFor(ctx, func() bool {
		out, _ := exec.Command("podman", "logs", name).CombinedOutput()
		return strings.Contains(string(out), "count 1")
	})
}

// --- helpers ----------------------------------------------------------------

func waitFor(ctx context.Context, cond func() bool) error {
	deadline := time.Now().Add(5 * time.Minute)
	for time.Now().Before(deadline) {
		if cond() {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return errors.New("timed out")
}

// fsyncTree fsyncs every regular file under dir, and dir; it returns their total size.
func fsyncTree(dir string) (int64, error) {
	var total int64
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		total += fi.Size()
		return fsyncFile(p)
	})
	if err == nil {
		err = fsyncFile(dir)
	}
	return total, err
}

func fsyncFile(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

func fileSize(p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return fi.Size()
}

func readLink(p string) string {
	s, _ := os.Readlink(p)
	return s
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

// freezeIn reads CRIU's frozen time from dir/stats-dump.
func freezeIn(dir string) time.Duration {
	st, err := crit.GetDumpStats(dir)
	if err != nil {
		return 0
	}
	return time.Duration(st.GetFrozenTime()) * time.Microsecond
}

// freezeInArchive reads stats-dump from a checkpoint archive (top level or
// under checkpoint/).
func freezeInArchive(path string) time.Duration {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err != nil {
			return 0
		}
		name := strings.TrimPrefix(hdr.Name, "./")
		if name != "stats-dump" && name != "checkpoint/stats-dump" {
			continue
		}
		dir, err := os.MkdirTemp("", "stats-")
		if err != nil {
			return 0
		}
		defer os.RemoveAll(dir)
		out, err := os.Create(filepath.Join(dir, "stats-dump"))
		if err != nil {
			return 0
		}
		_, err = io.Copy(out, io.LimitReader(tr, 1<<20))
		out.Close()
		if err != nil {
			return 0
		}
		return freezeIn(dir)
	}
}
