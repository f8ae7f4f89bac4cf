// Package embedded is ckpt's built-in container runtime: runc runs the
// containers, CRIU checkpoints them, and a small per-container shim (ckpt
// itself, re-executed) holds their stdio and writes their logs.
package embedded

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	gorunc "github.com/containerd/go-runc"

	"github.com/ckpt-dev/ckpt/internal/runtime"
)

// Image is what the runtime needs of an unpacked image.
type Image struct {
	ID         string
	Name       string
	RootFS     string
	Env        []string
	Entrypoint []string
	Cmd        []string
	WorkingDir string
	User       string // the image config's User
}

// Images resolves image references to unpacked images.
type Images interface {
	Resolve(ref string) (Image, error)
}

// Config configures the embedded runtime.
type Config struct {
	// StateDir holds containers and runc state (<root-dir>/ckpt).
	StateDir string
	// Runc and Criu are the binaries to run; empty means found on PATH.
	Runc string
	Criu string
	// Shim is the ckpt binary re-executed as the per-container shim.
	Shim string
	// StopTimeout is how long a container gets between SIGTERM and SIGKILL.
	StopTimeout time.Duration
	// NodeName names static pods <name>-<node>, as the kubelet does.
	NodeName string
	// PauseImage is the pod sandbox image (default DefaultPauseImage).
	PauseImage string
	// ClusterDomain completes a pod's subdomain into its FQDN, as the
	// kubelet's --cluster-domain; empty means none.
	ClusterDomain string
	// RestorePolicy bounds what a restored pod may ask for.
	RestorePolicy RestorePolicy
	// CheckImages, when set, checks a restore's CRIU images against the
	// prepared root and the restored spec's bounding capabilities before
	// CRIU runs (serve sets inspect.ValidateCRIUImages).
	CheckImages func(imagesDir, rootfs string, capabilities []string) error
}

// Runtime runs and checkpoints containers with runc and CRIU.
type Runtime struct {
	cfg    Config
	images Images
	runc   *gorunc.Runc

	probes    prober
	mu        sync.Mutex // serializes container creation and removal
	agentLock *os.File   // held by the agent; see LockAgent
}

// New prepares the state directory and finds the binaries.
func New(cfg Config, images Images) (*Runtime, error) {
	if cfg.StateDir == "" {
		return nil, fmt.Errorf("embedded runtime: state dir is required")
	}
	var err error
	if cfg.Runc, err = lookBinary(cfg.Runc, "runc"); err != nil {
		return nil, err
	}
	if cfg.Criu, err = lookBinary(cfg.Criu, "criu"); err != nil {
		return nil, err
	}
	if cfg.Shim == "" {
		if cfg.Shim, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("embedded runtime: find own binary for the shim: %w", err)
		}
	}
	if cfg.StopTimeout == 0 {
		cfg.StopTimeout = 10 * time.Second
	}
	if cfg.PauseImage == "" {
		cfg.PauseImage = DefaultPauseImage
	}
	for _, d := range []string{cfg.StateDir, filepath.Join(cfg.StateDir, "containers"), filepath.Join(cfg.StateDir, "runc")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("embedded runtime: %w", err)
		}
	}
	r := &Runtime{cfg: cfg, images: images}
	r.runc = r.newRunc("")
	return r, nil
}

func lookBinary(given, name string) (string, error) {
	if given != "" {
		return given, nil
	}
	// Prefer the private CRIU that install-deps.sh puts in /usr/local/sbin.
	for _, dir := range []string{"/usr/local/sbin", "/usr/local/bin"} {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("embedded runtime needs %s: %w (run hack/install-deps.sh)", name, err)
	}
	return p, nil
}

// CriuPath is the CRIU binary the runtime runs.
func (r *Runtime) CriuPath() string { return r.cfg.Criu }

func (r *Runtime) runcRoot() string { return filepath.Join(r.cfg.StateDir, "runc") }

func (r *Runtime) newRunc(logFile string) *gorunc.Runc {
	return &gorunc.Runc{
		Command:   r.cfg.Runc,
		Root:      r.runcRoot(),
		Criu:      r.cfg.Criu,
		Log:       logFile,
		LogFormat: gorunc.JSON,
	}
}

// Container returns the current view of one container.
func (r *Runtime) container(ctx context.Context, rec *record) (c runtime.Container) {
	c = runtime.Container{
		ID: rec.ID, Namespace: rec.Namespace, Pod: rec.Pod, Name: rec.Name,
		Image: rec.Image, ImageID: rec.ImageID, CreatedAt: rec.CreatedAt, State: runtime.StateUnknown,
		Restarts: rec.Restarts,
	}
	if rec.LastExit != nil {
		c.LastExitCode, c.LastExitReason = &rec.LastExit.Code, rec.LastExit.Reason
	}
	defer func() {
		// Ready as the kubelet says it: running, and its readiness probe (if
		// any) passed.
		_, err := os.Stat(filepath.Join(r.containerDir(rec.ID), fileReady))
		c.Ready = c.State == runtime.StateRunning && (!rec.HasReadiness || err == nil)
	}()
	if st, err := r.runc.State(ctx, rec.ID); err == nil {
		c.Pid = st.Pid
		switch st.Status {
		case "running":
			c.State = runtime.StateRunning
		case "paused":
			c.State = runtime.StatePaused
		case "created":
			c.State = runtime.StateCreated
		case "stopped":
			// The process is gone; it has exited once its shim has
			// recorded how (the code, OOMKilled), as containerd reports
			// an exit only once its shim has published it.
			if !r.readExit(rec.ID, &c) && r.shimAlive(rec.ID) {
				c.State = runtime.StateRunning
			} else {
				c.State = runtime.StateExited
			}
		}
		return c
	}
	r.readExit(rec.ID, &c)
	return c
}

// readExit fills in c's exit from the shim's record, if there is one.
func (r *Runtime) readExit(id string, c *runtime.Container) bool {
	var st exitStatus
	if err := readJSON(filepath.Join(r.containerDir(id), fileExit), &st); err != nil {
		return false
	}
	c.State, c.ExitCode, c.ExitReason = runtime.StateExited, st.Code, st.Reason
	return true
}

// List returns every container, sorted by namespace, pod and name.
func (r *Runtime) List(ctx context.Context) ([]runtime.Container, error) {
	recs, err := r.loadRecords()
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	out := make([]runtime.Container, 0, len(recs))
	for _, rec := range recs {
		if rec.Kind == kindSandbox {
			continue // pause containers are the pods' sandboxes, not containers
		}
		out = append(out, r.container(ctx, rec))
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		if a.Pod != b.Pod {
			return a.Pod < b.Pod
		}
		if a.Name != b.Name {
			return a.Name < b.Name
		}
		return a.CreatedAt.After(b.CreatedAt)
	})
	return out, nil
}

// Lookup finds the running container ref names. Like the kubelet it tells a
// missing pod from a missing container.
func (r *Runtime) Lookup(ctx context.Context, ref runtime.Ref) (runtime.Container, error) {
	all, err := r.List(ctx)
	if err != nil {
		return runtime.Container{}, err
	}
	podFound := false
	var found *runtime.Container
	for i, c := range all {
		if c.Namespace != ref.Namespace || c.Pod != ref.Pod {
			continue
		}
		podFound = true
		if c.Name != ref.Container {
			continue
		}
		if found == nil || (c.State == runtime.StateRunning && found.State != runtime.StateRunning) {
			found = &all[i]
		}
	}
	switch {
	case !podFound:
		return runtime.Container{}, fmt.Errorf("%w: %s/%s", runtime.ErrPodNotFound, ref.Namespace, ref.Pod)
	case found == nil:
		return runtime.Container{}, fmt.Errorf("%w: %s", runtime.ErrContainerNotFound, ref)
	case found.State != runtime.StateRunning:
		return *found, fmt.Errorf("container %s (%s) is %s: %w", ref, short(found.ID), found.State, runtime.ErrNotRunning)
	}
	return *found, nil
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// prepare lays out a container directory with its overlay root filesystem.
// On error everything it made is undone.
func (r *Runtime) prepare(rec *record, img Image) (dir string, err error) {
	dir = r.containerDir(rec.ID)
	if err := os.MkdirAll(filepath.Join(dir, dirBundle), 0o700); err != nil {
		return "", err
	}
	defer func() {
		if err != nil {
			r.cleanupDir(rec.ID)
		}
	}()
	for _, d := range []string{dirRootfs, dirUpper, dirOverlayWrk} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return "", err
		}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", img.RootFS, filepath.Join(dir, dirUpper), filepath.Join(dir, dirOverlayWrk))
	// nfs_export (with index) makes the overlay's files openable by handle,
	// which CRIU needs to dump an inotify watch on them; a kernel or lower
	// file system without it still gets a plain overlay.
	rootfs := filepath.Join(dir, dirRootfs)
	if err := syscall.Mount("overlay", rootfs, "overlay", 0, opts+",index=on,nfs_export=on"); err != nil {
		if err := syscall.Mount("overlay", rootfs, "overlay", 0, opts); err != nil {
			return "", fmt.Errorf("mount overlay root filesystem: %w", err)
		}
	}
	// CRIU reads this file through the org.criu.config annotation; it is
	// rewritten before every checkpoint.
	if err := os.WriteFile(filepath.Join(dir, fileCriuConf), nil, 0o600); err != nil {
		return "", err
	}
	return dir, nil
}

// cleanupDir unmounts and removes a container directory.
func (r *Runtime) cleanupDir(id string) {
	dir := r.containerDir(id)
	rootfs := filepath.Join(dir, dirRootfs)
	// Unmount until nothing is mounted there any more.
	for i := 0; i < 10 && syscall.Unmount(rootfs, syscall.MNT_DETACH) == nil; i++ {
	}
	os.RemoveAll(dir)
}

// create lays out the container, writes its spec and starts its shim. The
// shim either creates the container fresh or restores it from restoreImages.
func (r *Runtime) create(ctx context.Context, rec *record, img Image, spec func(rootfs, criuConf string) ([]byte, error), restore *restoreInput, forward []string) (c runtime.Container, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	dir, err := r.prepare(rec, img)
	if err != nil {
		return c, fmt.Errorf("create container %s: %w", rec.ID, err)
	}
	defer func() {
		if err != nil {
			r.runc.Delete(context.Background(), rec.ID, &gorunc.DeleteOpts{Force: true})
			r.cleanupDir(rec.ID)
		}
	}()
	if restore != nil {
		if err := restore.prepareRootfs(filepath.Join(dir, dirRootfs)); err != nil {
			return c, fmt.Errorf("restore container %s: %w", rec.ID, err)
		}
	}
	data, err := spec(filepath.Join(dir, dirRootfs), filepath.Join(dir, fileCriuConf))
	if err != nil {
		return c, fmt.Errorf("create container %s: %w", rec.ID, err)
	}
	if err := os.WriteFile(filepath.Join(dir, dirBundle, "config.json"), data, 0o600); err != nil {
		return c, err
	}
	if err := writeJSONAtomic(filepath.Join(dir, fileMeta), rec); err != nil {
		return c, err
	}
	if err := r.startShim(ctx, rec, restore, forward); err != nil {
		return c, err
	}
	return r.container(ctx, rec), nil
}

// Stop stops a container: SIGTERM, then SIGKILL after the stop timeout.
func (r *Runtime) Stop(ctx context.Context, id string) error {
	rec, err := r.loadRecord(id)
	if err != nil {
		return fmt.Errorf("stop container %s: %w", id, runtime.ErrContainerNotFound)
	}
	if st := r.container(ctx, rec).State; st != runtime.StateRunning && st != runtime.StatePaused {
		return nil
	}
	if !rec.Stopped {
		rec.Stopped = true // not restarted by its pod's restart policy
		writeJSONAtomic(filepath.Join(r.containerDir(id), fileMeta), rec)
	}
	// A frozen process cannot act on a signal: never leave one frozen here.
	r.thaw(id)
	if err := r.runc.Kill(ctx, id, int(syscall.SIGTERM), nil); err != nil && !isGone(err) {
		return fmt.Errorf("stop container %s: %w", id, err)
	}
	if r.waitExit(ctx, id, r.cfg.StopTimeout) {
		return nil
	}
	if err := r.runc.Kill(ctx, id, int(syscall.SIGKILL), &gorunc.KillOpts{All: true}); err != nil && !isGone(err) {
		return fmt.Errorf("kill container %s: %w", id, err)
	}
	r.thaw(id)
	if !r.waitExit(ctx, id, 10*time.Second) {
		return fmt.Errorf("stop container %s: still running after SIGKILL (frozen: %v, shim log %s)", id, r.Frozen(id), filepath.Join(r.containerDir(id), fileShimLog))
	}
	return nil
}

func isGone(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "not running") || strings.Contains(err.Error(), "does not exist"))
}

// waitExit waits until the shim has recorded the container's exit.
func (r *Runtime) waitExit(ctx context.Context, id string, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(filepath.Join(r.containerDir(id), fileExit)); err == nil {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(50 * time.Millisecond):
		}
	}
	return false
}

// Remove stops (if needed) and deletes a container and its files. The
// last container of a pod takes the pod's sandbox with it.
func (r *Runtime) Remove(ctx context.Context, id string) error {
	rec, err := r.loadRecord(id)
	if err != nil {
		return fmt.Errorf("remove container %s: %w", id, runtime.ErrContainerNotFound)
	}
	if rec.Kind == kindSandbox {
		return fmt.Errorf("remove container %s: it is the sandbox of pod %s/%s; remove the pod's containers: %w", id, rec.Namespace, rec.Pod, runtime.ErrInvalid)
	}
	if err := r.removeContainer(ctx, id); err != nil {
		return err
	}
	return r.removeIfEmpty(ctx, rec.PodUID)
}

func (r *Runtime) removeContainer(ctx context.Context, id string) error {
	if err := r.Stop(ctx, id); err != nil && !errors.Is(err, runtime.ErrContainerNotFound) {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.runc.Delete(ctx, id, &gorunc.DeleteOpts{Force: true}); err != nil && !isGone(err) {
		return fmt.Errorf("remove container %s: %w", id, err)
	}
	r.waitShimGone(id)
	r.cleanupDir(id)
	return nil
}

// waitShimGone waits (briefly) for a container's shim to finish, so that
// its last writes (runc's log of the delete) land before the directory is
// removed.
func (r *Runtime) waitShimGone(id string) {
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline) && r.shimAlive(id); {
		time.Sleep(20 * time.Millisecond)
	}
}

// shimAlive reports whether a container's shim still runs.
func (r *Runtime) shimAlive(id string) bool {
	b, err := os.ReadFile(filepath.Join(r.containerDir(id), fileShimPid))
	if err != nil {
		return false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !strings.Contains(string(cmdline), id) {
		return false // gone, or the number now belongs to another process
	}
	return !processGone(pid) // a zombie has exited; its parent has yet to reap it
}

// Log returns the path of a container's log file.
func (r *Runtime) Log(id string) string { return filepath.Join(r.containerDir(id), fileLog) }

// ThawAll thaws containers left frozen by a dump that an earlier agent did
// not see through (it was killed together with runc and CRIU). Call it at
// start, before any checkpoint runs. It returns the IDs it thawed.
func (r *Runtime) ThawAll() []string {
	recs, _ := r.loadRecords()
	var thawed []string
	for _, rec := range recs {
		if r.Frozen(rec.ID) {
			r.unlockNetwork(rec.ID) // the killed CRIU's lock, if it left one
			r.thaw(rec.ID)
			thawed = append(thawed, rec.ID)
		}
	}
	return thawed
}
