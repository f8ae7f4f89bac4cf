package archive

import (
	"archive/tar"
	"fmt"
	"io"
)

// Member is where a regular member's content lies in a plain tar file.
type Member struct {
	Offset, Size int64
}

// Locate walks a plain tar file (seeking over member bodies, reading none)
// and returns where every regular member's content lies, with the archive's
// checksums.sha256 (nil without one). Names and limits are checked as by
// Walk. The offsets let a reader serve members in place, without copying
// them out.
func Locate(f io.ReadSeeker, lim Limits) (map[string]Member, *Manifest, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, nil, err
	}
	out := map[string]Member{}
	var manifest *Manifest
	err := Walk(f, lim, func(hdr *tar.Header, body io.Reader) error {
		if hdr.Typeflag != tar.TypeReg {
			return nil
		}
		if _, dup := out[hdr.Name]; dup {
			return memberErr(hdr.Name, ErrDuplicate)
		}
		// archive/tar reads headers block by block and seeks over bodies,
		// so the file is now at the start of this member's content.
		off, err := f.Seek(0, io.SeekCurrent)
		if err != nil {
			return err
		}
		out[hdr.Name] = Member{Offset: off, Size: hdr.Size}
		if hdr.Name == ManifestFile {
			m, err := readManifest(body, hdr.Size)
			if err != nil {
				return memberErr(hdr.Name, err)
			}
			manifest = m
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("locate members: %w", err)
	}
	return out, manifest, nil
}
