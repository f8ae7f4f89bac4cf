package embedded

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"time"

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
}

// lazyInput is what a lazy restore serves pages from.
type lazyInput struct {
	archive *os.File
	cfg     lazyConfig
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
	members, manifest, err := archive.Locate(f, archive.DefaultLimits())
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
	if _, err := archive.Extract(f, staging, archive.DefaultLimits(), func(name string) bool { return !pagesImage.MatchString(name) }); err != nil {
		return runtime.Container{}, fmt.Errorf("restore %s: %w", o.Source, err)
	}
	in := &lazyInput{archive: f, cfg: lazyConfig{Pages: map[uint32]lazyPages{}}}
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
	if err := writeJSONAtomic(filepath.Join(dir, fileLazy), in.cfg); err != nil {
		return err
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

	once   sync.Once
	failed chan struct{}
	exited chan unix.WaitStatus // the daemon's exit, from the shim's reaper
}

// startLazy starts the page server and `criu lazy-pages`, and waits until
// the daemon listens for the restore.
func startLazy(o ShimOptions, rc *gorunc.Runc) (*lazyShim, error) {
	l := &lazyShim{o: o, rc: rc, failed: make(chan struct{}), exited: make(chan unix.WaitStatus, 1)}
	if err := readJSON(filepath.Join(o.Dir, fileLazy), &l.cfg); err != nil {
		return nil, err
	}
	unix.CloseOnExec(lazyArchiveFd)
	l.archive = os.NewFile(lazyArchiveFd, "archive")
	idx, err := pageserver.LoadIndex(o.Restore, func(id uint32) (io.ReaderAt, int64, error) {
		lp, ok := l.cfg.Pages[id]
		if !ok {
			return nil, 0, fmt.Errorf("no pages-%d.img in the archive", id)
		}
		return io.NewSectionReader(l.archive, lp.Offset, lp.Size), lp.Size, nil
	})
	if err != nil {
		return nil, err
	}
	l.srv = &pageserver.Server{Index: idx}
	// The page server talks to the daemon over a socket pair that no other
	// process can reach.
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "page-server"), os.NewFile(uintptr(fds[1]), "lazy-pages")
	defer theirs.Close()
	if l.conn, err = net.FileConn(ours); err != nil {
		ours.Close()
		return nil, err
	}
	ours.Close()
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
	watchChild(l.daemon.Process.Pid, l.exited)
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
	go func() {
		if err := l.srv.Serve(l.conn); err != nil {
			l.fail(fmt.Errorf("page server: %w", err))
		}
		// The connection closes only after fail has stopped the container.
		l.conn.Close()
	}()
	return l, nil
}

// abort ends a lazy restore whose runc restore failed.
func (l *lazyShim) abort() {
	l.once.Do(func() { close(l.failed) })
	l.daemon.Process.Kill()
	l.conn.Close()
}

// fail stops the container for good: frozen first, so that no thread runs
// on once the daemon lets go, then killed and thawed so the kill lands.
func (l *lazyShim) fail(err error) {
	l.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		l.rc.Pause(ctx, l.o.ID)
		l.rc.Kill(ctx, l.o.ID, int(syscall.SIGKILL), &gorunc.KillOpts{All: true})
		thawCgroup(l.o.ID)
		l.rc.Resume(ctx, l.o.ID)
		l.daemon.Process.Kill()
		m := l.memory()
		m.State, m.Error = MemoryFailed, "lazy restore stopped the container: "+err.Error()
		writeJSONAtomic(filepath.Join(l.o.Dir, fileMemory), m)
		fmt.Fprintf(os.Stderr, "lazy restore of %s failed, container killed: %v\n", l.o.ID, err)
		close(l.failed)
	})
}

func (l *lazyShim) memory() MemoryState {
	var m MemoryState
	readJSON(filepath.Join(l.o.Dir, fileMemory), &m)
	m.Bytes = l.srv.Served.Load()
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
	for !(daemonDone && hashDone) {
		select {
		case <-l.failed:
			return
		case err := <-verified:
			if err != nil {
				l.fail(err)
				return
			}
			hashDone = true
		case ws := <-l.exited:
			if !ws.Exited() || ws.ExitStatus() != 0 {
				l.fail(fmt.Errorf("criu lazy-pages ended with %s before every page moved; %s", describeWait(ws), tailErrors(filepath.Join(l.o.Dir, "restore-work", fileLazyLog), 3)))
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
	l.archive.Close()
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

func describeWait(ws unix.WaitStatus) string {
	if ws.Signaled() {
		return "signal " + ws.Signal().String()
	}
	return fmt.Sprintf("exit status %d", ws.ExitStatus())
}

// The shim reaps every child (it is a subreaper); watchChild asks for the
// status of one of them.
var (
	watchMu  sync.Mutex
	watching = map[int]chan unix.WaitStatus{}
)

func watchChild(pid int, ch chan unix.WaitStatus) {
	watchMu.Lock()
	watching[pid] = ch
	watchMu.Unlock()
}

// reaped hands the status of a reaped child to its watcher.
func reaped(pid int, ws unix.WaitStatus) {
	watchMu.Lock()
	ch := watching[pid]
	delete(watching, pid)
	watchMu.Unlock()
	if ch != nil {
		ch <- ws
	}
}
