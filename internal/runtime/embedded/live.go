package embedded

// Live migration (post-copy). The source is dumped with `runc checkpoint
// --lazy-pages`: CRIU writes every image but the lazy memory pages, runs
// the post-dump hook (the rootfs diff, at the same cut), and then serves
// the pages from the still frozen tasks on a page server. The agent is that
// page server's only client: CRIU binds it to 127.0.0.1 (the criu.conf
// option `address`; runc's --page-server sets only the port in lazy mode),
// accepts one connection and closes the listener, and the agent checks in
// CRIU's log that the connection it accepted is the agent's. The agent
// relays the destination's requests to it (pageserver.Source).
//
// How the session ends decides the source: a clean close (the destination
// holds every page) and CRIU ends the tasks; anything else, and CRIU fails
// the dump and resumes them.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	lib "github.com/checkpoint-restore/checkpointctl/lib"

	"github.com/ckpt-dev/ckpt/internal/archive"
	"github.com/ckpt-dev/ckpt/internal/pageserver"
	"github.com/ckpt-dev/ckpt/internal/runtime"
)

// liveDump is a container frozen by a lazy dump, its pages waiting.
type liveDump struct {
	r         *Runtime
	id        string
	work      string
	criu      *net.TCPConn
	lazyBytes int64
	runc      chan error // runc checkpoint's end
	runcLog   string
	dumpLog   string
	stopped   bool // the record's Stopped before the migration
	served    bool
	// restorePipes puts fs.pipe-max-size back (raisePipeMaxSize).
	restorePipes func()
}

// CheckpointLive dumps c for live migration into archivePath: every image
// but the lazy pages, which the returned LiveDump serves. The container
// stays frozen until ServePages or Abort decides its fate; on any error
// here it runs on.
func (r *Runtime) CheckpointLive(ctx context.Context, c runtime.Container, archivePath string, opts runtime.CheckpointOptions) (runtime.LiveDump, error) {
	rec, err := r.loadRecord(c.ID)
	if err != nil {
		return nil, fmt.Errorf("checkpoint container %s live: %w", c.ID, runtime.ErrContainerNotFound)
	}
	dir := r.containerDir(rec.ID)
	work, err := os.MkdirTemp(filepath.Dir(archivePath), ".live-")
	if err != nil {
		return nil, fmt.Errorf("checkpoint container %s live: %w", rec.ID, err)
	}
	d := &liveDump{r: r, id: rec.ID, work: work, runc: make(chan error, 1), stopped: rec.Stopped}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(work)
		}
	}()
	images := filepath.Join(work, lib.CheckpointDirectory)
	criuWork := filepath.Join(work, "criu")
	none := filepath.Join(work, "none") // no stats or log yet: the dump goes on
	for _, p := range []string{images, criuWork, none} {
		if err := os.Mkdir(p, 0o700); err != nil {
			return nil, err
		}
	}
	d.runcLog, d.dumpLog = filepath.Join(criuWork, "runc.log"), filepath.Join(criuWork, lib.DumpLogFile)
	frozen := frozenCapture(dir, work, nil)
	hook := filepath.Join(work, "post-dump.sh")
	if err := os.WriteFile(hook, []byte(frozen.hookScript(r.cfg.Shim)), 0o700); err != nil {
		return nil, err
	}
	restorePipes, err := raisePipeMaxSize(filepath.Join(r.cfg.StateDir, filePipeMaxSize), 1<<22)
	if err != nil {
		return nil, fmt.Errorf("checkpoint container %s live: %w", rec.ID, err)
	}
	d.restorePipes = restorePipes
	defer func() {
		if !ok {
			restorePipes()
		}
	}()
	port, err := freeCRIUPort()
	if err != nil {
		return nil, fmt.Errorf("checkpoint container %s live: %w", rec.ID, err)
	}
	conf := "action-script " + hook + "\naddress 127.0.0.1\n"
	if err := os.WriteFile(filepath.Join(dir, fileCriuConf), []byte(conf), 0o600); err != nil {
		return nil, err
	}
	defer os.WriteFile(filepath.Join(dir, fileCriuConf), nil, 0o600)
	// CRIU ends the container when every page has moved: its pod's
	// restart policy must not bring it back here.
	if !rec.Stopped {
		rec.Stopped = true
		if err := writeJSONAtomic(filepath.Join(dir, fileMeta), rec); err != nil {
			return nil, err
		}
	}
	defer func() {
		if !ok {
			d.restoreRecord()
		}
	}()

	args := []string{"--root", r.runcRoot(), "--criu", r.cfg.Criu, "--log", d.runcLog, "--log-format", "json",
		"checkpoint", "--lazy-pages", "--page-server", "127.0.0.1:" + strconv.Itoa(port), "--status-fd", "3",
		"--file-locks", "--image-path", images, "--work-path", criuWork}
	if opts.TCPEstablished || rec.PodAnnotations[runtime.AnnotationTCPEstablished] == "true" {
		args = append(args, "--tcp-established")
	}
	args = append(args, rec.ID)
	status, statusW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer status.Close()
	cmd := exec.Command(r.cfg.Runc, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.ExtraFiles = []*os.File{statusW}
	if err := cmd.Start(); err != nil {
		statusW.Close()
		return nil, fmt.Errorf("checkpoint container %s live: start runc: %w", rec.ID, err)
	}
	statusW.Close()
	r.recordDump(rec.ID, cmd.Process.Pid)
	go func() {
		err := cmd.Wait()
		r.forgetDump(rec.ID)
		if err != nil {
			err = fmt.Errorf("runc checkpoint: %v: %s", err, strings.TrimSpace(out.String()))
		}
		d.runc <- err
	}()
	ready := make(chan error, 1)
	go func() {
		var b [1]byte
		_, err := status.Read(b[:])
		ready <- err
	}()
	kill := func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-d.runc
		r.thaw(rec.ID)
	}
	select {
	case err := <-ready:
		if err != nil {
			// runc ended without the page server ready: the dump failed,
			// and CRIU resumed the container.
			rerr := <-d.runc
			r.thaw(rec.ID)
			detail := lastRuncError(d.runcLog, d.dumpLog)
			kept := r.keepFailureLogs(rec.ID, "dump", d.runcLog, d.dumpLog)
			return nil, fmt.Errorf("checkpoint container %s live: %v: %s%s%s", rec.ID, rerr, detail, explainDumpFailure(detail), kept)
		}
	case <-ctx.Done():
		kill()
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, fmt.Errorf("checkpoint container %s live: dump stopped at the deadline: %w", rec.ID, runtime.ErrTimeout)
		}
		return nil, fmt.Errorf("checkpoint container %s live: %w", rec.ID, ctx.Err())
	}
	// The page server listens: be its client before anyone else can.
	conn, err := net.DialTCP("tcp", nil, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
	if err != nil {
		kill()
		return nil, fmt.Errorf("checkpoint container %s live: connect to CRIU's page server: %w", rec.ID, err)
	}
	// From now on, any end of this connection but a clean close after the
	// destination's must fail CRIU's session (a reset, not an EOF, which
	// CRIU takes for a finished session and ends the source): this agent
	// dying mid-migration leaves the source running.
	conn.SetLinger(0)
	d.criu = conn
	if err := d.checkPeer(conn.LocalAddr().(*net.TCPAddr).Port); err != nil {
		d.abortCRIU()
		return nil, fmt.Errorf("checkpoint container %s live: %w", rec.ID, err)
	}
	if d.lazyBytes, err = pageserver.LazyBytes(images); err != nil {
		d.abortCRIU()
		return nil, fmt.Errorf("checkpoint container %s live: %w", rec.ID, err)
	}
	if err := d.writeArchive(rec, archivePath, images, none, frozen); err != nil {
		d.abortCRIU()
		return nil, fmt.Errorf("checkpoint container %s live: write archive: %w", rec.ID, err)
	}
	ok = true
	return d, nil
}

func (d *liveDump) writeArchive(rec *record, path, images, none string, frozen FrozenCapture) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	marker, err := json.Marshal(map[string]any{"container": rec.ID, "dumped": time.Now().UTC()})
	if err != nil {
		return err
	}
	if err := d.r.writeArchive(&markedWriter{Writer: archive.NewWriter(f), marker: marker}, rec, images, none, frozen); err != nil {
		return err
	}
	return f.Close()
}

// LiveMember marks the archive of a live dump: it lacks the memory pages,
// so it restores only within its migration (RestoreLiveFile), and nothing
// else restores it.
const LiveMember = "live-migration.json"

// markedWriter adds LiveMember last.
type markedWriter struct {
	*archive.Writer
	marker []byte
}

func (w *markedWriter) Close() error {
	if err := w.AddBytes(LiveMember, w.marker); err != nil {
		return err
	}
	return w.Writer.Close()
}

var acceptedFrom = regexp.MustCompile(`Accepted connection from 127\.0\.0\.1:([0-9]+)`)

// checkPeer makes sure the page server's one connection is ours: CRIU logs
// the peer it accepted.
func (d *liveDump) checkPeer(port int) error {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		data, _ := os.ReadFile(d.dumpLog)
		if m := acceptedFrom.FindSubmatch(data); m != nil {
			if string(m[1]) != strconv.Itoa(port) {
				return fmt.Errorf("CRIU's page server accepted 127.0.0.1:%s, not this agent (127.0.0.1:%d): aborted", m[1], port)
			}
			d.waitTeePipe(deadline)
			return nil
		}
		time.Sleep(2 * time.Millisecond)
	}
	return errors.New("CRIU's page server did not log the connection it accepted")
}

// waitTeePipe waits until CRIU has sized the pipe it serves pages through
// (it logs it once it accepted us), and then puts fs.pipe-max-size back:
// it is raised for as short a time as can be.
func (d *liveDump) waitTeePipe(deadline time.Time) {
	for time.Now().Before(deadline) {
		if data, _ := os.ReadFile(d.dumpLog); strings.Contains(string(data), "Created tee pipe size") {
			break
		}
		time.Sleep(time.Millisecond)
	}
	d.restorePipes()
}

// abortCRIU fails the lazy dump (CRIU resumes the container) and waits for
// runc.
func (d *liveDump) abortCRIU() {
	src := &pageserver.Source{CRIU: d.criu}
	src.Relay(closedTunnel{}) // nothing sent: aborts
	<-d.runc
	d.restorePipes()
	d.r.thaw(d.id)
	d.restoreRecord()
	os.RemoveAll(d.work)
}

// restoreRecord gives the record back the Stopped it had: the container
// runs on here.
func (d *liveDump) restoreRecord() {
	if d.stopped {
		return
	}
	if rec, err := d.r.loadRecord(d.id); err == nil && rec.Stopped {
		rec.Stopped = false
		writeJSONAtomic(filepath.Join(d.r.containerDir(d.id), fileMeta), rec)
	}
}

// ServePages implements runtime.LiveDump.
func (d *liveDump) ServePages(tunnel runtime.LiveTunnel, first, idle time.Duration) error {
	d.served = true
	defer os.RemoveAll(d.work)
	src := &pageserver.Source{CRIU: d.criu, LazyBytes: d.lazyBytes, First: first, Idle: idle}
	outcome, err := src.Relay(tunnel)
	rerr := <-d.runc
	d.restorePipes()
	if outcome == pageserver.Aborted {
		d.r.thaw(d.id)
		d.restoreRecord()
		kept := d.r.keepFailureLogs(d.id, "live", d.runcLog, d.dumpLog)
		return fmt.Errorf("live migration of %s aborted after %d of %d bytes of pages, the source runs on: %w%s", d.id, src.Sent.Load(), d.lazyBytes, err, kept)
	}
	if rerr != nil {
		// CRIU failed after the session ended well: the destination runs,
		// so the source must not.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		serr := d.r.Stop(ctx, d.id)
		cancel()
		err = errors.Join(err, fmt.Errorf("the source ended after the destination had every page, but %v; stopped it: %v", rerr, serr))
	}
	if aerr := pageserver.Ack(tunnel); aerr != nil {
		err = errors.Join(err, fmt.Errorf("answer the destination's close: %w", aerr))
	}
	return err
}

// Abort implements runtime.LiveDump.
func (d *liveDump) Abort() {
	if !d.served {
		d.served = true
		d.abortCRIU()
	}
}

// closedTunnel is a tunnel that has ended.
type closedTunnel struct{}

func (closedTunnel) Read([]byte) (int, error)        { return 0, io.EOF }
func (closedTunnel) Write(b []byte) (int, error)     { return len(b), nil }
func (closedTunnel) SetReadDeadline(time.Time) error { return nil }

// criuTeePipe is the pipe CRIU's lazy page server reads pages through
// (criu/page-pipe.c: PIPE_MAX_SIZE pages, 819 with 4 KiB pages). Without
// CAP_SYS_RESOURCE, F_SETPIPE_SZ cannot pass fs.pipe-max-size, and CRIU
// ignores that failure and then fails the first request that does not
// start a page buffer ("page-pipe: splice: -1: Bad file descriptor").
const criuTeePipe = 819 << 12

// freeCRIUPort returns a TCP port free on 127.0.0.1 now.
func freeCRIUPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// RestoreLiveFile implements runtime.LiveRestorer: f is a live dump's
// archive (every image but the lazy pages), pages the socket to the
// source's pages.
func (r *Runtime) RestoreLiveFile(ctx context.Context, f, pages *os.File, target runtime.Ref, source string, check runtime.ArchiveCheck) (runtime.Container, error) {
	o := restoreOptions(target, source, check)
	staging, err := os.MkdirTemp(r.cfg.StateDir, "restore-")
	if err != nil {
		return runtime.Container{}, fmt.Errorf("restore %s: %w", o.Source, err)
	}
	defer os.RemoveAll(staging)
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return runtime.Container{}, err
	}
	manifest, err := archive.Extract(f, staging, archive.DefaultLimits(), nil)
	if err != nil {
		return runtime.Container{}, fmt.Errorf("restore %s: %w", o.Source, err)
	}
	if err := o.Verify(manifest); err != nil {
		return runtime.Container{}, fmt.Errorf("restore %s: %w", o.Source, err)
	}
	in := &lazyInput{archive: pages, cfg: lazyConfig{Remote: true}}
	return r.restoreExtracted(ctx, staging, o, in)
}

var (
	_ runtime.LiveCheckpointer = (*Runtime)(nil)
	_ runtime.LiveRestorer     = (*Runtime)(nil)
)
