package embedded

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/checkpoint-restore/go-criu/v8/crit"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
)

const tcpEstablishedState = 1 // TCP_ESTABLISHED

// maxFilesImage bounds files.img before it is decoded.
const maxFilesImage = 64 << 20

// hasEstablishedTCP reports whether CRIU's images hold an established TCP
// connection, which restore can only bring back with --tcp-established.
func hasEstablishedTCP(imagesDir string) (found bool, err error) {
	f, err := os.Open(filepath.Join(imagesDir, "files.img"))
	if os.IsNotExist(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() || st.Size() > maxFilesImage {
		return false, fmt.Errorf("files.img is not a regular file of at most %d bytes", maxFilesImage)
	}
	defer func() {
		if r := recover(); r != nil {
			found, err = false, fmt.Errorf("decode files.img: %v", r)
		}
	}()
	img, err := crit.New(f, nil, "", false, false).Decode(&fdinfo.FileEntry{})
	if err != nil {
		return false, fmt.Errorf("decode files.img: %w", err)
	}
	for _, e := range img.Entries {
		fe, ok := e.Message.(*fdinfo.FileEntry)
		if !ok {
			continue
		}
		if isk := fe.GetIsk(); isk != nil && isk.GetProto() == 6 && isk.GetState() == tcpEstablishedState {
			return true, nil
		}
	}
	return false, nil
}
