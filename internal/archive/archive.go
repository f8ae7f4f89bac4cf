// Package archive owns the checkpoint archive format: a tar stream laid out
// the way CRI-O writes it, so that checkpointctl reads it and CRI-O can
// restore it:
//
//	checkpoint/        CRIU images (AddDir)
//	config.dump        metadata.ContainerConfig as JSON (AddJSON)
//	spec.dump          the OCI runtime spec; its annotations name the container
//	rootfs-diff.tar    WriteRootfsDiff of the overlay upper dir
//	deleted.files      MarshalDeletedFiles of what WriteRootfsDiff returned
//	stats-dump, dump.log, container.log
//	checksums.sha256   written last by Writer.Close
//
// File names come from checkpointctl's lib (package metadata). The one
// addition is checksums.sha256: "<sha256 hex>  <member>" per regular file,
// sorted by name, exactly what `sha256sum -c` reads after `tar x`. Other
// readers ignore it.
//
// Writing is one streaming pass: each member is hashed while it is copied,
// the hash running on a second goroutine. Reading treats every archive as
// hostile: member names are validated, sizes and entry counts are bounded
// (Limits), and every file is created through os.Root without following
// symlinks. Archive files may be zstd-compressed and/or age-encrypted
// (NewEncodingWriter, Open); the content, not the name, says which.
package archive

import (
	"errors"
	"fmt"
	"strings"

	"github.com/ckpt-dev/ckpt/internal/safepath"
)

// ManifestFile is the integrity manifest, in sha256sum format, written last.
const ManifestFile = "checksums.sha256"

// maxNameLen bounds a member name (PATH_MAX).
const maxNameLen = 4096

// Rules an archive can break. Errors returned by this package wrap one of
// them inside an *Error that names the member, so errors.Is works.
var (
	ErrEscape    = errors.New("path escapes the root")
	ErrAbsolute  = errors.New("absolute path not allowed")
	ErrBadName   = errors.New("invalid name")
	ErrType      = errors.New("member type not allowed")
	ErrTooLarge  = errors.New("size exceeds the limit")
	ErrTooMany   = errors.New("too many entries")
	ErrChecksum  = errors.New("checksum mismatch")
	ErrUnlisted  = errors.New("not listed in " + ManifestFile)
	ErrMissing   = errors.New("listed in " + ManifestFile + " but absent from the archive")
	ErrSymlink   = errors.New("path goes through a symlink")
	ErrSetuid    = errors.New("setuid/setgid bit not allowed")
	ErrDuplicate = errors.New("duplicate member")
	ErrFormat    = errors.New("not a tar, zstd or age archive")
	// ErrNoIdentity: the archive is age-encrypted and no identity was given.
	ErrNoIdentity = errors.New("archive is encrypted and no age identity was given")
	// ErrWrongIdentity: none of the given identities opens the archive.
	ErrWrongIdentity = errors.New("none of the given age identities can decrypt the archive")
)

// escapeError says which root a path escapes; it matches ErrEscape.
type escapeError struct{ root string }

func (e escapeError) Error() string        { return "path escapes the " + e.root }
func (e escapeError) Is(target error) bool { return target == ErrEscape }

var (
	errEscapeArchive = escapeError{"archive root"}
	errEscapeRootfs  = escapeError{"container root"}
)

// Error names the member (or deleted path) and the rule it broke, e.g.
// `archive member "../etc/passwd": path escapes the archive root`.
type Error struct {
	What string // "archive member", "rootfs-diff member", "deleted file"
	Name string
	Err  error
}

func (e *Error) Error() string { return fmt.Sprintf("%s %q: %v", e.What, e.Name, e.Err) }
func (e *Error) Unwrap() error { return e.Err }

func memberErr(name string, err error) error {
	return &Error{What: "archive member", Name: name, Err: err}
}

// Limits bound what a reader accepts. A zero field takes its default.
type Limits struct {
	MaxMemberBytes int64 // largest declared size of one member
	MaxTotalBytes  int64 // sum of declared member sizes
	MaxEntries     int   // number of headers
}

// DefaultLimits fit checkpoints of containers with tens of GiB of memory.
func DefaultLimits() Limits {
	return Limits{
		MaxMemberBytes: 64 << 30,
		MaxTotalBytes:  256 << 30,
		MaxEntries:     1 << 20,
	}
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxMemberBytes <= 0 {
		l.MaxMemberBytes = d.MaxMemberBytes
	}
	if l.MaxTotalBytes <= 0 {
		l.MaxTotalBytes = d.MaxTotalBytes
	}
	if l.MaxEntries <= 0 {
		l.MaxEntries = d.MaxEntries
	}
	return l
}

// cleanName validates a member name and returns it in canonical form:
// relative, slash-separated, without "." components or a trailing slash.
// It refuses empty names, NUL bytes, absolute paths and any ".." component.
// The empty result with a nil error means the archive root itself ("./").
func cleanName(name string) (string, error) {
	switch {
	case name == "":
		return "", fmt.Errorf("%w: empty", ErrBadName)
	case strings.HasPrefix(name, "/"):
		return "", ErrAbsolute
	}
	rel, err := safepath.Rel(name)
	switch {
	case errors.Is(err, safepath.ErrEscape):
		return "", errEscapeArchive
	case err != nil:
		return "", fmt.Errorf("%w: %w", ErrBadName, err)
	case rel == ".":
		return "", nil
	}
	return rel, nil
}

// ErrRefusedImage: a CRIU image of the archive asks a restore for what it
// will not do (internal/inspect.ValidateCRIUImages).
var ErrRefusedImage = errors.New("refused by the CRIU image rules")
