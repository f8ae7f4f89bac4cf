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
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ckpt-dev/ckpt/internal/archive"
)

const (
	// syncChunk: the hasher starts write-back every so many bytes, so that
	// the caller's final fsync has little left to do.
	syncChunk = 32 << 20
	spliceLen = 1 << 20
)

// onePassEnv set to 0 (or false) makes Checkpoint dump into a directory and
// archive it afterwards, as the other runtimes do (for comparison runs).
const onePassEnv = "CKPT_ONE_PASS"

func onePass() bool {
	on, err := strconv.ParseBool(os.Getenv(onePassEnv))
	return err != nil || on
}

// streamArchive writes a tar archive into a file at explicit offsets, so that
// one member at a time can be streamed into place before its size is known.
// Its methods mirror archive.Writer's (same layout, same manifest).
type streamArchive struct {
	f     *os.File
	mtime time.Time

	mu    sync.Mutex
	off   int64 // where the next member starts
	busy  bool  // a member is being streamed at off
	sums  map[string]string
	names map[string]bool
	err   error
}

func newStreamArchive(f *os.File) *streamArchive {
	return &streamArchive{
		f:     f,
		mtime: time.Now().Truncate(time.Second),
		sums:  make(map[string]string),
		names: make(map[string]bool),
	}
}

// header encodes a tar header; with slot set it must fit one block.
func (a *streamArchive) header(name string, typ byte, mode, size int64, slot bool) ([]byte, error) {
	hdr := &tar.Header{Typeflag: typ, Name: name, Mode: mode & 0o777, Size: size, ModTime: a.mtime, Format: tar.FormatPAX}
	if slot {
		hdr.Format = tar.FormatUSTAR
		if size >= 1<<33 { // beyond ustar's 11 octal digits: GNU base-256
			hdr.Format = tar.FormatGNU
		}
	}
	var b bytes.Buffer
	if err := tar.NewWriter(&b).WriteHeader(hdr); err != nil {
		return nil, fmt.Errorf("tar header for %q: %w", name, err)
	}
	if slot && b.Len() != blockSize {
		return nil, fmt.Errorf("tar header for %q takes %d bytes, not one block", name, b.Len())
	}
	return b.Bytes(), nil
}

const blockSize = 512

func pad(n int64) int64 { return (blockSize - n%blockSize) % blockSize }

// claim checks name and reserves the tail of the file for one member.
func (a *streamArchive) claim(name string) (int64, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case a.err != nil:
		return 0, a.err
	case a.busy:
		return 0, fmt.Errorf("archive member %q: another member is being written", name)
	case a.names[name]:
		return 0, fmt.Errorf("archive member %q: %w", name, archive.ErrDuplicate)
	}
	a.busy = true
	return a.off, nil
}

// release ends a claim: on success the member is recorded and the tail moves.
func (a *streamArchive) release(name string, end int64, sum []byte, err error) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.busy = false
	if err != nil {
		if a.err == nil {
			a.err = err
		}
		return err
	}
	a.off = end
	a.names[name] = true
	if sum != nil {
		a.sums[name] = hex.EncodeToString(sum)
	}
	return nil
}

// tryClaim is claim that gives up instead of failing when the tail is taken.
func (a *streamArchive) tryClaim(name string) (int64, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.err != nil || a.busy || a.names[name] {
		return 0, false
	}
	a.busy = true
	return a.off, true
}

func (a *streamArchive) addDirHeader(name string, mode int64) error {
	a.mu.Lock()
	exists := a.names[name]
	a.mu.Unlock()
	if exists {
		return nil // directories may be announced twice
	}
	start, err := a.claim(name)
	if err != nil {
		return err
	}
	hdr, err := a.header(name+"/", tar.TypeDir, mode, 0, false)
	if err == nil {
		_, err = a.f.WriteAt(hdr, start)
	}
	return a.release(name, start+int64(len(hdr)), nil, err)
}

// AddReader adds a regular file of exactly size bytes read from r, mode 0600.
func (a *streamArchive) AddReader(name string, size int64, r io.Reader) error {
	return a.addReg(name, 0o600, size, r)
}

// AddBytes adds a regular file with mode 0600.
func (a *streamArchive) AddBytes(name string, data []byte) error {
	return a.addReg(name, 0o600, int64(len(data)), bytes.NewReader(data))
}

// AddFile adds the regular file at path, keeping its permission bits.
func (a *streamArchive) AddFile(name, path string) error {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return fmt.Errorf("add %s to archive as %q: %w", path, name, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("add %s to archive as %q: %w", path, name, err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("add %s to archive as %q: not a regular file (%s)", path, name, fi.Mode().Type())
	}
	return a.addReg(name, int64(fi.Mode().Perm()), fi.Size(), f)
}

// AddDir adds dir's directories and regular files under name; members
// already in the archive (streamed images) must not be there twice.
func (a *streamArchive) AddDir(name, dir string) error {
	type entry struct{ name, path string }
	var dirs, files []entry
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		n := name
		if rel != "." {
			n = name + "/" + filepath.ToSlash(rel)
		}
		switch {
		case d.IsDir():
			dirs = append(dirs, entry{n, p})
		case d.Type().IsRegular():
			files = append(files, entry{n, p})
		default:
			return fmt.Errorf("%s: only directories and regular files can be archived, not %s", p, d.Type())
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("add directory %s to archive as %q: %w", dir, name, err)
	}
	for _, e := range dirs {
		if err := a.addDirHeader(e.name, 0o700); err != nil {
			return err
		}
	}
	for _, e := range files {
		if err := a.AddFile(e.name, e.path); err != nil {
			return err
		}
	}
	return nil
}

func (a *streamArchive) addReg(name string, mode, size int64, r io.Reader) error {
	if name == archive.ManifestFile {
		return fmt.Errorf("archive member %q: %w: reserved for the integrity manifest", name, archive.ErrBadName)
	}
	return a.addRegRaw(name, mode, size, r)
}

func (a *streamArchive) addRegRaw(name string, mode, size int64, r io.Reader) error {
	start, err := a.claim(name)
	if err != nil {
		return err
	}
	hdr, err := a.header(name, tar.TypeReg, mode, size, false)
	if err != nil {
		return a.release(name, 0, nil, err)
	}
	if _, err := a.f.WriteAt(hdr, start); err != nil {
		return a.release(name, 0, nil, err)
	}
	body := start + int64(len(hdr))
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(io.NewOffsetWriter(a.f, body), h), io.LimitReader(r, size))
	if err == nil && n != size {
		err = fmt.Errorf("archive member %q: source ended after %d of %d bytes", name, n, size)
	}
	if err == nil {
		_, err = a.f.WriteAt(make([]byte, pad(size)), body+size)
	}
	if err != nil {
		err = fmt.Errorf("write archive member %q: %w", name, err)
	}
	return a.release(name, body+size+pad(size), h.Sum(nil), err)
}

// stream writes the bytes arriving on the pipe fd as member name: the body
// goes to the file right behind a header slot, by splice where the kernel
// allows it; the hash trails behind, reading the page cache.
func (a *streamArchive) stream(name string, pipe *os.File) error {
	start, ok := a.tryClaim(name)
	if !ok {
		return errTailTaken
	}
	body := start + blockSize
	var written atomic.Int64
	progress := make(chan struct{}, 1)
	hashed := make(chan hashResult, 1)
	go func() { hashed <- a.hashBehind(body, &written, progress) }()

	n, err := spliceAll(pipe, a.f, body, &written, progress)
	written.Store(-1 - n) // negative: the writer has finished at n bytes
	select {
	case progress <- struct{}{}:
	default:
	}
	hr := <-hashed
	if err == nil {
		err = hr.err
	}
	if err == nil {
		var hdr []byte
		if hdr, err = a.header(name, tar.TypeReg, 0o600, n, true); err == nil {
			if _, err = a.f.WriteAt(hdr, start); err == nil {
				_, err = a.f.WriteAt(make([]byte, pad(n)), body+n)
			}
		}
	}
	if err != nil {
		err = fmt.Errorf("stream archive member %q: %w", name, err)
	}
	return a.release(name, body+n+pad(n), hr.sum, err)
}

// errTailTaken: another member is streaming; the caller spools instead.
var errTailTaken = errors.New("the archive tail is taken by another member")

type hashResult struct {
	sum []byte
	err error
}

// hashBehind hashes the file from off as the writer publishes progress
// (written >= 0: bytes so far; < 0: done at -1-written bytes), and starts
// write-back of what it has hashed.
func (a *streamArchive) hashBehind(off int64, written *atomic.Int64, progress <-chan struct{}) hashResult {
	// Hash at the lowest CPU priority: while the container is frozen, CRIU
	// and the splice get the CPUs first, and the hash catches up after. The
	// thread is never unlocked, so it ends with this goroutine and its nice
	// value goes nowhere else.
	goruntime.LockOSThread()
	unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), 19)
	h := sha256.New()
	buf := make([]byte, spliceLen)
	var done, synced int64
	for {
		w := written.Load()
		final := w < 0
		if final {
			w = -1 - w
		}
		for done < w {
			n := min(int64(len(buf)), w-done)
			if _, err := a.f.ReadAt(buf[:n], off+done); err != nil {
				return hashResult{err: fmt.Errorf("read back for hashing: %w", err)}
			}
			h.Write(buf[:n])
			done += n
			if done-synced >= syncChunk {
				unix.SyncFileRange(int(a.f.Fd()), off+synced, done-synced, unix.SYNC_FILE_RANGE_WRITE)
				synced = done
			}
		}
		if final {
			return hashResult{sum: h.Sum(nil)}
		}
		<-progress
	}
}

// spliceAll moves everything from the pipe into f at off, publishing the
// running total. It falls back to read and write where splice is refused.
func spliceAll(pipe, f *os.File, off int64, written *atomic.Int64, progress chan<- struct{}) (int64, error) {
	var total int64
	publish := func() {
		written.Store(total)
		select {
		case progress <- struct{}{}:
		default:
		}
	}
	pfd, ffd := int(pipe.Fd()), int(f.Fd())
	for {
		o := off + total
		n, err := unix.Splice(pfd, nil, ffd, &o, spliceLen, unix.SPLICE_F_MOVE|unix.SPLICE_F_MORE)
		if err == unix.EINTR || err == unix.EAGAIN {
			continue
		}
		if err == unix.EINVAL || err == unix.ENOSYS {
			break // no splice to this file: copy through user space
		}
		if err != nil {
			return total, fmt.Errorf("splice: %w", err)
		}
		if n == 0 {
			return total, nil
		}
		total += n
		publish()
	}
	buf := make([]byte, spliceLen)
	for {
		n, err := pipe.Read(buf)
		if n > 0 {
			if _, werr := f.WriteAt(buf[:n], off+total); werr != nil {
				return total, werr
			}
			total += int64(n)
			publish()
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// Close appends checksums.sha256 and the tar trailer; it leaves f open.
func (a *streamArchive) Close() error {
	a.mu.Lock()
	names := make([]string, 0, len(a.sums))
	for n := range a.sums {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		// sha256sum's format, as archive.Writer writes it.
		fmt.Fprintf(&b, "%s  %s\n", a.sums[n], n)
	}
	a.mu.Unlock()
	if err := a.addRegRaw(archive.ManifestFile, 0o600, int64(b.Len()), strings.NewReader(b.String())); err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.err != nil {
		return a.err
	}
	if _, err := a.f.WriteAt(make([]byte, 2*blockSize), a.off); err != nil {
		a.err = err
		return fmt.Errorf("write archive trailer: %w", err)
	}
	a.err = errors.New("archive writer is closed")
	return nil
}

// capture receives the pages images of one dump through FIFOs.
type capture struct {
	ar     *streamArchive
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
func startCapture(images, spool, prefix string, n int, ar *streamArchive) (*capture, error) {
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
	// A FIFO holds 64 KiB: CRIU would hand over the pages 16 at a time and
	// wait for us between each. Grow it to what the system allows.
	growPipe(pipe)
	member := c.prefix + "/" + name
	if err := c.ar.stream(member, pipe); !errors.Is(err, errTailTaken) {
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

// growPipe sets the pipe's buffer to fs.pipe-max-size (1 MiB by default).
func growPipe(pipe *os.File) {
	size := 1 << 20
	if b, err := os.ReadFile("/proc/sys/fs/pipe-max-size"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n > 0 {
			size = n
		}
	}
	unix.FcntlInt(pipe.Fd(), unix.F_SETPIPE_SZ, size)
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
