package embedded

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	lib "github.com/checkpoint-restore/checkpointctl/lib"
	"github.com/checkpoint-restore/go-criu/v8/crit"

	"github.com/ckpt-dev/ckpt/internal/archive"
	"github.com/ckpt-dev/ckpt/internal/runtime"
)

// Checkpoint dumps a running container with CRIU, leaving it running, and
// writes the archive to archivePath (which must not exist). On failure or
// when ctx ends, CRIU is stopped, the container is thawed, and nothing but
// a partial archivePath (which the caller removes) is left behind.
// The emptyDirs the container mounts are captured with its files.
func (r *Runtime) Checkpoint(ctx context.Context, c runtime.Container, archivePath string, opts runtime.CheckpointOptions) (res runtime.CheckpointResult, err error) {
	return r.checkpoint(ctx, c, archivePath, opts, true)
}

// checkpoint is Checkpoint; a pod checkpoint captures the emptyDirs once
// for the pod (withVolumes false).
func (r *Runtime) checkpoint(ctx context.Context, c runtime.Container, archivePath string, opts runtime.CheckpointOptions, withVolumes bool) (res runtime.CheckpointResult, err error) {
	rec, err := r.loadRecord(c.ID)
	if err != nil {
		return res, fmt.Errorf("checkpoint container %s: %w", c.ID, runtime.ErrContainerNotFound)
	}
	var volumes map[string]string
	if withVolumes && rec.PodUID != "" {
		if _, pod, err := r.podOf(rec); err == nil {
			volumes = mountedEmptyDirs(pod, r.podDir(rec.PodUID), rec.Name)
		}
	}
	dir := r.containerDir(rec.ID)
	work, err := os.MkdirTemp(filepath.Dir(archivePath), ".work-")
	if err != nil {
		return res, fmt.Errorf("checkpoint container %s: %w", rec.ID, err)
	}
	defer os.RemoveAll(work)
	images := filepath.Join(work, lib.CheckpointDirectory)
	criuWork := filepath.Join(work, "criu")
	for _, d := range []string{images, criuWork} {
		if err := os.Mkdir(d, 0o700); err != nil {
			return res, err
		}
	}
	// CRIU runs this hook while the container is still frozen: the rootfs
	// diff, deleted.files and the log's end are taken at the same cut as
	// memory.
	frozen := frozenCapture(dir, work, volumes)
	hook := filepath.Join(work, "post-dump.sh")
	if err := os.WriteFile(hook, []byte(frozen.hookScript(r.cfg.Shim)), 0o700); err != nil {
		return res, err
	}
	if err := os.WriteFile(filepath.Join(dir, fileCriuConf), []byte("action-script "+hook+"\n"), 0o600); err != nil {
		return res, err
	}
	defer os.WriteFile(filepath.Join(dir, fileCriuConf), nil, 0o600)

	f, err := os.OpenFile(archivePath, os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o600)
	if err != nil {
		return res, fmt.Errorf("checkpoint container %s: %w", rec.ID, err)
	}
	defer f.Close()
	// One writer. The pages go straight into the archive while CRIU dumps
	// (stream.go) where FIFOs can be made; otherwise after the dump.
	w := archive.NewFileWriter(f)
	if err := w.AddDirEntry(lib.CheckpointDirectory, 0o700); err != nil {
		return res, fmt.Errorf("checkpoint container %s: write archive: %w", rec.ID, err)
	}
	var capt *capture
	if canStream(images) {
		n := fifoCount(filepath.Join(defaultContainerCgroup, rec.ID))
		if capt, err = startCapture(images, work, lib.CheckpointDirectory, n, w, filepath.Join(r.cfg.StateDir, filePipeMaxSize)); err != nil {
			return res, fmt.Errorf("checkpoint container %s: %w", rec.ID, err)
		}
		defer capt.finish()
	}

	tcp := opts.TCPEstablished || rec.PodAnnotations[runtime.AnnotationTCPEstablished] == "true"
	if err := r.dump(ctx, rec.ID, images, criuWork, tcp); err != nil {
		if capt != nil {
			// CRIU fails when the capture stops reading (a full disk): say why.
			if cerr := capt.finish(); cerr != nil {
				return res, fmt.Errorf("checkpoint container %s: write archive: %w (%v)", rec.ID, cerr, err)
			}
		}
		return res, err
	}
	if capt != nil {
		if err := capt.finish(); err != nil {
			return res, fmt.Errorf("checkpoint container %s: %w", rec.ID, err)
		}
		if err := capt.flush(); err != nil {
			return res, fmt.Errorf("checkpoint container %s: write archive: %w", rec.ID, err)
		}
	}
	if st, err := crit.GetDumpStats(criuWork); err == nil {
		res.FreezeTime = time.Duration(st.GetFrozenTime()) * time.Microsecond
		res.PagesWritten = st.GetPagesWritten()
	}

	if err := r.writeArchive(w, rec, images, criuWork, frozen); err != nil {
		return res, fmt.Errorf("checkpoint container %s: write archive: %w", rec.ID, err)
	}
	return res, f.Close()
}

// dump runs `runc checkpoint --leave-running`. runc and CRIU run in their own
// process group so that a cancelled context stops both; the container is
// thawed afterwards if the dump did not finish.
func (r *Runtime) dump(ctx context.Context, id, images, criuWork string, tcpEstablished bool) (err error) {
	runcLog := filepath.Join(criuWork, "runc.log")
	args := []string{"--root", r.runcRoot(), "--criu", r.cfg.Criu, "--log", runcLog, "--log-format", "json",
		"checkpoint", "--leave-running", "--file-locks", "--image-path", images, "--work-path", criuWork}
	if tcpEstablished {
		args = append(args, "--tcp-established")
	}
	args = append(args, id)
	cmd := exec.Command(r.cfg.Runc, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("checkpoint container %s: start runc: %w", id, err)
	}
	r.recordDump(id, cmd.Process.Pid)
	defer r.forgetDump(id)
	waitErr := make(chan error, 1)
	go func() { waitErr <- cmd.Wait() }()
	select {
	case err = <-waitErr:
	case <-ctx.Done():
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-waitErr
		// A killed CRIU leaves its network lock (every packet of the
		// namespace dropped) and may leave the tasks frozen.
		unlocked, unlockErr := r.unlockNetwork(id)
		r.thaw(id)
		note := ""
		switch {
		case unlockErr != nil:
			note = fmt.Sprintf(" (and %v)", unlockErr)
		case unlocked:
			note = " (CRIU's network lock removed)"
		}
		cause := ctx.Err()
		if errors.Is(cause, context.DeadlineExceeded) {
			return fmt.Errorf("checkpoint container %s: dump stopped at the deadline%s: %w", id, note, runtime.ErrTimeout)
		}
		return fmt.Errorf("checkpoint container %s: dump cancelled%s: %w", id, note, cause)
	}
	if err != nil {
		r.thaw(id)
		detail := strings.TrimSpace(out.String())
		if e := lastRuncError(runcLog, filepath.Join(criuWork, "dump.log")); e != "no details logged" {
			detail = e
		}
		detail = dropStagingLogPath(detail)
		kept := r.keepFailureLogs(id, "dump", runcLog, filepath.Join(criuWork, "dump.log"))
		return fmt.Errorf("checkpoint container %s: runc checkpoint: %v: %s%s%s", id, err, detail, explainDumpFailure(detail), kept)
	}
	return nil
}

// thaw makes sure a container is not left frozen by an interrupted dump.
func (r *Runtime) thaw(id string) { thawCgroup(id) }

// Frozen reports whether the container's cgroup is frozen.
func (r *Runtime) Frozen(id string) bool {
	cg := filepath.Join(defaultContainerCgroup, id)
	if b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/freezer", cg, "freezer.state")); err == nil {
		return strings.TrimSpace(string(b)) != "THAWED"
	}
	if b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", cg, "cgroup.freeze")); err == nil {
		return strings.TrimSpace(string(b)) == "1"
	}
	return false
}

// memberWriter is what writeArchive needs: archive.Writer, or the
// archive.FileWriter that already holds the pages captured during the dump.
type memberWriter interface {
	AddBytes(name string, data []byte) error
	AddFile(name, path string) error
	AddDir(name, dir string) error
	AddReader(name string, size int64, r io.Reader) error
	Close() error
}

// writeArchive writes the CRI-O compatible layout.
func (r *Runtime) writeArchive(w memberWriter, rec *record, images, criuWork string, capture FrozenCapture) error {
	dir := r.containerDir(rec.ID)
	// The post-dump hook wrote these while the container was frozen.
	if _, err := os.Stat(capture.Diff); err != nil {
		return fmt.Errorf("rootfs diff was not captured while frozen: %w", err)
	}
	cfg := lib.ContainerConfig{
		ID: rec.ID, Name: rec.Name,
		RootfsImage: rec.Image, RootfsImageRef: rec.ImageID, RootfsImageName: rec.Image,
		OCIRuntime: "runc", CreatedTime: rec.CreatedAt, CheckpointedAt: time.Now().UTC(),
		RestoredAt: rec.RestoredAt, Restored: rec.Origin == originRestore,
	}
	cfgJSON, err := marshalIndent(cfg)
	if err != nil {
		return err
	}
	steps := []func() error{
		func() error { return w.AddBytes(lib.ConfigDumpFile, cfgJSON) },
		func() error { return r.addPodMember(w, rec) },
		func() error { return w.AddFile(lib.SpecDumpFile, filepath.Join(dir, dirBundle, "config.json")) },
		func() error { return w.AddDir(lib.CheckpointDirectory, images) },
		func() error { return w.AddFile(lib.RootFsDiffTar, capture.Diff) },
		func() error { return w.AddFile(lib.DeletedFilesFile, capture.Deleted) },
		func() error { return addIfExists(w, "stats-dump", filepath.Join(criuWork, "stats-dump")) },
		func() error { return addIfExists(w, lib.DumpLogFile, filepath.Join(criuWork, lib.DumpLogFile)) },
		func() error { return addLog(w, capture.Log, readSize(capture.LogSize)) },
		func() error { return addVolumes(w, capture) },
		w.Close,
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return err
		}
	}
	return nil
}

func addIfExists(w memberWriter, name, path string) error {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return w.AddFile(name, path)
}

// readSize reads the number the post-dump hook wrote; -1 if there is none.
func readSize(path string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return -1
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return -1
	}
	return n
}

// addLog archives the container log up to size bytes (all of it if size < 0).
func addLog(w memberWriter, path string, size int64) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if size < 0 || size > st.Size() {
		size = st.Size()
	}
	return w.AddReader("container.log", size, io.LimitReader(f, size))
}

// addPodMember archives the container's pod (pod.json), from which a
// restore builds the container's spec.
func (r *Runtime) addPodMember(w memberWriter, rec *record) error {
	if rec.PodUID == "" {
		return nil
	}
	return w.AddFile(PodMember, filepath.Join(r.podDir(rec.PodUID), filePod))
}

// addVolumes archives the emptyDirs the capture wrote, as volumes/NAME.tar.
func addVolumes(w memberWriter, c FrozenCapture) error {
	for _, v := range c.Volumes {
		name, _, _ := strings.Cut(v, "=")
		if err := w.AddFile(path.Join(PodVolumes, name+".tar"), c.volumeTar(name)); err != nil {
			return err
		}
	}
	return nil
}
