package embedded

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	lib "github.com/checkpoint-restore/checkpointctl/lib"
	gorunc "github.com/containerd/go-runc"
	"golang.org/x/sys/unix"

	"github.com/ckpt-dev/ckpt/internal/archive"
	"github.com/ckpt-dev/ckpt/internal/pageserver"
	"github.com/ckpt-dev/ckpt/internal/runtime"
)

// Lazy restore. The agent extracts the small CRIU images and, for every
// page image, only the pages the restore itself reads (stacks, private file
// mappings: the pages CRIU does not mark lazy) into a sparse file at their
// offsets. The shim then runs `criu lazy-pages` beside `runc restore
// --lazy-pages`; the daemon fetches every other page from a page server
// inside the shim that reads them straight from the archive file, on fault
// and then in the background. The container runs as soon as its non-memory
// state is restored.
//
// Integrity: the archive's digest of each page image is checked by the shim
// in one background pass over the archive. The process runs on pages before
// that pass ends; if it fails (or a page cannot be served, or the daemon
// dies), the shim freezes and kills the container before the page server's
// connection closes, so the process never runs on with missing pages. Memory
// is declared complete only when the daemon has moved every page and the
// digests match.

const (
	fileLazy       = "lazy.json"   // what the shim needs to serve the pages
	fileMemory     = "memory.json" // the state of a lazy restore's memory
	dirLazyImages  = "lazy-images" // CRIU images of a lazy restore
	fileLazyLog    = "lazy-pages.log"
	lazyArchiveFd  = 4 // the archive file, for the shim
	lazyReadyLimit = time.Minute
	socketBuffer   = 8 << 20
	// linkEndGrace is how long a live restore's daemon may take to end
	// after the link to the source ended, before the container is stopped.
	linkEndGrace = 2 * time.Second
)

// lazyPages is one page image in the archive file.
type lazyPages struct {
	Offset int64  `json:"offset"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256,omitempty"` // "" when the archive has no checksums
}

// lazyConfig is fileLazy.
type lazyConfig struct {
	Pages map[uint32]lazyPages `json:"pages"` // by pages id
	// InPlace: the tasks resume only when memory is complete.
	InPlace bool `json:"inPlace,omitempty"`
	// Remote: the pages come from a live migration's source, through a
	// socket on fd 4 that the agent relays (live.go).
	Remote bool `json:"remote,omitempty"`
}

// lazyInput is what a lazy restore serves pages from.
type lazyInput struct {
	archive *os.File // the archive file; a live restore's page socket
	cfg     lazyConfig
	// inPlace holds the restored tasks stopped (CRIU's pre-resume hook)
	// until every page has moved and the digests match: a full restore
	// without the extraction copy.
	inPlace bool
}

// MemoryState is the memory of a lazily restored container.
type MemoryState struct {
	State    string    `json:"state"` // loading, complete, failed
	Error    string    `json:"error,omitempty"`
	Bytes    int64     `json:"bytes,omitempty"` // bytes of pages served
	Since    time.Time `json:"since"`
	Complete time.Time `json:"complete,omitempty"`
}

const (
	MemoryLoading  = "loading"
	MemoryComplete = "complete"
	MemoryFailed   = "failed"
)

// Memory returns the memory state of a lazily restored container, or nil
// for any other container.
func (r *Runtime) Memory(id string) *MemoryState {
	var m MemoryState
	if readJSON(filepath.Join(r.containerDir(id), fileMemory), &m) != nil {
		return nil
	}
	return &m
}

var pagesImage = regexp.MustCompile(`^` + lib.CheckpointDirectory + `/pages-([0-9]+)\.img$`)

// RestoreLazy restores a container from a plain (uncompressed,
// unencrypted) tar archive file, which must stay unchanged while the shim
// serves pages from it: the shim holds it open, so removing its name is
// harmless. Only small members are extracted.
func (r *Runtime) RestoreLazy(ctx context.Context, f *os.File, o RestoreOptions) (runtime.Container, error) {
	return r.restoreFromFile(ctx, f, o, false)
}

// RestoreInPlace restores a container fully from a plain tar archive file
// without extracting its page images: the pages move from the archive into
// the restored process through the lazy-pages machinery while its tasks are
// still stopped, and they resume only when every page is in and the
// digests match. A mismatch kills them before they ever run.
func (r *Runtime) RestoreInPlace(ctx context.Context, f *os.File, o RestoreOptions) (runtime.Container, error) {
	return r.restoreFromFile(ctx, f, o, true)
}

func (r *Runtime) restoreFromFile(ctx context.Context, f *os.File, o RestoreOptions, inPlace bool) (runtime.Container, error) {
	members, _, err := archive.Locate(f, archive.DefaultLimits())
	if err != nil {
		return runtime.Container{}, fmt.Errorf("restore %s lazily: %w", o.Source, err)
	}
	staging, err := os.MkdirTemp(r.cfg.StateDir, "restore-")
	if err != nil {
		return runtime.Container{}, fmt.Errorf("restore %s: %w", o.Source, err)
	}
	defer os.RemoveAll(staging)
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return runtime.Container{}, err
	}
	// The manifest (and its signature) are checked here with every small
	// member; the page images are hashed against it in the background.
	manifest, err := archive.Extract(f, staging, archive.DefaultLimits(), func(name string) bool { return !pagesImage.MatchString(name) })
	if err != nil {
		return runtime.Container{}, fmt.Errorf("restore %s: %w", o.Source, err)
	}
	if o.Verify != nil {
		if err := o.Verify(manifest); err != nil {
			return runtime.Container{}, fmt.Errorf("restore %s: %w", o.Source, err)
		}
	}
	in := &lazyInput{archive: f, cfg: lazyConfig{Pages: map[uint32]lazyPages{}}, inPlace: inPlace}
	for name, m := range members {
		sub := pagesImage.FindStringSubmatch(name)
		if sub == nil {
			continue
		}
		id, err := strconv.ParseUint(sub[1], 10, 32)
		if err != nil {
			return runtime.Container{}, fmt.Errorf("restore %s: member %s: %w", o.Source, name, runtime.ErrInvalid)
		}
		lp := lazyPages{Offset: m.Offset, Size: m.Size}
		if manifest != nil {
			if lp.SHA256 = manifest.Sums[name]; lp.SHA256 == "" {
				return runtime.Container{}, fmt.Errorf("restore %s: %s is not in %s: %w", o.Source, name, archive.ManifestFile, archive.ErrUnlisted)
			}
		}
		in.cfg.Pages[uint32(id)] = lp
	}
	imagesDir := filepath.Join(staging, lib.CheckpointDirectory)
	if err := writeEagerPages(imagesDir, f, in.cfg); err != nil {
		return runtime.Container{}, fmt.Errorf("restore %s lazily: %w", o.Source, err)
	}
	return r.restoreExtracted(ctx, staging, o, in)
}

// RestoreLazyFile is RestoreLazy as the checkpoint service calls it
// (runtime.LazyRestorer).
func (r *Runtime) RestoreLazyFile(ctx context.Context, f *os.File, target runtime.Ref, source string, check runtime.ArchiveCheck) (runtime.Container, error) {
	return r.RestoreLazy(ctx, f, restoreOptions(target, source, check))
}

// RestoreInPlaceFile is RestoreInPlace as the checkpoint service calls it
// (runtime.InPlaceRestorer).
func (r *Runtime) RestoreInPlaceFile(ctx context.Context, f *os.File, target runtime.Ref, source string, check runtime.ArchiveCheck) (runtime.Container, error) {
	return r.RestoreInPlace(ctx, f, restoreOptions(target, source, check))
}

var (
	_ runtime.LazyRestorer    = (*Runtime)(nil)
	_ runtime.InPlaceRestorer = (*Runtime)(nil)
)

func restoreOptions(target runtime.Ref, source string, check runtime.ArchiveCheck) RestoreOptions {
	return RestoreOptions{
		Namespace: target.Namespace, Pod: target.Pod, Name: target.Container, Source: source,
		Verify: func(m *archive.Manifest) error {
			if m == nil {
				return check(nil, nil)
			}
			return check(m.Raw, m.Signature)
		},
	}
}

// writeEagerPages writes, for every pagemap, a sparse page image that holds
// only the pages the restore reads itself, at their offsets.
func writeEagerPages(imagesDir string, archiveFile *os.File, cfg lazyConfig) error {
	matches, _ := filepath.Glob(filepath.Join(imagesDir, "pagemap-*.img"))
	done := map[uint32]bool{}
	for _, m := range matches {
		var pid uint64
		if _, err := fmt.Sscanf(filepath.Base(m), "pagemap-%d.img", &pid); err != nil {
			continue
		}
		pm, err := pageserver.ReadPagemap(m)
		if err != nil {
			return err
		}
		lp, ok := cfg.Pages[pm.PagesID]
		if !ok {
			return fmt.Errorf("pagemap-%d.img names pages-%d.img, which the archive lacks: %w", pid, pm.PagesID, runtime.ErrInvalid)
		}
		if pm.Bytes > lp.Size {
			return fmt.Errorf("pages-%d.img holds %d bytes, pagemap-%d.img needs %d: %w", pm.PagesID, lp.Size, pid, pm.Bytes, runtime.ErrInvalid)
		}
		if done[pm.PagesID] {
			return fmt.Errorf("two pagemaps use pages-%d.img: %w", pm.PagesID, runtime.ErrInvalid)
		}
		done[pm.PagesID] = true
		out, err := os.OpenFile(filepath.Join(imagesDir, fmt.Sprintf("pages-%d.img", pm.PagesID)), os.O_CREATE|os.O_EXCL|os.O_WRONLY|unix.O_NOFOLLOW, 0o600)
		if err != nil {
			return err
		}
		err = out.Truncate(lp.Size)
		for _, s := range pm.Eager() {
			if err != nil {
				break
			}
			_, err = io.Copy(io.NewOffsetWriter(out, s.Off), io.NewSectionReader(archiveFile, lp.Offset+s.Off, s.Len))
		}
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("write the eager pages of pages-%d.img: %w", pm.PagesID, err)
		}
	}
	return nil
}

// prepareLazy moves the images into the container directory (the staging
// directory goes when the restore returns; the daemon reads them later),
// and writes what the shim needs.
func (in *lazyInput) prepare(dir string, opts *ShimOptions, cmd *exec.Cmd) error {
	images := filepath.Join(dir, dirLazyImages)
	if err := os.Rename(opts.Restore, images); err != nil {
		return err
	}
	opts.Restore = images
	opts.Lazy = true
	in.cfg.InPlace = in.inPlace
	if err := writeJSONAtomic(filepath.Join(dir, fileLazy), in.cfg); err != nil {
		return err
	}
	if in.inPlace {
		// CRIU runs the hook once every page has been asked of the daemon
		// and before the tasks resume; it returns when memory is complete,
		// and kills the tasks if it failed.
		hook := filepath.Join(dir, "memory-hook.sh")
		script := "#!/bin/sh\n[ \"$CRTOOLS_SCRIPT_ACTION\" = pre-resume ] || exit 0\nexec " +
			shellQuote(cmd.Path) + " memory-wait --dir " + shellQuote(dir) + " --id " + shellQuote(filepath.Base(dir)) + "\n"
		if err := os.WriteFile(hook, []byte(script), 0o700); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, fileCriuConf), []byte("action-script "+hook+"\n"), 0o600); err != nil {
			return err
		}
	}
	if err := writeJSONAtomic(filepath.Join(dir, fileMemory), MemoryState{State: MemoryLoading, Since: time.Now().UTC()}); err != nil {
		return err
	}
	cmd.ExtraFiles = append(cmd.ExtraFiles, in.archive) // fd 4
	return nil
}

// lazyShim is the shim's side of a lazy restore.
type lazyShim struct {
	o       ShimOptions
	rc      *gorunc.Runc
	daemon  *exec.Cmd
	conn    net.Conn
	srv     *pageserver.Server
	cfg     lazyConfig
	archive *os.File

	// A live restore's link to the source, relayed to the daemon: link
	// is the daemon's side, linkDown tells when the source's side ended,
	// relayed counts what came from it.
	link     net.Conn
	linkDown chan error
	relayed  atomic.Int64

	once   sync.Once
	failed chan struct{}

	mu        sync.Mutex
	running   bool // runc restore returned
	hasFailed bool
	exited    chan daemonExit
}

// startLazy starts the page server and `criu lazy-pages`, and waits until
// the daemon listens for the restore.
func startLazy(o ShimOptions, rc *gorunc.Runc) (*lazyShim, error) {
	l := &lazyShim{o: o, rc: rc, failed: make(chan struct{}), exited: make(chan daemonExit, 2)}
	if err := readJSON(filepath.Join(o.Dir, fileLazy), &l.cfg); err != nil {
		return nil, err
	}
	unix.CloseOnExec(lazyArchiveFd)
	var theirs *os.File
	var err error
	if l.cfg.Remote {
		theirs, err = l.relayLink(os.NewFile(lazyArchiveFd, "pages"))
	} else {
		theirs, err = l.serveArchive()
	}
	if err != nil {
		return nil, err
	}
	defer theirs.Close()
	status, statusW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer status.Close()
	work := filepath.Join(o.Dir, "restore-work")
	if err := os.MkdirAll(work, 0o700); err != nil {
		statusW.Close()
		return nil, err
	}
	l.daemon = exec.Command(o.Criu, "lazy-pages", "--images-dir", o.Restore, "--work-dir", work,
		"--page-server", "--ps-socket", "3", "--status-fd", "4", "--log-file", fileLazyLog, "-v4")
	l.daemon.ExtraFiles = []*os.File{theirs, statusW}
	l.daemon.Dir = o.Dir
	if err := l.daemon.Start(); err != nil {
		statusW.Close()
		return nil, fmt.Errorf("start criu lazy-pages: %w", err)
	}
	statusW.Close()
	// The shim reaps every child once the container runs (waitForPid);
	// until then the daemon's end is seen without reaping it. Whichever
	// sees it first tells.
	watchChild(l.daemon.Process.Pid, l.exited)
	go func() {
		var info unix.Siginfo
		for {
			err := unix.Waitid(unix.P_PID, l.daemon.Process.Pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
			if err == unix.EINTR {
				continue
			}
			if err == nil {
				l.exited <- siginfoStatus(&info)
			}
			return // reaped by waitForPid, which tells through watchChild
		}
	}()
	ready := make(chan error, 1)
	go func() {
		var b [1]byte
		_, err := status.Read(b[:])
		ready <- err
	}()
	select {
	case err := <-ready:
		if err != nil {
			l.daemon.Process.Kill()
			return nil, fmt.Errorf("criu lazy-pages did not start: %v; %s", err, tailErrors(filepath.Join(work, fileLazyLog), 3))
		}
	case <-time.After(lazyReadyLimit):
		l.daemon.Process.Kill()
		return nil, fmt.Errorf("criu lazy-pages did not start within %s", lazyReadyLimit)
	}
	if l.conn != nil {
		go func() {
			if err := l.srv.Serve(l.conn); err != nil {
				l.fail(fmt.Errorf("page server: %w", err))
			}
			// The connection closes only after fail has stopped the container.
			l.conn.Close()
		}()
	}
	return l, nil
}

// serveArchive opens the page index of the archive on fd 4 and returns the
// daemon's end of a socket pair whose other end the shim serves from it.
func (l *lazyShim) serveArchive() (*os.File, error) {
	l.archive = os.NewFile(lazyArchiveFd, "archive")
	idx, err := pageserver.LoadIndex(l.o.Restore, func(id uint32) (io.ReaderAt, int64, error) {
		lp, ok := l.cfg.Pages[id]
		if !ok {
			return nil, 0, fmt.Errorf("no pages-%d.img in the archive", id)
		}
		return pageserver.FileSection{File: l.archive, Off: lp.Offset, Size: lp.Size}, lp.Size, nil
	})
	if err != nil {
		return nil, err
	}
	l.srv = &pageserver.Server{Index: idx}
	conn, theirs, err := daemonSocket()
	l.conn = conn
	return theirs, err
}

// daemonSocket returns the two ends of a socket pair that no other process
// can reach: the shim's, and the daemon's.
func daemonSocket() (ours net.Conn, theirs *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	// Large socket buffers: the daemon asks for up to 4 MiB at a time, and
	// the default (about 200 KiB) costs a context switch every 50 pages.
	for _, fd := range fds {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, socketBuffer)
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, socketBuffer)
	}
	f, theirs := os.NewFile(uintptr(fds[0]), "page-server"), os.NewFile(uintptr(fds[1]), "lazy-pages")
	defer f.Close()
	if ours, err = net.FileConn(f); err != nil {
		theirs.Close()
		return nil, nil, err
	}
	return ours, theirs, nil
}

// relayLink relays a live restore's link to the source (fd 4, a socket
// the agent relays on) to the daemon, and returns the daemon's end. The
// daemon never sees the link end: when it ends, the daemon goes only after
// run has stopped the container, since its end would let the kernel fill
// the missing pages with zeros under a running process.
func (l *lazyShim) relayLink(linkFile *os.File) (*os.File, error) {
	link, err := net.FileConn(linkFile)
	linkFile.Close()
	if err != nil {
		return nil, err
	}
	ours, theirs, err := daemonSocket()
	if err != nil {
		link.Close()
		return nil, err
	}
	l.link, l.linkDown = ours, make(chan error, 1)
	go func() { // the daemon's requests
		io.Copy(link, ours)
		if uc, ok := link.(*net.UnixConn); ok {
			uc.CloseWrite()
		}
	}()
	go func() { // the source's pages
		_, err := io.CopyBuffer(countingWriter{ours, &l.relayed}, link, make([]byte, 1<<20))
		if err == nil {
			err = io.EOF
		}
		l.linkDown <- err
	}()
	return theirs, nil
}

// countingWriter counts what it writes.
type countingWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n.Add(int64(n))
	return n, err
}

// abort ends a lazy restore whose runc restore failed; it returns why
// memory failed, when that is what failed the restore.
func (l *lazyShim) abort() error {
	l.once.Do(func() { close(l.failed) })
	l.daemon.Process.Kill()
	if l.conn != nil {
		l.conn.Close()
	}
	if l.link != nil {
		l.link.Close()
	}
	var m MemoryState
	if readJSON(filepath.Join(l.o.Dir, fileMemory), &m) == nil && m.State == MemoryFailed {
		return errors.New(m.Error)
	}
	return nil
}

// fail ends a lazy restore that cannot complete. While CRIU restores,
// nothing is killed: killing its tasks or the daemon under it can hang CRIU
// (runc restores with --restore-sibling, and CRIU's failure path then waits
// for tasks that are not its children). A failed page server closes the
// connection, which fails the restore by CRIU's own path; an in-place
// restore's pre-resume hook kills the tasks before they run.
// Once the container runs, it is frozen and killed before the daemon goes,
// so no thread runs on with pages the kernel would fill with zeros.
func (l *lazyShim) fail(err error) {
	l.once.Do(func() {
		m := l.memory()
		m.State, m.Error = MemoryFailed, "lazy restore stopped the container: "+err.Error()
		writeJSONAtomic(filepath.Join(l.o.Dir, fileMemory), m)
		fmt.Fprintf(os.Stderr, "lazy restore of %s failed: %v\n", l.o.ID, err)
		l.mu.Lock()
		l.hasFailed = true
		running := l.running
		l.mu.Unlock()
		if running {
			l.stop()
			l.daemon.Process.Kill()
		}
		if l.link != nil {
			l.link.Close()
		}
		close(l.failed)
	})
}

// before is called just before runc restore: an in-place restore starts
// verifying now, since its tasks wait for the result at pre-resume.
func (l *lazyShim) before() {
	if l.cfg.InPlace {
		go l.run()
	}
}

// started tells that runc restore returned and the container runs; a lazy
// restore starts verifying now (a failure during the restore would have had
// to leave the tasks to CRIU). If memory failed meanwhile, the container is
// stopped now.
func (l *lazyShim) started() error {
	l.mu.Lock()
	l.running = true
	failed := l.hasFailed
	l.mu.Unlock()
	if failed {
		l.stop()
		l.daemon.Process.Kill()
		var m MemoryState
		readJSON(filepath.Join(l.o.Dir, fileMemory), &m)
		return errors.New(m.Error)
	}
	if !l.cfg.InPlace {
		go l.run()
	}
	return nil
}

// stop freezes and kills the container. The signals go first, from the
// cgroup: with threads waiting in the kernel for pages the daemon holds
// back, `runc kill --all` was measured to take its whole 30 s timeout.
func (l *lazyShim) stop() {
	freezeCgroup(l.o.ID)
	killCgroupProcs(l.o.ID)
	thawCgroup(l.o.ID)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	l.rc.Kill(ctx, l.o.ID, int(syscall.SIGKILL), &gorunc.KillOpts{All: true})
}

func (l *lazyShim) memory() MemoryState {
	var m MemoryState
	readJSON(filepath.Join(l.o.Dir, fileMemory), &m)
	if l.srv != nil {
		m.Bytes = l.srv.Served.Load()
	} else {
		m.Bytes = l.relayed.Load()
	}
	return m
}

// run watches a running lazy restore until its memory is complete or it
// failed: it verifies the page images' digests, and waits for the daemon.
func (l *lazyShim) run() {
	verified := make(chan error, 1)
	go func() { verified <- l.verify() }()
	progress := time.NewTicker(time.Second)
	defer progress.Stop()
	var daemonDone, hashDone bool
	var linkErr error
	var linkGrace <-chan time.Time
	for !(daemonDone && hashDone) {
		select {
		case <-l.failed:
			return
		case linkErr = <-l.linkDown:
			// After the source's last answer the daemon ends at once;
			// until then it holds the faulting threads.
			linkGrace = time.After(linkEndGrace)
		case <-linkGrace:
			l.fail(fmt.Errorf("the link to the migration's source ended before every page moved: %v", linkErr))
			return
		case err := <-verified:
			if err != nil {
				l.fail(err)
				return
			}
			hashDone = true
		case ex := <-l.exited:
			if ex.code != 0 || ex.signal != "" {
				l.fail(fmt.Errorf("criu lazy-pages ended with %s before every page moved; %s", ex, tailErrors(filepath.Join(l.o.Dir, "restore-work", fileLazyLog), 3)))
				return
			}
			daemonDone = true
		case <-progress.C:
			writeJSONAtomic(filepath.Join(l.o.Dir, fileMemory), l.memory())
		}
	}
	m := l.memory()
	m.State, m.Complete = MemoryComplete, time.Now().UTC()
	writeJSONAtomic(filepath.Join(l.o.Dir, fileMemory), m)
	if l.archive != nil {
		l.archive.Close()
	}
	if l.link != nil {
		l.link.Close()
	}
	os.RemoveAll(l.o.Restore)
}

// verify hashes every page image in the archive and compares it with the
// archive's checksums.
func (l *lazyShim) verify() error {
	ids := make([]uint32, 0, len(l.cfg.Pages))
	for id := range l.cfg.Pages {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, id := range ids {
		lp := l.cfg.Pages[id]
		if lp.SHA256 == "" {
			continue
		}
		h := sha256.New()
		if _, err := io.Copy(h, io.NewSectionReader(l.archive, lp.Offset, lp.Size)); err != nil {
			return fmt.Errorf("verify pages-%d.img: %w", id, err)
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != lp.SHA256 {
			return fmt.Errorf("pages-%d.img: %w: %s says %s, content is %s", id, archive.ErrChecksum, archive.ManifestFile, lp.SHA256, got)
		}
	}
	return nil
}

// daemonExit is how the lazy-pages daemon ended.
type daemonExit struct {
	code   int
	signal string
}

func (d daemonExit) String() string {
	if d.signal != "" {
		return "signal " + d.signal
	}
	return fmt.Sprintf("exit status %d", d.code)
}

// siginfoStatus reads waitid's answer (siginfo_t: si_code at 8, si_status
// at 24 on Linux x86-64 and arm64).
func siginfoStatus(info *unix.Siginfo) daemonExit {
	b := (*[128]byte)(unsafe.Pointer(info))
	code := int32(binary.NativeEndian.Uint32(b[8:]))
	status := int(int32(binary.NativeEndian.Uint32(b[24:])))
	const cldExited = 1
	if code == cldExited {
		return daemonExit{code: status}
	}
	return daemonExit{code: -1, signal: syscall.Signal(status).String()}
}

// MemoryWait is the body of `ckpt memory-wait`, CRIU's pre-resume hook of
// an in-place restore: it returns nil once the container's memory is
// complete. If it failed, it sends SIGSTOP to the restored tasks (still
// held by CRIU): they stop on their way back to user space, before one
// instruction of theirs runs, and the shim kills them once runc restore
// returns. (SIGKILL here would hang CRIU: its failure path waits for tasks
// that runc, not CRIU, is the parent of.)
func MemoryWait(dir, id string, timeout time.Duration) error {
	return WaitState(dir, fileMemory, id, timeout)
}

// WaitState is MemoryWait on any MemoryState file in dir (memory.json of an
// in-place restore, verify.json of a verified one).
func WaitState(dir, file, id string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var m MemoryState
		if err := readJSON(filepath.Join(dir, filepath.Base(file)), &m); err == nil {
			switch m.State {
			case MemoryComplete:
				return nil
			case MemoryFailed:
				signalCgroupProcs(id, unix.SIGSTOP)
				return errors.New(m.Error)
			}
		}
		if time.Now().After(deadline) {
			signalCgroupProcs(id, unix.SIGSTOP)
			return fmt.Errorf("memory of container %s not complete after %s", id, timeout)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// killCgroupProcs SIGKILLs the container's processes: those in its cgroup
// and in another pid namespace than ours. During a restore CRIU sits in
// the cgroup too, in our namespace; it must live to clean up its mounts,
// and it fails the restore once its tasks die.
func killCgroupProcs(id string) { signalCgroupProcs(id, unix.SIGKILL) }

// signalCgroupProcs sends sig to the container's processes (see
// killCgroupProcs).
func signalCgroupProcs(id string, sig unix.Signal) { signalCgroup(id, sig, false) }

// signalCgroup sends sig to the processes of the container's cgroup that
// live in another pid namespace than ours (ours: false) or in ours (true),
// but never to this process or its ancestors.
func signalCgroup(id string, sig unix.Signal, ours bool) {
	self, _ := os.Readlink("/proc/self/ns/pid")
	skip := map[int]bool{}
	for pid := os.Getpid(); pid > 1 && !skip[pid]; pid = parentOf(pid) {
		skip[pid] = true
	}
	cg := filepath.Join(defaultContainerCgroup, id)
	for _, f := range []string{filepath.Join("/sys/fs/cgroup/freezer", cg, "cgroup.procs"), filepath.Join("/sys/fs/cgroup", cg, "cgroup.procs")} {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Fields(string(data)) {
			pid, err := strconv.Atoi(line)
			if err != nil || pid <= 1 || skip[pid] {
				continue
			}
			if ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid)); err == nil && (ns == self) == ours {
				unix.Kill(pid, sig)
			}
		}
	}
}

// freezeCgroup freezes a container's cgroup and waits (briefly) until it
// is frozen.
func freezeCgroup(id string) {
	cg := filepath.Join(defaultContainerCgroup, id)
	v1 := filepath.Join("/sys/fs/cgroup/freezer", cg, "freezer.state")
	v2 := filepath.Join("/sys/fs/cgroup", cg, "cgroup.freeze")
	if os.WriteFile(v1, []byte("FROZEN"), 0) != nil && os.WriteFile(v2, []byte("1"), 0) != nil {
		return
	}
	for i := 0; i < 200; i++ {
		if b, err := os.ReadFile(v1); err == nil && strings.TrimSpace(string(b)) == "FROZEN" {
			return
		}
		if b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", cg, "cgroup.events")); err == nil && strings.Contains(string(b), "frozen 1") {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// parentOf reads a process's parent from /proc/PID/stat (0 if unknown).
func parentOf(pid int) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// "pid (comm) state ppid ...": comm may hold spaces and parentheses.
	i := strings.LastIndexByte(string(data), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}

// The shim's reaper (waitForPid) reaps every child; watchChild asks it for
// the exit of one of them.
var (
	watchMu  sync.Mutex
	watching = map[int]chan daemonExit{}
)

func watchChild(pid int, ch chan daemonExit) {
	watchMu.Lock()
	watching[pid] = ch
	watchMu.Unlock()
}

// reaped tells the watcher of a reaped child how it ended.
func reaped(pid int, ws unix.WaitStatus) {
	watchMu.Lock()
	ch := watching[pid]
	delete(watching, pid)
	watchMu.Unlock()
	if ch == nil {
		return
	}
	ex := daemonExit{code: ws.ExitStatus()}
	if ws.Signaled() {
		ex = daemonExit{code: -1, signal: ws.Signal().String()}
	}
	select {
	case ch <- ex:
	default:
	}
}

// stuckRestoreAfter is how long a restore may go on after `criu lazy-pages`
// ended under it (a live migration's link broke during the restore).
const stuckRestoreAfter = 5 * time.Second

// watchStuckRestore ends a runc restore that CRIU hangs: when the daemon
// dies while CRIU restores, CRIU's failure path waits for the restored
// tasks, which are runc's children (--restore-sibling), not CRIU's, and
// runc waits for CRIU. Once the daemon has been gone for
// stuckRestoreAfter, the tasks and CRIU are killed, and runc restore
// returns its error. done closes when runc restore returned.
func (l *lazyShim) watchStuckRestore(done <-chan struct{}) {
	var goneSince time.Time
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		if !processGone(l.daemon.Process.Pid) {
			continue
		}
		if goneSince.IsZero() {
			goneSince = time.Now()
			continue
		}
		if time.Since(goneSince) < stuckRestoreAfter {
			continue
		}
		m := l.memory()
		m.State, m.Error = MemoryFailed, "lazy restore stopped the container: criu lazy-pages ended during the restore; "+
			tailErrors(filepath.Join(l.o.Dir, "restore-work", fileLazyLog), 3)
		writeJSONAtomic(filepath.Join(l.o.Dir, fileMemory), m)
		fmt.Fprintf(os.Stderr, "lazy restore of %s: criu lazy-pages ended during the restore; killing the stuck restore\n", l.o.ID)
		killCgroupProcs(l.o.ID)
		killOwnNamespaceProcs(l.o.ID) // CRIU, in the container's cgroup
		return
	}
}

// processGone reports whether pid has exited (a zombie counts).
func processGone(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := strings.LastIndexByte(string(data), ')')
	return i < 0 || i+2 >= len(data) || data[i+2] == 'Z'
}

// killOwnNamespaceProcs SIGKILLs the processes of the container's cgroup
// that live in our pid namespace (CRIU during a restore), but never this
// process or its ancestors.
func killOwnNamespaceProcs(id string) { signalCgroup(id, unix.SIGKILL, true) }

// unmountUnder detaches every mount below dir, deepest first: what a CRIU
// killed during a restore leaves (its cgroup yard, runc's criu-root).
func unmountUnder(dir string) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var points []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		p := unescapeMountPath(f[4])
		if p == dir || strings.HasPrefix(p, dir+"/") {
			points = append(points, p)
		}
	}
	sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
	for _, p := range points {
		unix.Unmount(p, unix.MNT_DETACH)
	}
}

// unescapeMountPath undoes mountinfo's octal escapes (\040 for a space).
func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
