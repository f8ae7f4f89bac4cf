package archive

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"filippo.io/age"
	"filippo.io/age/armor"
	"github.com/klauspost/compress/zstd"
)

// Format is how an archive file is encoded; its value is the file suffix.
type Format string

const (
	FormatTar     Format = ".tar"
	FormatZstd    Format = ".tar.zst"
	FormatAge     Format = ".tar.age"
	FormatZstdAge Format = ".tar.zst.age"
)

var (
	zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}
	ageMagic  = []byte("age-encryption.org/")
	tarMagic  = []byte("ustar") // at offset 257, POSIX and GNU
)

// maxZstdWindow bounds the decoder's memory for hostile streams.
const maxZstdWindow = 128 << 20

// NewEncodingWriter returns a writer that compresses (zstd) and/or encrypts
// (age, to every recipient) what is written to it, and the file suffix that
// names the result. Close flushes the layers but does not close w.
func NewEncodingWriter(w io.Writer, compress bool, recipients []age.Recipient) (io.WriteCloser, string, error) {
	var closers []io.Closer // innermost first
	out := w
	suffix := FormatTar
	if len(recipients) > 0 {
		aw, err := age.Encrypt(w, recipients...)
		if err != nil {
			return nil, "", fmt.Errorf("encrypt archive: %w", err)
		}
		out = aw
		closers = append(closers, aw)
		suffix = FormatAge
	}
	if compress {
		zw, err := zstd.NewWriter(out, zstd.WithEncoderLevel(zstd.SpeedFastest))
		if err != nil {
			return nil, "", fmt.Errorf("compress archive: %w", err)
		}
		out = zw
		closers = append([]io.Closer{zw}, closers...)
		if suffix == FormatAge {
			suffix = FormatZstdAge
		} else {
			suffix = FormatZstd
		}
	}
	return &encodingWriter{Writer: out, closers: closers}, string(suffix), nil
}

type encodingWriter struct {
	io.Writer
	closers []io.Closer
}

func (e *encodingWriter) Close() error {
	var errs []error
	for _, c := range e.closers {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

// Open opens an archive file and returns its plain tar stream, decrypting
// (age, binary or armored) and decompressing (zstd) as the content says;
// the file name does not matter. An encrypted archive needs identities:
// without any the error matches ErrNoIdentity, with only wrong ones
// ErrWrongIdentity.
func Open(path string, identities []age.Identity) (io.ReadCloser, Format, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, "", fmt.Errorf("open archive %s: %w", path, err)
	}
	rc, format, err := decode(f, identities)
	if err != nil {
		f.Close()
		return nil, "", fmt.Errorf("open archive %s: %w", path, err)
	}
	return &multiCloser{Reader: rc, close: func() error {
		rc.Close()
		return f.Close()
	}}, format, nil
}

// decode sniffs r and unwraps age and zstd layers down to tar.
func decode(r io.Reader, identities []age.Identity) (io.ReadCloser, Format, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	head, _ := br.Peek(512)
	encrypted := false
	var in io.Reader = br
	if bytes.HasPrefix(head, ageMagic) || bytes.HasPrefix(head, []byte(armor.Header)) {
		if len(identities) == 0 {
			return nil, "", ErrNoIdentity
		}
		src := io.Reader(br)
		if bytes.HasPrefix(head, []byte(armor.Header)) {
			src = armor.NewReader(br)
		}
		dr, err := age.Decrypt(src, identities...)
		if err != nil {
			var noMatch *age.NoIdentityMatchError
			if errors.As(err, &noMatch) {
				return nil, "", fmt.Errorf("%w: %w", ErrWrongIdentity, err)
			}
			return nil, "", fmt.Errorf("decrypt: %w", err)
		}
		encrypted = true
		ibr := bufio.NewReaderSize(dr, 64<<10)
		head, _ = ibr.Peek(512)
		in = ibr
	}
	switch {
	case bytes.HasPrefix(head, zstdMagic):
		zr, err := zstd.NewReader(in, zstd.WithDecoderMaxWindow(maxZstdWindow), zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, "", fmt.Errorf("decompress: %w", err)
		}
		format := FormatZstd
		if encrypted {
			format = FormatZstdAge
		}
		return zr.IOReadCloser(), format, nil
	case len(head) >= 262 && bytes.Equal(head[257:262], tarMagic):
		format := FormatTar
		if encrypted {
			format = FormatAge
		}
		return io.NopCloser(in), format, nil
	}
	return nil, "", ErrFormat
}

type multiCloser struct {
	io.Reader
	close func() error
}

func (m *multiCloser) Close() error { return m.close() }

// ParseRecipientsFile reads age recipients, one per line ("age1..."),
// with age's own parser.
func ParseRecipientsFile(path string) ([]age.Recipient, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read age recipients %s: %w", path, err)
	}
	defer f.Close()
	rs, err := age.ParseRecipients(f)
	if err != nil {
		return nil, fmt.Errorf("read age recipients %s: %w", path, err)
	}
	return rs, nil
}

// ParseIdentitiesFile reads age identities ("AGE-SECRET-KEY-1...") with
// age's own parser.
func ParseIdentitiesFile(path string) ([]age.Identity, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read age identities %s: %w", path, err)
	}
	defer f.Close()
	ids, err := age.ParseIdentities(f)
	if err != nil {
		return nil, fmt.Errorf("read age identities %s: %w", path, err)
	}
	return ids, nil
}
