package archive

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"time"
)

// copyBufSize is the chunk size for member bodies: large enough that
// syscalls and hashing calls are amortised over GiB-sized page images.
const copyBufSize = 1 << 20

// Writer streams a checkpoint archive in one pass. Every regular member is
// hashed while it is written; Close appends checksums.sha256.
// A Writer is not safe for concurrent use. After any error the stream is
// unusable and every later call returns that error.
type Writer struct {
	cw    *countingWriter
	tw    *tar.Writer
	now   time.Time
	sums  map[string]string // member name -> hex sha256
	names map[string]bool   // every name written, dirs included
	h     hash.Hash
	bufs  [2][]byte
	err   error
}

// NewWriter returns a Writer that writes a tar stream to w.
func NewWriter(w io.Writer) *Writer {
	cw := &countingWriter{w: w}
	return &Writer{
		cw:    cw,
		tw:    tar.NewWriter(cw),
		now:   time.Now().Truncate(time.Second),
		sums:  make(map[string]string),
		names: make(map[string]bool),
		h:     sha256.New(),
	}
}

// Written returns the number of bytes written to the destination so far.
func (w *Writer) Written() int64 { return w.cw.n }

// AddBytes adds a regular file with mode 0600.
func (w *Writer) AddBytes(name string, data []byte) error {
	return w.addReg(name, 0o600, int64(len(data)), bytes.NewReader(data))
}

// AddJSON adds v encoded as JSON with mode 0600, e.g. metadata.ConfigDumpFile
// with a *metadata.ContainerConfig, or metadata.SpecDumpFile with the spec.
func (w *Writer) AddJSON(name string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return memberErr(name, err)
	}
	return w.AddBytes(name, data)
}

// AddReader adds a regular file of exactly size bytes read from r, mode 0600.
func (w *Writer) AddReader(name string, size int64, r io.Reader) error {
	return w.addReg(name, 0o600, size, r)
}

// AddFile adds the regular file at path under name, keeping its permission
// bits. Symlinks and other types are refused.
func (w *Writer) AddFile(name, path string) error {
	f, fi, err := openRegular(name, path)
	if err != nil {
		return err
	}
	defer f.Close()
	return w.addReg(name, int64(fi.Mode().Perm()), fi.Size(), f)
}

// AddDir adds dir recursively under name: directories and regular files
// only (the shape of a CRIU image directory). Symlinks, devices, sockets and
// FIFOs are refused before anything of dir is written.
func (w *Writer) AddDir(name, dir string) error {
	if w.err != nil {
		return w.err
	}
	base, err := cleanName(name)
	if err != nil {
		return memberErr(name, err)
	}
	// Collect first so that a refused entry leaves the stream intact.
	entries, err := walkArchivable(base, dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.info.IsDir() {
			if e.name == "" {
				continue // the archive root itself
			}
			if err := w.addDirHeader(e.name, int64(e.info.Mode().Perm())); err != nil {
				return err
			}
			continue
		}
		if err := w.AddFile(e.name, e.path); err != nil {
			return err
		}
	}
	return nil
}

// Close writes checksums.sha256 and the tar trailer. It does not close the
// underlying writer.
func (w *Writer) Close() error {
	if w.err != nil {
		return w.err
	}
	manifest := formatManifest(w.sums)
	hdr := w.header(ManifestFile, tar.TypeReg, 0o600)
	hdr.Size = int64(len(manifest))
	if err := w.tw.WriteHeader(hdr); err != nil {
		return w.fail(fmt.Errorf("write archive manifest: %w", err))
	}
	if _, err := io.WriteString(w.tw, manifest); err != nil {
		return w.fail(fmt.Errorf("write archive manifest: %w", err))
	}
	if err := w.tw.Close(); err != nil {
		return w.fail(fmt.Errorf("close archive: %w", err))
	}
	w.err = errors.New("archive writer is closed")
	return nil
}

func (w *Writer) addDirHeader(name string, perm int64) error {
	if w.names[name] {
		return memberErr(name, ErrDuplicate)
	}
	if err := w.tw.WriteHeader(w.header(name+"/", tar.TypeDir, perm)); err != nil {
		return w.fail(fmt.Errorf("write archive member %q: %w", name, err))
	}
	w.names[name] = true
	return nil
}

func (w *Writer) addReg(name string, perm, size int64, r io.Reader) error {
	if w.err != nil {
		return w.err
	}
	n, err := cleanName(name)
	if err == nil && n == "" {
		err = fmt.Errorf("%w: names the archive root", ErrBadName)
	}
	if err == nil && (n == ManifestFile || n == SignatureFile) {
		err = fmt.Errorf("%w: reserved for the integrity manifest", ErrBadName)
	}
	if err == nil && w.names[n] {
		err = ErrDuplicate
	}
	if err == nil && size < 0 {
		err = fmt.Errorf("%w: negative size %d", ErrBadName, size)
	}
	if err != nil {
		return memberErr(name, err)
	}
	hdr := w.header(n, tar.TypeReg, perm)
	hdr.Size = size
	if err := w.tw.WriteHeader(hdr); err != nil {
		return w.fail(fmt.Errorf("write archive member %q: %w", n, err))
	}
	if w.bufs[0] == nil {
		w.bufs = [2][]byte{make([]byte, copyBufSize), make([]byte, copyBufSize)}
	}
	w.h.Reset()
	copied, err := hashCopy(w.tw, io.LimitReader(r, size), w.h, &w.bufs)
	if err == nil && copied != size {
		err = fmt.Errorf("source ended after %d of %d bytes", copied, size)
	}
	if err != nil {
		return w.fail(fmt.Errorf("write archive member %q: %w", n, err))
	}
	w.names[n] = true
	w.sums[n] = hex.EncodeToString(w.h.Sum(nil))
	return nil
}

func (w *Writer) header(name string, typ byte, perm int64) *tar.Header {
	return &tar.Header{
		Typeflag: typ,
		Name:     name,
		Mode:     perm & 0o777,
		ModTime:  w.now,
		Format:   tar.FormatPAX,
	}
}

// fail makes err sticky: a half-written member leaves the tar stream corrupt.
func (w *Writer) fail(err error) error {
	w.err = err
	return err
}

func joinName(base, rel string) string {
	if base == "" {
		return rel
	}
	return base + "/" + rel
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
