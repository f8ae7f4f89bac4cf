package embedded

// One-pass archive creation.
//
// Dumping into a directory and then archiving it writes every memory page
// twice. Here the pages images (pages-<n>.img, nearly all of a checkpoint's
// bytes) are created as FIFOs in the images directory before the dump. CRIU
// opens them like files (O_CREAT without O_EXCL keeps an existing FIFO) and
// splices the pages into them; the capture splices them on into the archive
// file, behind a 512-byte tar header slot that is filled in once the size is
// known, and hashes them from the page cache on another goroutine while the
// dump goes on. The small images land in the directory as usual and are
// appended after the dump. The result is an ordinary tar with
// checksums.sha256, laid out like archive.Writer's.
//
// CRIU's own stream mode (--stream, the criu-image-streamer protocol) would
// do the same, but runc always talks to CRIU through `criu swrk`, and CRIU
// 4.1.1 aborts there: the images directory is opened with the swrk mode,
// which has no streamer socket name (BUG in socket_name_for_mode). So runc
// cannot use it, even through the org.criu.config file.

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/ckpt-dev/ckpt/internal/archive"
)

// canStream reports whether the pages can stream into the archive while
// CRIU dumps: that needs FIFOs in the images directory. Where they cannot
// be made, CRIU writes the pages as files, archived after the dump.
func canStream(images string) bool {
	probe := filepath.Join(images, ".fifo-probe")
	if err := unix.Mkfifo(probe, 0o600); err != nil {
		return false
	}
	return os.Remove(probe) == nil
}

// capture receives the pages images of one dump through FIFOs.
type capture struct {
	ar     *archive.FileWriter
	prefix string // archive directory of the images, e.g. "checkpoint"
	spool  string // directory for images that arrive while the tail is taken
	fifos  []string
	// keep holds the read end of every FIFO, opened before CRIU starts:
	// CRIU's open never waits for a reader, and if this process dies,
	// CRIU's writes fail with EPIPE and the dump ends instead of hanging
	// with the container frozen.
	keep []*os.File
	// watchdog unblocks CRIU if this process dies before CRIU has opened
	// every FIFO (see startWatchdog); dog is the write end of its stdin.
	watchdog *exec.Cmd
	dog      *os.File

	wg       sync.WaitGroup
	finished atomic.Bool // CRIU has exited; an empty FIFO now is an unused one

	mu      sync.Mutex
	spooled []*spooledImage
	err     error
}

type spooledImage struct {
	name string
	path string
}

// startCapture creates pages-1.img .. pages-n.img as FIFOs in images and
// starts a reader on each. It must run before CRIU starts. Pages images past
// n are written by CRIU as regular files and archived with the rest.
// pipeOrig is where raisePipeMaxSize keeps fs.pipe-max-size meanwhile.
func startCapture(images, spool, prefix string, n int, ar *archive.FileWriter, pipeOrig string) (*capture, error) {
	c := &capture{ar: ar, prefix: prefix, spool: spool}
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("pages-%d.img", i)
		path := filepath.Join(images, name)
		if err := unix.Mkfifo(path, 0o600); err != nil {
			c.finish()
			return nil, fmt.Errorf("create FIFO %s: %w", path, err)
		}
		c.fifos = append(c.fifos, path)
		k, err := os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK, 0)
		if err != nil {
			c.finish()
			return nil, fmt.Errorf("open FIFO %s: %w", path, err)
		}
		c.mu.Lock()
		c.keep = append(c.keep, k)
		c.mu.Unlock()
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			if err := c.receive(name, k); err != nil {
				c.fail(err)
				// No reader left: CRIU's next write fails and the dump ends.
				c.closeKeep(i - 1)
			}
		}()
	}
	// A FIFO holds 64 KiB: CRIU would hand over the pages 16 at a time and
	// wait for us between each. CRIU has not started yet.
	c.mu.Lock()
	growPipes(c.keep, pipeOrig)
	c.mu.Unlock()
	if err := c.startWatchdog(); err != nil {
		c.finish()
		return nil, err
	}
	return c, nil
}

// startWatchdog runs a shell that waits for EOF on its stdin, whose write
// end only this process holds. If this process dies mid-dump, a FIFO that
// CRIU has not opened yet would block CRIU's open forever, with the
// container frozen. The shell then opens each FIFO left (which releases a
// blocked open; CRIU's writes then fail with EPIPE) and removes it (later
// opens create regular files). It runs in its own process group, like runc.
func (c *capture) startWatchdog() error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	const script = `read _; for f; do if [ -p "$f" ]; then exec 3<>"$f"; rm -f "$f"; exec 3<&-; fi; done`
	cmd := exec.Command("/bin/sh", append([]string{"-c", script, "ckpt-fifo-watchdog"}, c.fifos...)...)
	cmd.Stdin = r
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		return fmt.Errorf("start FIFO watchdog: %w", err)
	}
	c.watchdog, c.dog = cmd, w
	return nil
}

func (c *capture) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.mu.Unlock()
}

// receive waits for CRIU to write to the FIFO and streams the image into
// the archive, or spools it to a file when another image holds the tail.
// pipe is the read end opened before the dump.
func (c *capture) receive(name string, pipe *os.File) error {
	fd := int(pipe.Fd()) // blocking from here on
	// Poll on a FIFO opened before any writer reports data, or a hang-up
	// once a writer has come and gone (CRIU's, or finish's for an unused
	// FIFO); it never reports the state before the first writer.
	for {
		_, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, -1)
		if err == nil {
			break
		}
		if err != unix.EINTR {
			return fmt.Errorf("poll FIFO %s: %w", name, err)
		}
	}
	if c.finished.Load() {
		if n, err := unix.IoctlGetInt(fd, unix.TIOCINQ); err == nil && n == 0 { // TIOCINQ is FIONREAD
			return nil // released by finish: CRIU never used it
		}
	}
	member := c.prefix + "/" + name
	if err := c.ar.Stream(member, pipe); !errors.Is(err, archive.ErrTailTaken) {
		return err
	}
	f, err := os.CreateTemp(c.spool, ".image-")
	if err != nil {
		return fmt.Errorf("spool %s: %w", name, err)
	}
	defer f.Close()
	c.mu.Lock()
	c.spooled = append(c.spooled, &spooledImage{name: member, path: f.Name()})
	c.mu.Unlock()
	if _, err := io.Copy(f, pipe); err != nil {
		return fmt.Errorf("spool %s: %w", name, err)
	}
	return f.Close()
}

// finish is called once CRIU has exited: it releases the readers of FIFOs
// that CRIU did not open, waits for the others, and removes the FIFOs.
func (c *capture) finish() error {
	if c.watchdog != nil {
		// We are alive: the watchdog has nothing to do.
		c.watchdog.Process.Kill()
		c.watchdog.Wait()
		c.dog.Close()
		c.watchdog = nil
	}
	c.finished.Store(true)
	for _, p := range c.fifos {
		// A writer that comes and goes makes the reader's poll return.
		if fd, err := unix.Open(p, unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0); err == nil {
			unix.Close(fd)
		}
	}
	c.wg.Wait()
	for i := range c.keep {
		c.closeKeep(i)
	}
	for _, p := range c.fifos {
		os.Remove(p)
	}
	c.fifos, c.keep = nil, nil
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *capture) closeKeep(i int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.keep[i] != nil {
		c.keep[i].Close()
		c.keep[i] = nil
	}
}

// flush appends the spooled images to the archive.
func (c *capture) flush() error {
	for _, img := range c.spooled {
		err := c.ar.AddFile(img.name, img.path)
		os.Remove(img.path)
		if err != nil {
			return err
		}
	}
	c.spooled = nil
	return nil
}

// fifoPipeSize is what a pages FIFO is grown to. CRIU waits for ckpt each
// time a FIFO is full, and each wait costs a wake-up of the agent's reader
// and then of CRIU, while the container is frozen: at 1 MiB (the default
// fs.pipe-max-size) a loaded 2-vCPU machine froze a 1 GiB container for
// 2.7-3.1 s against 0.9-1.2 s for runc checkpoint into a directory; at
// 16 MiB, 1.1-1.3 s (docs/benchmarks.md).
const fifoPipeSize = 16 << 20

// growPipes grows the FIFOs to fifoPipeSize. Without CAP_SYS_RESOURCE,
// F_SETPIPE_SZ may not pass fs.pipe-max-size, so that is raised for the
// few system calls this takes (raisePipeMaxSize, which a restarted agent
// undoes if this one died meanwhile); where it cannot be raised, the
// FIFOs get what the system allows.
func growPipes(pipes []*os.File, pipeOrig string) {
	grow := func(size int) bool {
		ok := true
		for _, p := range pipes {
			if cur, err := unix.FcntlInt(p.Fd(), unix.F_GETPIPE_SZ, 0); err == nil && cur >= size {
				continue
			}
			if _, err := unix.FcntlInt(p.Fd(), unix.F_SETPIPE_SZ, size); err != nil {
				ok = false
			}
		}
		return ok
	}
	if grow(fifoPipeSize) {
		return
	}
	if restore, err := raisePipeMaxSize(pipeOrig, fifoPipeSize); err == nil {
		ok := grow(fifoPipeSize)
		restore()
		if ok {
			return
		}
	}
	if b, err := os.ReadFile(pipeMaxSizePath); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n > 0 {
			grow(n)
		}
	}
}

// fifoCount is how many pages images to expect: one per process in the
// container's cgroup, plus a margin for shared memory and processes started
// before the freeze.
func fifoCount(cgroup string) int {
	const margin = 8
	for _, p := range []string{
		filepath.Join("/sys/fs/cgroup", cgroup, "cgroup.procs"),
		filepath.Join("/sys/fs/cgroup/pids", cgroup, "cgroup.procs"),
		filepath.Join("/sys/fs/cgroup/memory", cgroup, "cgroup.procs"),
	} {
		if b, err := os.ReadFile(p); err == nil {
			return len(strings.Fields(string(b))) + margin
		}
	}
	return margin
}
