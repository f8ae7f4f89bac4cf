package archive

import (
	"io"

	"filippo.io/age"
)

// Decode is Open for a stream (an upload): it returns the plain tar stream
// of r, decrypting and decompressing as the content says.
func Decode(r io.Reader, identities []age.Identity) (io.ReadCloser, Format, error) {
	return decode(r, identities)
}
