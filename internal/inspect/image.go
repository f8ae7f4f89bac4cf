package inspect

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/checkpoint-restore/go-criu/v8/crit"
	"github.com/checkpoint-restore/go-criu/v8/magic"
	"google.golang.org/protobuf/proto"
)

// maxImageBytes bounds one CRIU image (other than pages-*.img) that is
// extracted and decoded. Real ones are kilobytes; a process with a million
// mappings stays well below this.
const maxImageBytes = 64 << 20

// ErrCorrupt marks an archive whose content is inconsistent or malformed.
var ErrCorrupt = errors.New("corrupt checkpoint")

var criuMagic = magic.LoadMagic()

// checkFraming verifies that data is a CRIU image made of length-prefixed
// records that all fit, so that go-criu's decoder (which trusts the
// lengths) never allocates more than the file holds.
func checkFraming(data []byte) (string, error) {
	if len(data) < 4 {
		return "", fmt.Errorf("%w: image shorter than its magic", ErrCorrupt)
	}
	v := uint64(binary.LittleEndian.Uint32(data))
	off := 4
	if v == criuMagic.ByName["IMG_COMMON"] || v == criuMagic.ByName["IMG_SERVICE"] {
		if len(data) < 8 {
			return "", fmt.Errorf("%w: image shorter than its magic", ErrCorrupt)
		}
		v = uint64(binary.LittleEndian.Uint32(data[4:]))
		off = 8
	}
	name, ok := criuMagic.ByValue[v]
	if !ok {
		return "", fmt.Errorf("%w: unknown image magic 0x%x", ErrCorrupt, v)
	}
	for off < len(data) {
		if len(data)-off < 4 {
			return "", fmt.Errorf("%w: truncated record header at byte %d", ErrCorrupt, off)
		}
		n := int(binary.LittleEndian.Uint32(data[off:]))
		off += 4
		if n > len(data)-off {
			return "", fmt.Errorf("%w: record at byte %d claims %d bytes, %d left", ErrCorrupt, off-4, n, len(data)-off)
		}
		off += n
	}
	return name, nil
}

// decodeImage decodes the image file name in dir with go-criu's crit. It
// checks the size, the framing and the magic first, and turns a panic in
// the decoder into an error.
func decodeImage(d *imageDir, name, wantMagic string, entry proto.Message) (msgs []proto.Message, err error) {
	f, err := d.root.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() || st.Size() > maxImageBytes {
		return nil, fmt.Errorf("decode %s: %w: not a regular file of at most %d bytes", name, ErrCorrupt, maxImageBytes)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxImageBytes+1))
	if err != nil {
		return nil, fmt.Errorf("decode %s: %w", name, err)
	}
	got, err := checkFraming(data)
	if err != nil {
		return nil, fmt.Errorf("decode %s: %w", name, err)
	}
	if got != wantMagic {
		return nil, fmt.Errorf("decode %s: %w: magic %s, want %s", name, ErrCorrupt, got, wantMagic)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	defer func() {
		if r := recover(); r != nil {
			msgs, err = nil, fmt.Errorf("decode %s: %w: decoder panic: %v", name, ErrCorrupt, r)
		}
	}()
	img, err := crit.New(f, nil, "", false, false).Decode(entry)
	if err != nil {
		return nil, fmt.Errorf("decode %s: %w: %v", name, ErrCorrupt, err)
	}
	for _, e := range img.Entries {
		msgs = append(msgs, e.Message)
	}
	return msgs, nil
}

// imageDir is the private directory the small members were extracted to.
type imageDir struct {
	root *os.Root
}

func (d *imageDir) exists(name string) bool {
	st, err := d.root.Lstat(name)
	return err == nil && st.Mode().IsRegular()
}

// one decodes an image that must hold exactly one entry of type T.
func one[T proto.Message](d *imageDir, name, wantMagic string, entry T) (T, error) {
	var zero T
	msgs, err := decodeImage(d, name, wantMagic, entry)
	if err != nil {
		return zero, err
	}
	if len(msgs) == 0 {
		return zero, fmt.Errorf("decode %s: %w: no entry", name, ErrCorrupt)
	}
	m, ok := msgs[0].(T)
	if !ok {
		return zero, fmt.Errorf("decode %s: %w: unexpected entry type", name, ErrCorrupt)
	}
	return m, nil
}

// all decodes every entry of type T.
func all[T proto.Message](d *imageDir, name, wantMagic string, entry T) ([]T, error) {
	msgs, err := decodeImage(d, name, wantMagic, entry)
	if err != nil {
		return nil, err
	}
	out := make([]T, 0, len(msgs))
	for _, m := range msgs {
		t, ok := m.(T)
		if !ok {
			return nil, fmt.Errorf("decode %s: %w: unexpected entry type", name, ErrCorrupt)
		}
		out = append(out, t)
	}
	return out, nil
}
