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
	"sort"
	"strings"
	"time"
)

// SignatureFile follows checksums.sha256 and holds a signature over its
// exact bytes (an SSH signature, `ssh-keygen -Y sign` armored format; see
// internal/trust). Signing the manifest signs every member it lists.
const SignatureFile = ManifestFile + ".sig"

// maxSignatureBytes bounds checksums.sha256.sig; an armored ed25519 SSH
// signature is under 400 bytes.
const maxSignatureBytes = 64 << 10

// ErrMisplaced: a member stands where the format does not allow it (a
// signature before the manifest, a member after them).
var ErrMisplaced = errors.New("member out of place")

// Why a restore refuses an archive's signature (internal/trust decides).
var (
	ErrUnsigned     = errors.New("archive is not signed")
	ErrBadSignature = errors.New("archive signature is not valid")
	ErrUntrusted    = errors.New("archive is signed by an untrusted key")
)

// Signer signs the bytes of checksums.sha256.
type Signer interface {
	Sign(manifest []byte) ([]byte, error)
}

// formatManifest renders sums in sha256sum's format, sorted by name.
func formatManifest(sums map[string]string) string {
	names := make([]string, 0, len(sums))
	for n := range sums {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		// sha256sum's format: two spaces, or " *" for binary mode.
		fmt.Fprintf(&b, "%s  %s\n", sums[n], n)
	}
	return b.String()
}

// SealFile signs the plain tar archive at path in place: it appends
// checksums.sha256.sig right after checksums.sha256. An archive without a
// manifest (one the CRI runtime wrote) is hashed first and gets both. The
// archive's own members are never rewritten. Archives ckpt writes end with
// their manifest, so only the headers are read (the bodies are skipped by
// seeking); an archive without one is read once in full.
func SealFile(path string, s Signer, lim Limits) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("sign archive: %w", err)
	}
	defer f.Close()
	if err := seal(f, s, lim); err != nil {
		return fmt.Errorf("sign archive %s: %w", path, err)
	}
	return nil
}

func seal(f *os.File, s Signer, lim Limits) error {
	manifest, end, err := scanForSeal(f, lim, false)
	if err != nil {
		return err
	}
	var tail bytes.Buffer
	tw := tar.NewWriter(&tail)
	now := time.Now().Truncate(time.Second)
	add := func(name string, data []byte) error {
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o600, Size: int64(len(data)), ModTime: now, Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	if manifest == nil {
		// No manifest: hash every regular member (second pass) and add one.
		if manifest, end, err = scanForSeal(f, lim, true); err != nil {
			return err
		}
		if err := add(ManifestFile, manifest); err != nil {
			return err
		}
	}
	sig, err := s.Sign(manifest)
	if err != nil {
		return err
	}
	if err := add(SignatureFile, sig); err != nil {
		return err
	}
	if err := tw.Close(); err != nil { // the trailer
		return err
	}
	if _, err := f.WriteAt(tail.Bytes(), end); err != nil {
		return err
	}
	return f.Truncate(end + int64(tail.Len()))
}

// scanForSeal walks the archive in f and returns the bytes of its manifest
// (nil if it has none, or, with hash set, one made from the members) and
// the offset where the last member ends. A manifest must be the last
// member; an archive that is already signed is refused.
func scanForSeal(f *os.File, lim Limits, hash bool) ([]byte, int64, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, 0, err
	}
	var manifest []byte
	var end int64
	sums := map[string]string{}
	h := sha256.New()
	// tar.Reader skips bodies with Seek and reads headers exactly, so the
	// file offset after each header is where that member's body starts.
	err := Walk(f, lim, func(hdr *tar.Header, body io.Reader) error {
		pos, err := f.Seek(0, io.SeekCurrent)
		if err != nil {
			return err
		}
		switch {
		case hdr.Name == SignatureFile:
			return memberErr(hdr.Name, errors.New("the archive is already signed"))
		case manifest != nil:
			return memberErr(hdr.Name, fmt.Errorf("%w: after %s", ErrMisplaced, ManifestFile))
		case hdr.Name == ManifestFile:
			if manifest, err = readBounded(body, hdr.Size, maxManifestBytes); err != nil {
				return memberErr(hdr.Name, err)
			}
			if manifest == nil {
				manifest = []byte{}
			}
		case hash && hdr.Typeflag == tar.TypeReg:
			if _, dup := sums[hdr.Name]; dup {
				return memberErr(hdr.Name, ErrDuplicate)
			}
			h.Reset()
			if _, err := io.Copy(h, body); err != nil {
				return memberErr(hdr.Name, err)
			}
			sums[hdr.Name] = hex.EncodeToString(h.Sum(nil))
		}
		end = pos + hdr.Size + pad(hdr.Size)
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	if hash && manifest == nil {
		manifest = []byte(formatManifest(sums))
	}
	return manifest, end, nil
}

// readBounded reads a body of size bytes, refusing more than limit.
func readBounded(body io.Reader, size, limit int64) ([]byte, error) {
	if size > limit {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, size, limit)
	}
	return io.ReadAll(io.LimitReader(body, limit))
}

// Check reads a whole tar stream the way Extract does, writing nothing: it
// applies the same member rules, hashes every regular member and checks it
// against checksums.sha256. It returns the Manifest (with its raw bytes and
// signature) or nil when the archive has none. The CRI backend uses it on
// the archive it hands to the runtime.
func Check(r io.Reader, lim Limits) (*Manifest, error) {
	var c collector
	got := map[string]string{}
	h := sha256.New()
	bufs := [2][]byte{make([]byte, copyBufSize), make([]byte, copyBufSize)}
	err := Walk(r, lim, func(hdr *tar.Header, body io.Reader) error {
		if done, err := c.member(hdr, body); done || err != nil {
			return err
		}
		if hdr.Typeflag == tar.TypeDir {
			return nil
		}
		if _, dup := got[hdr.Name]; dup {
			return memberErr(hdr.Name, ErrDuplicate)
		}
		h.Reset()
		if _, err := hashCopy(io.Discard, body, h, &bufs); err != nil {
			return memberErr(hdr.Name, err)
		}
		got[hdr.Name] = hex.EncodeToString(h.Sum(nil))
		return nil
	})
	if err != nil {
		return nil, err
	}
	if c.manifest == nil {
		return nil, nil
	}
	if err := c.manifest.verify(got, nil); err != nil {
		return nil, err
	}
	return c.manifest, nil
}

// collector handles the members every checking reader treats alike: only
// directories and regular files, the manifest, and the signature right
// after it.
type collector struct {
	manifest *Manifest
	sigSeen  bool
}

// member consumes the manifest and the signature (done is then true) and
// refuses member types a checkpoint archive cannot hold.
func (c *collector) member(hdr *tar.Header, body io.Reader) (done bool, err error) {
	if hdr.Typeflag != tar.TypeReg && hdr.Typeflag != tar.TypeDir {
		return true, memberErr(hdr.Name, fmt.Errorf("%w: %s in a checkpoint archive (only directories and regular files)", ErrType, typeName(hdr.Typeflag)))
	}
	if c.sigSeen {
		return true, memberErr(hdr.Name, fmt.Errorf("%w: after %s", ErrMisplaced, SignatureFile))
	}
	switch {
	case hdr.Name == ManifestFile && hdr.Typeflag == tar.TypeReg:
		if c.manifest != nil {
			return true, memberErr(hdr.Name, ErrDuplicate)
		}
		m, err := readManifest(body, hdr.Size)
		if err != nil {
			return true, memberErr(hdr.Name, err)
		}
		c.manifest = m
		return true, nil
	case hdr.Name == SignatureFile && hdr.Typeflag == tar.TypeReg:
		if c.manifest == nil {
			return true, memberErr(hdr.Name, fmt.Errorf("%w: before %s", ErrMisplaced, ManifestFile))
		}
		sig, err := readBounded(body, hdr.Size, maxSignatureBytes)
		if err != nil {
			return true, memberErr(hdr.Name, err)
		}
		c.manifest.Signature = sig
		c.sigSeen = true
		return true, nil
	}
	return false, nil
}
