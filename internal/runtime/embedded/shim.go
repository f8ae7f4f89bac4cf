package embedded

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	gorunc "github.com/containerd/go-runc"
	"golang.org/x/sys/unix"
)

// ShimOptions are the shim's command-line options.
type ShimOptions struct {
	ID       string
	Dir      string // the container directory
	RuncRoot string
	Runc     string
	Criu     string
	// Restore, when set, restores from CRIU images in this directory
	// instead of starting the container fresh.
	Restore string
	// Forward lists hostPorts to serve into the container's network
	// namespace (a pod's pause container), as portForward strings.
	Forward []string
	// TCPEstablished restores established TCP connections.
	TCPEstablished bool
	// Lazy restores memory lazily from the archive on fd 4 (see lazy.go).
	Lazy bool
	// Verify: the page images are verified during the restore, and the
	// tasks may run only on a good verdict (see verifygate.go).
	Verify bool
}

// Args renders the options as the shim's command line.
func (o ShimOptions) Args() []string {
	args := []string{"shim", "--id", o.ID, "--dir", o.Dir, "--runc-root", o.RuncRoot, "--runc", o.Runc, "--criu", o.Criu}
	if o.Restore != "" {
		args = append(args, "--restore", o.Restore)
	}
	for _, f := range o.Forward {
		args = append(args, "--forward", f)
	}
	if o.TCPEstablished {
		args = append(args, "--tcp-established")
	}
	if o.Lazy {
		args = append(args, "--lazy")
	}
	if o.Verify {
		args = append(args, "--verify")
	}
	return args
}

// shimStartTimeout bounds container start or restore.
const shimStartTimeout = 5 * time.Minute

// startShim starts the shim in its own session, so that it outlives the
// agent, and waits until it reports the container running.
func (r *Runtime) startShim(ctx context.Context, rec *record, restore *restoreInput, forward []string) error {
	dir := r.containerDir(rec.ID)
	opts := ShimOptions{ID: rec.ID, Dir: dir, RuncRoot: r.runcRoot(), Runc: r.cfg.Runc, Criu: r.cfg.Criu, Forward: forward}
	if restore != nil {
		opts.Restore = restore.imagesDir
		tcp, err := hasEstablishedTCP(restore.imagesDir)
		if err != nil {
			return fmt.Errorf("read CRIU images: %w", err)
		}
		opts.TCPEstablished = tcp
	}
	ready, readyW, err := os.Pipe()
	if err != nil {
		return err
	}
	defer ready.Close()
	shimLog, err := os.OpenFile(filepath.Join(dir, fileShimLog), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		readyW.Close()
		return err
	}
	defer shimLog.Close()
	cmd := exec.Command(r.cfg.Shim, opts.Args()...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = shimLog, shimLog
	cmd.ExtraFiles = []*os.File{readyW}
	if restore != nil && restore.lazy != nil {
		if err := restore.lazy.prepare(dir, &opts, cmd); err != nil {
			readyW.Close()
			return fmt.Errorf("prepare lazy restore of container %s: %w", rec.ID, err)
		}
		cmd.Args = append([]string{r.cfg.Shim}, opts.Args()...)
	}
	if restore != nil && restore.late != nil {
		if err := prepareVerifyGate(dir, rec.ID, r.cfg.Shim, restore.late, &opts); err != nil {
			readyW.Close()
			return fmt.Errorf("prepare verified restore of container %s: %w", rec.ID, err)
		}
		cmd.Args = append([]string{r.cfg.Shim}, opts.Args()...)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		readyW.Close()
		return fmt.Errorf("start shim for container %s: %w", rec.ID, err)
	}
	readyW.Close()
	// The shim outlives us; reap it in the background if it exits while we run.
	go cmd.Wait()

	type answer struct {
		msg string
		err error
	}
	done := make(chan answer, 1)
	go func() {
		b, err := io.ReadAll(io.LimitReader(ready, 64<<10))
		done <- answer{strings.TrimSpace(string(b)), err}
	}()
	select {
	case a := <-done:
		if a.err != nil {
			return fmt.Errorf("start container %s: read shim status: %w", rec.ID, a.err)
		}
		if !strings.HasPrefix(a.msg, "ok") {
			if a.msg == "" {
				a.msg = "shim exited without a status; see " + filepath.Join(dir, fileShimLog)
			}
			return fmt.Errorf("start container %s: %s", rec.ID, a.msg)
		}
		return nil
	case <-ctx.Done():
		cmd.Process.Kill()
		return fmt.Errorf("start container %s: %w", rec.ID, ctx.Err())
	case <-time.After(shimStartTimeout):
		cmd.Process.Kill()
		return fmt.Errorf("start container %s: shim did not report within %s", rec.ID, shimStartTimeout)
	}
}

// RunShim is the body of `ckpt shim`: it starts (or restores) the container
// with its stdio on pipes it holds, writes the container log in the CRI
// format, reports readiness on fd 3, and waits for the container to exit.
func RunShim(o ShimOptions) error {
	signal.Ignore(syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGPIPE)
	// fd 3 is the readiness pipe; keep it out of runc and the container.
	unix.CloseOnExec(3)
	report := os.NewFile(3, "ready")
	fail := func(err error) error {
		// Recorded as a failed start, as containerd records one (the
		// kubelet shows StartError, 128), for an agent that was not
		// there to hear the report.
		writeJSONAtomic(filepath.Join(o.Dir, fileExit), exitStatus{Code: startErrorCode, Reason: reasonStartError, FinishedAt: time.Now().UTC()})
		if report != nil {
			fmt.Fprintf(report, "error: %v\n", err)
			report.Close()
		}
		return err
	}
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fail(fmt.Errorf("become subreaper: %w", err))
	}
	os.WriteFile(filepath.Join(o.Dir, fileShimPid), []byte(strconv.Itoa(os.Getpid())), 0o600)

	logFile, err := os.OpenFile(filepath.Join(o.Dir, fileLog), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fail(err)
	}
	defer logFile.Close()
	pio, err := gorunc.NewPipeIO(0, 0)
	if err != nil {
		return fail(fmt.Errorf("create stdio pipes: %w", err))
	}
	runcLog := filepath.Join(o.Dir, "runc.log")
	rc := &gorunc.Runc{Command: o.Runc, Root: o.RuncRoot, Criu: o.Criu, Log: runcLog, LogFormat: gorunc.JSON}
	pidFile := filepath.Join(o.Dir, fileInitPid)
	bundle := filepath.Join(o.Dir, dirBundle)
	ctx := context.Background()
	var lazy *lazyShim
	if o.Restore != "" {
		if o.Lazy {
			if lazy, err = startLazy(o, rc); err != nil {
				return fail(fmt.Errorf("lazy restore: %w", err))
			}
			lazy.before()
		}
		restored := make(chan struct{})
		if lazy != nil {
			go lazy.watchStuckRestore(restored)
		}
		_, err = rc.Restore(ctx, o.ID, bundle, &gorunc.RestoreOpts{
			CheckpointOpts: gorunc.CheckpointOpts{ImagePath: o.Restore, WorkDir: filepath.Join(o.Dir, "restore-work"), FileLocks: true, AllowOpenTCP: o.TCPEstablished, LazyPages: o.Lazy},
			IO:             pio, Detach: true, PidFile: pidFile,
		})
		close(restored)
		if err != nil && lazy != nil {
			if cause := lazy.abort(); cause != nil {
				err = fmt.Errorf("%v: %w", cause, err)
			}
		} else if lazy != nil {
			err = lazy.started()
		}
		if err == nil && o.Verify {
			if verr := verifiedBeforeResume(o.Dir); verr != nil {
				killCgroupProcs(o.ID)
				rc.Kill(ctx, o.ID, int(syscall.SIGKILL), &gorunc.KillOpts{All: true})
				if b, rerr := os.ReadFile(pidFile); rerr == nil {
					if pid, _ := strconv.Atoi(strings.TrimSpace(string(b))); pid > 0 {
						waitForPid(pid)
					}
				}
				rc.Delete(ctx, o.ID, &gorunc.DeleteOpts{Force: true})
				return fail(verr)
			}
		}
	} else {
		if err = rc.Create(ctx, o.ID, bundle, &gorunc.CreateOpts{IO: pio, PidFile: pidFile}); err == nil {
			err = rc.Start(ctx, o.ID)
		}
	}
	if err != nil {
		rc.Delete(ctx, o.ID, &gorunc.DeleteOpts{Force: true})
		if o.Restore != "" {
			// A CRIU that was killed leaves its mounts behind.
			unmountUnder(filepath.Join(o.Dir, "restore-work"))
			unmountUnder(filepath.Join(o.RuncRoot, o.ID))
		}
		restoreLog := filepath.Join(o.Dir, "restore-work", "restore.log")
		detail := dropStagingLogPath(lastRuncError(runcLog, restoreLog))
		kept := keepFailureLogs(filepath.Dir(filepath.Dir(o.Dir)), o.ID, "restore", runcLog, restoreLog)
		return fail(fmt.Errorf("%w: %s%s", err, detail, kept))
	}
	pidData, err := os.ReadFile(pidFile)
	if err != nil {
		return fail(err)
	}
	initPid, _ := strconv.Atoi(strings.TrimSpace(string(pidData)))
	fwd, err := startForwarding(initPid, o.Forward)
	if err != nil {
		rc.Kill(ctx, o.ID, int(syscall.SIGKILL), &gorunc.KillOpts{All: true})
		waitForPid(initPid)
		rc.Delete(ctx, o.ID, &gorunc.DeleteOpts{Force: true})
		return fail(err)
	}
	defer fwd.Close()

	var wg sync.WaitGroup
	lw := &criLogWriter{f: logFile}
	for stream, r := range map[string]io.Reader{"stdout": pio.Stdout(), "stderr": pio.Stderr()} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lw.copy(stream, r)
		}()
	}
	fmt.Fprintf(report, "ok %d\n", initPid)
	report.Close()
	report = nil

	status := waitForPid(initPid)
	if oomKilled(o.ID) {
		status.Reason = "OOMKilled"
	}
	writeJSONAtomic(filepath.Join(o.Dir, fileExit), status)
	pio.Stdin().Close()
	wg.Wait()
	rc.Delete(ctx, o.ID, &gorunc.DeleteOpts{Force: true})
	return nil
}

// waitForPid reaps children (we are their subreaper) until pid exits.
func waitForPid(pid int) exitStatus {
	for {
		var ws unix.WaitStatus
		got, err := unix.Wait4(-1, &ws, 0, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			// No children left: the process is gone without our seeing it.
			return exitStatus{Code: -1, FinishedAt: time.Now().UTC()}
		}
		if got != pid {
			reaped(got, ws)
			continue
		}
		st := exitStatus{Code: ws.ExitStatus(), FinishedAt: time.Now().UTC()}
		if ws.Signaled() {
			st.Code = 128 + int(ws.Signal())
			st.Signal = ws.Signal().String()
		}
		return st
	}
}

// lastRuncError returns the last error runc or CRIU logged.
func lastRuncError(runcLog, criuLog string) string {
	var msg string
	if f, err := os.Open(runcLog); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			var entry struct{ Level, Msg string }
			if json.Unmarshal(sc.Bytes(), &entry) == nil && (entry.Level == "error" || entry.Level == "fatal") {
				msg = entry.Msg
			}
		}
		f.Close()
	}
	if tail := tailErrors(criuLog, 3); tail != "" {
		msg += "; criu: " + tail
	}
	if msg == "" {
		return "no details logged"
	}
	return msg
}

// tailErrors returns the last n "Error" lines of a CRIU log.
func tailErrors(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	// CRIU marks errors "Error (file.c:line): ..."; other lines that
	// mention errors are often harmless warnings.
	var errs []string
	for _, line := range strings.Split(string(data), "\n") {
		// CRIU prints the RLIMIT_NOFILE line on every run where root lacks
		// CAP_SYS_RESOURCE; it causes nothing.
		if strings.Contains(line, "Error (") && !strings.Contains(line, "RLIMIT_NOFILE for self") {
			errs = append(errs, strings.TrimSpace(line))
		}
	}
	if len(errs) > n {
		errs = errs[len(errs)-n:]
	}
	return strings.Join(errs, " | ")
}

// criLogWriter writes lines in the CRI log format:
// "<RFC3339Nano> <stream> <F|P> <line>".
type criLogWriter struct {
	mu sync.Mutex
	f  *os.File
}

const maxLogLine = 16 << 10

func (w *criLogWriter) copy(stream string, r io.Reader) {
	br := bufio.NewReaderSize(r, maxLogLine)
	for {
		line, isPrefix, err := br.ReadLine()
		if len(line) > 0 || (err == nil && !isPrefix) {
			tag := "F"
			if isPrefix {
				tag = "P"
			}
			w.mu.Lock()
			fmt.Fprintf(w.f, "%s %s %s %s\n", time.Now().UTC().Format(time.RFC3339Nano), stream, tag, line)
			w.mu.Unlock()
		}
		if err != nil {
			return
		}
	}
}

// oomKilled reports whether the kernel's OOM killer killed a process of the
// container's memory cgroup (v1 memory.oom_control, v2 memory.events).
func oomKilled(id string) bool {
	cg := filepath.Join(defaultContainerCgroup, id)
	for _, p := range []string{
		filepath.Join("/sys/fs/cgroup/memory", cg, "memory.oom_control"),
		filepath.Join("/sys/fs/cgroup", cg, "memory.events"),
	} {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) == 2 && f[0] == "oom_kill" && f[1] != "0" {
				return true
			}
		}
	}
	return false
}
