package archive

import (
	"archive/tar"
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// maxManifestBytes bounds checksums.sha256.
const maxManifestBytes = 16 << 20

// Manifest is a parsed checksums.sha256.
type Manifest struct {
	// Sums maps a member name to its lowercase hex SHA-256.
	Sums map[string]string
	// Raw is the manifest exactly as read: what the signature covers.
	Raw []byte
	// Signature is checksums.sha256.sig, nil when the archive is unsigned.
	Signature []byte
}

// Walk reads a tar stream and calls fn for every member, in order, with the
// header (its Name cleaned: relative, no "./", no trailing slash) and a
// reader of the body. It refuses, before calling fn:
//   - names that are empty, absolute, contain NUL or a ".." component,
//   - hard links whose target is such a name,
//   - types other than regular file, directory, symlink and hard link,
//   - a declared size above lim.MaxMemberBytes, a running total above
//     lim.MaxTotalBytes, more than lim.MaxEntries headers.
//
// The archive root itself ("./") is skipped, and so are PAX global headers.
func Walk(r io.Reader, lim Limits, fn func(hdr *tar.Header, body io.Reader) error) error {
	lim = lim.withDefaults()
	tr := tar.NewReader(r)
	var entries int
	var total int64
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read archive after %d members: %w", entries, err)
		}
		entries++
		if entries > lim.MaxEntries {
			return memberErr(hdr.Name, fmt.Errorf("%w: more than %d", ErrTooMany, lim.MaxEntries))
		}
		if hdr.Typeflag == tar.TypeXGlobalHeader {
			continue
		}
		name, err := cleanName(hdr.Name)
		if err != nil {
			return memberErr(hdr.Name, err)
		}
		switch hdr.Typeflag {
		case tar.TypeReg, tar.TypeDir, tar.TypeSymlink:
		case tar.TypeLink:
			target, err := cleanName(hdr.Linkname)
			if err == nil && target == "" {
				err = fmt.Errorf("%w: names the archive root", ErrBadName)
			}
			if err != nil {
				return memberErr(hdr.Name, fmt.Errorf("hard link target %q: %w", hdr.Linkname, err))
			}
			hdr.Linkname = target
		default:
			return memberErr(hdr.Name, fmt.Errorf("%w: %s", ErrType, typeName(hdr.Typeflag)))
		}
		if name == "" {
			if hdr.Typeflag == tar.TypeDir {
				continue
			}
			return memberErr(hdr.Name, fmt.Errorf("%w: names the archive root", ErrBadName))
		}
		if hdr.Size < 0 || hdr.Size > lim.MaxMemberBytes {
			return memberErr(hdr.Name, fmt.Errorf("%w: declares %d bytes, limit %d", ErrTooLarge, hdr.Size, lim.MaxMemberBytes))
		}
		total += hdr.Size
		if total > lim.MaxTotalBytes {
			return memberErr(hdr.Name, fmt.Errorf("%w: archive holds more than %d bytes", ErrTooLarge, lim.MaxTotalBytes))
		}
		hdr.Name = name
		if err := fn(hdr, tr); err != nil {
			return err
		}
	}
}

// Extract writes the members for which filter returns true (all when filter
// is nil) into dest, which is created (0700) if missing. Only directories and
// regular files are allowed in a checkpoint archive; anything else is an
// error. Every path is opened through os.Root, so nothing lands outside dest,
// and existing files are never overwritten or written through.
// Directories are created 0700; files 0600, or 0700 when the member was
// executable by its owner.
//
// When the archive has checksums.sha256, every extracted member must be
// listed there with a matching digest, and every listed member that the
// filter selects must be present; Extract then returns the parsed Manifest,
// with the signature that follows it (checksums.sha256.sig) if any. Neither
// is written to dest, and nothing may follow the signature. Whether the
// signature is good is the caller's question (internal/trust): the returned
// Manifest is exactly what the members were checked against. Without a
// manifest, Extract returns nil (archives of CRI-O, containerd and Podman).
// filter sees cleaned names ("checkpoint/pages-1.img"). Digests of members
// that the filter skips are not checked. On error, what this call created is
// removed.
func Extract(r io.Reader, dest string, lim Limits, filter func(name string) bool) (*Manifest, error) {
	m, _, err := extract(r, dest, lim, filter, nil)
	return m, err
}

// ExtractLate is Extract, except that the members late selects are written
// at copy speed and hashed afterwards, from the extracted files, while the
// caller goes on: the returned LateCheck says whether they match the
// manifest. Until it has said so, nothing may run from them. Everything
// else (the signature's manifest, the other members, limits) is checked
// before ExtractLate returns, as by Extract. Without a manifest the
// LateCheck is nil.
func ExtractLate(r io.Reader, dest string, lim Limits, filter, late func(name string) bool) (*Manifest, *LateCheck, error) {
	return extract(r, dest, lim, filter, late)
}

// LateCheck is the verification of the members ExtractLate hashes after it
// returned.
type LateCheck struct {
	done chan struct{}
	err  error
}

// Wait returns once every late member is hashed: nil if all match the
// manifest.
func (l *LateCheck) Wait() error {
	<-l.done
	return l.err
}

type lateMember struct {
	name string
	f    *os.File
}

// start hashes the late members' files in the background.
func (l *LateCheck) start(m *Manifest, members []lateMember) {
	go func() {
		defer close(l.done)
		defer closeLate(members)
		h := sha256.New()
		for _, lm := range members {
			h.Reset()
			if _, err := io.Copy(h, lm.f); err != nil {
				l.err = memberErr(lm.name, err)
				return
			}
			if got := hex.EncodeToString(h.Sum(nil)); got != m.Sums[lm.name] {
				l.err = memberErr(lm.name, fmt.Errorf("%w: %s says %s, content is %s", ErrChecksum, ManifestFile, m.Sums[lm.name], got))
				return
			}
		}
	}()
}

func closeLate(members []lateMember) {
	for _, lm := range members {
		lm.f.Close()
	}
}

func extract(r io.Reader, dest string, lim Limits, filter, late func(name string) bool) (_ *Manifest, _ *LateCheck, retErr error) {
	created, err := mkdirIfMissing(dest)
	if err != nil {
		return nil, nil, fmt.Errorf("extract archive into %s: %w", dest, err)
	}
	root, err := os.OpenRoot(dest)
	if err != nil {
		return nil, nil, fmt.Errorf("extract archive into %s: %w", dest, err)
	}
	defer root.Close()

	var made []string // top-level entries this call created, for cleanup
	seenTop := make(map[string]bool)
	defer func() {
		if retErr == nil {
			return
		}
		if created {
			os.RemoveAll(dest)
			return
		}
		for _, n := range made {
			root.RemoveAll(n)
		}
	}()
	noteTop := func(name string) error {
		top, _, _ := strings.Cut(name, "/")
		if seenTop[top] {
			return nil
		}
		seenTop[top] = true
		if _, err := root.Lstat(top); err == nil {
			return nil // already there before us
		} else if !errors.Is(err, os.ErrNotExist) {
			return err
		}
		made = append(made, top)
		return nil
	}

	got := make(map[string]string) // extracted member -> digest
	var lates []lateMember         // hashed after the walk
	defer func() {
		if retErr != nil {
			closeLate(lates)
		}
	}()
	var c collector
	h := sha256.New()
	bufs := [2][]byte{make([]byte, copyBufSize), make([]byte, copyBufSize)}
	err = Walk(r, lim, func(hdr *tar.Header, body io.Reader) error {
		if done, err := c.member(hdr, body); done || err != nil {
			return err
		}
		if filter != nil && !filter(hdr.Name) {
			return nil
		}
		if err := noteTop(hdr.Name); err != nil {
			return memberErr(hdr.Name, err)
		}
		if hdr.Typeflag == tar.TypeDir {
			if err := mkdirAllNoFollow(root, hdr.Name); err != nil {
				return memberErr(hdr.Name, err)
			}
			return nil
		}
		if _, dup := got[hdr.Name]; dup {
			return memberErr(hdr.Name, ErrDuplicate)
		}
		if err := mkdirAllNoFollow(root, dirName(hdr.Name)); err != nil {
			return memberErr(hdr.Name, err)
		}
		perm := os.FileMode(0o600)
		if hdr.Mode&0o100 != 0 {
			perm = 0o700
		}
		f, err := root.OpenFile(hdr.Name, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, perm)
		if err != nil {
			return memberErr(hdr.Name, err)
		}
		if late != nil && hdr.Typeflag == tar.TypeReg && late(hdr.Name) {
			_, err = io.CopyBuffer(f, body, bufs[0])
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return memberErr(hdr.Name, err)
			}
			rf, err := root.OpenFile(hdr.Name, os.O_RDONLY|unix.O_NOFOLLOW, 0)
			if err != nil {
				return memberErr(hdr.Name, err)
			}
			lates = append(lates, lateMember{hdr.Name, rf})
			got[hdr.Name] = "" // checked by the LateCheck
			return nil
		}
		h.Reset()
		_, err = hashCopy(f, body, h, &bufs)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return memberErr(hdr.Name, err)
		}
		got[hdr.Name] = hex.EncodeToString(h.Sum(nil))
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	if c.manifest == nil {
		closeLate(lates)
		lates = nil
		return nil, nil, nil
	}
	for _, lm := range lates {
		// Listed, or refused now; the content is the LateCheck's.
		if want, ok := c.manifest.Sums[lm.name]; ok {
			got[lm.name] = want
		}
	}
	if err := c.manifest.verify(got, filter); err != nil {
		return nil, nil, err
	}
	check := &LateCheck{done: make(chan struct{})}
	check.start(c.manifest, lates)
	return c.manifest, check, nil
}

// verify compares extracted digests with the manifest.
func (m *Manifest) verify(got map[string]string, filter func(string) bool) error {
	names := make([]string, 0, len(got))
	for n := range got {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		want, ok := m.Sums[n]
		if !ok {
			return memberErr(n, ErrUnlisted)
		}
		if want != got[n] {
			return memberErr(n, fmt.Errorf("%w: %s says %s, content is %s", ErrChecksum, ManifestFile, want, got[n]))
		}
	}
	listed := make([]string, 0, len(m.Sums))
	for n := range m.Sums {
		listed = append(listed, n)
	}
	sort.Strings(listed)
	for _, n := range listed {
		if _, ok := got[n]; !ok && (filter == nil || filter(n)) {
			return memberErr(n, ErrMissing)
		}
	}
	return nil
}

// ParseManifest parses checksums.sha256 content ("<hex>  <name>" lines).
func ParseManifest(data []byte) (*Manifest, error) {
	m := &Manifest{Sums: make(map[string]string)}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), maxNameLen+128)
	for line := 1; sc.Scan(); line++ {
		text := sc.Text()
		if text == "" {
			continue
		}
		sum, name, ok := strings.Cut(text, "  ")
		if !ok {
			// sha256sum's binary mode marks the name with "*".
			sum, name, ok = strings.Cut(text, " *")
		}
		if !ok || len(sum) != 64 || !isLowerHex(sum) {
			return nil, fmt.Errorf("line %d: not \"<sha256 hex>  <name>\"", line)
		}
		clean, err := cleanName(name)
		if err != nil {
			return nil, fmt.Errorf("line %d: name %q: %w", line, name, err)
		}
		if _, dup := m.Sums[clean]; dup {
			return nil, fmt.Errorf("line %d: name %q listed twice", line, name)
		}
		m.Sums[clean] = sum
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	m.Raw = data
	return m, nil
}

func readManifest(body io.Reader, size int64) (*Manifest, error) {
	data, err := readBounded(body, size, maxManifestBytes)
	if err != nil {
		return nil, err
	}
	return ParseManifest(data)
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func mkdirIfMissing(dir string) (bool, error) {
	err := os.Mkdir(dir, 0o700)
	if err == nil {
		return true, nil
	}
	if errors.Is(err, os.ErrExist) {
		fi, serr := os.Stat(dir)
		if serr != nil {
			return false, serr
		}
		if !fi.IsDir() {
			return false, fmt.Errorf("not a directory")
		}
		return false, nil
	}
	return false, err
}

// mkdirAllNoFollow creates name and its parents (0700) inside root. It
// refuses to descend through a symlink, even one that stays inside root.
func mkdirAllNoFollow(root *os.Root, name string) error {
	if name == "" {
		return nil
	}
	cur := ""
	for _, part := range strings.Split(name, "/") {
		cur = joinName(cur, part)
		fi, err := root.Lstat(cur)
		switch {
		case err == nil && fi.IsDir():
			continue
		case err == nil && fi.Mode()&os.ModeSymlink != 0:
			return fmt.Errorf("%w: %q is a symlink", ErrSymlink, cur)
		case err == nil:
			return fmt.Errorf("%q exists and is not a directory", cur)
		case !errors.Is(err, os.ErrNotExist):
			return err
		}
		if err := root.Mkdir(cur, 0o700); err != nil {
			return err
		}
	}
	return nil
}

func typeName(t byte) string {
	switch t {
	case tar.TypeReg:
		return "regular file"
	case tar.TypeDir:
		return "directory"
	case tar.TypeSymlink:
		return "symlink"
	case tar.TypeLink:
		return "hard link"
	case tar.TypeChar:
		return "character device"
	case tar.TypeBlock:
		return "block device"
	case tar.TypeFifo:
		return "FIFO"
	case tar.TypeGNUSparse:
		return "GNU sparse file"
	default:
		return fmt.Sprintf("type %q", t)
	}
}
