package archive

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	goruntime "runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// syncChunk: the hasher starts write-back every so many bytes, so that
	// the caller's final fsync has little left to do.
	syncChunk = 32 << 20
	spliceLen = 1 << 20
)

// FileWriter writes a checkpoint archive into a file at explicit offsets, so
// that one member at a time can be streamed into place before its size is
// known (Stream), while the others are added as with Writer: same layout,
// same manifest. The embedded runtime uses it to write the memory pages once.
type FileWriter struct {
	f     *os.File
	mtime time.Time

	mu    sync.Mutex
	off   int64 // where the next member starts
	busy  bool  // a member is being streamed at off
	sums  map[string]string
	names map[string]bool
	err   error
}

// NewFileWriter returns a FileWriter that writes into f from its start.
func NewFileWriter(f *os.File) *FileWriter {
	return &FileWriter{
		f:     f,
		mtime: time.Now().Truncate(time.Second),
		sums:  make(map[string]string),
		names: make(map[string]bool),
	}
}

// header encodes a tar header; with slot set it must fit one block.
func (a *FileWriter) header(name string, typ byte, mode, size int64, slot bool) ([]byte, error) {
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
func (a *FileWriter) claim(name string) (int64, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case a.err != nil:
		return 0, a.err
	case a.busy:
		return 0, fmt.Errorf("archive member %q: another member is being written", name)
	case a.names[name]:
		return 0, fmt.Errorf("archive member %q: %w", name, ErrDuplicate)
	}
	a.busy = true
	return a.off, nil
}

// release ends a claim: on success the member is recorded and the tail moves.
func (a *FileWriter) release(name string, end int64, sum []byte, err error) error {
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
func (a *FileWriter) tryClaim(name string) (int64, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.err != nil || a.busy || a.names[name] {
		return 0, false
	}
	a.busy = true
	return a.off, true
}

func (a *FileWriter) AddDirEntry(name string, mode int64) error {
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
func (a *FileWriter) AddReader(name string, size int64, r io.Reader) error {
	return a.addReg(name, 0o600, size, r)
}

// AddBytes adds a regular file with mode 0600.
func (a *FileWriter) AddBytes(name string, data []byte) error {
	return a.addReg(name, 0o600, int64(len(data)), bytes.NewReader(data))
}

// AddFile adds the regular file at path, keeping its permission bits.
func (a *FileWriter) AddFile(name, path string) error {
	f, fi, err := openRegular(name, path)
	if err != nil {
		return err
	}
	defer f.Close()
	return a.addReg(name, int64(fi.Mode().Perm()), fi.Size(), f)
}

// AddDir adds dir's directories and regular files under name: the
// directories first, then the files; members already in the archive
// (streamed images) must not be there twice.
func (a *FileWriter) AddDir(name, dir string) error {
	entries, err := walkArchivable(name, dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.info.IsDir() {
			if err := a.AddDirEntry(e.name, 0o700); err != nil {
				return err
			}
		}
	}
	for _, e := range entries {
		if !e.info.IsDir() {
			if err := a.AddFile(e.name, e.path); err != nil {
				return err
			}
		}
	}
	return nil
}

func (a *FileWriter) addReg(name string, mode, size int64, r io.Reader) error {
	if name == ManifestFile || name == SignatureFile {
		return fmt.Errorf("archive member %q: %w: reserved for the integrity manifest", name, ErrBadName)
	}
	return a.addRegRaw(name, mode, size, r)
}

func (a *FileWriter) addRegRaw(name string, mode, size int64, r io.Reader) error {
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
func (a *FileWriter) Stream(name string, pipe *os.File) error {
	start, ok := a.tryClaim(name)
	if !ok {
		return ErrTailTaken
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

// ErrTailTaken: another member is streaming; the caller spools instead.
var ErrTailTaken = errors.New("the archive tail is taken by another member")

type hashResult struct {
	sum []byte
	err error
}

// hashBehind hashes the file from off as the writer publishes progress
// (written >= 0: bytes so far; < 0: done at -1-written bytes), and starts
// write-back of what it has hashed.
func (a *FileWriter) hashBehind(off int64, written *atomic.Int64, progress <-chan struct{}) hashResult {
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

// pipeToFile is splice(2) from a pipe into a file at *off.
var pipeToFile = func(pipe, file int, off *int64, n int) (int64, error) {
	return unix.Splice(pipe, nil, file, off, n, unix.SPLICE_F_MOVE|unix.SPLICE_F_MORE)
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
		n, err := pipeToFile(pfd, ffd, &o, spliceLen)
		if err == unix.EINTR || err == unix.EAGAIN {
			continue
		}
		if err == unix.EINVAL || err == unix.ENOSYS || err == unix.ENOMEM {
			// No splice to this file, or no memory for the kernel's
			// array of a large pipe's buffers: copy through user space.
			break
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
func (a *FileWriter) Close() error {
	a.mu.Lock()
	manifest := formatManifest(a.sums)
	a.mu.Unlock()
	if err := a.addRegRaw(ManifestFile, 0o600, int64(len(manifest)), strings.NewReader(manifest)); err != nil {
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
