package embedded

import (
	"errors"
	"fmt"
	"os"
	"path"

	lib "github.com/checkpoint-restore/checkpointctl/lib"

	"github.com/checkpoint-restore/go-criu/v8/crit"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
)

// rearmExpiredTimerfds fixes, in the CRIU images of dir, the periodic
// timerfds that had expired and not yet been read when they were dumped.
// The kernel re-arms such a timer only on the next read, so CRIU records
// it with no time left (it_value 0) and restores it disarmed: the process
// would wait for a tick that never comes. Such a timer is restored to
// expire one interval after the restore, as it would have re-armed itself.
// It reports how many timers it changed. The images are read and written
// inside root (the extracted archive), following no symlink out of it.
func rearmExpiredTimerfds(root *os.Root) (int, error) {
	name := path.Join(lib.CheckpointDirectory, "files.img")
	f, err := root.Open(name)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() || st.Size() > maxCriuImage {
		f.Close()
		return 0, fmt.Errorf("files.img: not a regular file of at most %d bytes", maxCriuImage)
	}
	img, err := func() (img *crit.CriuImage, err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("decode: %v", r)
			}
		}()
		return crit.New(f, nil, "", false, false).Decode(&fdinfo.FileEntry{})
	}()
	f.Close()
	if err != nil {
		return 0, fmt.Errorf("files.img: %w", err)
	}
	n := 0
	for _, e := range img.Entries {
		fe, ok := e.Message.(*fdinfo.FileEntry)
		if !ok || fe.GetTfd() == nil {
			continue
		}
		t := fe.GetTfd()
		periodic := t.GetIsec() != 0 || t.GetInsec() != 0
		if periodic && t.GetVsec() == 0 && t.GetVnsec() == 0 {
			sec, nsec := t.GetIsec(), t.GetInsec()
			t.Vsec, t.Vnsec = &sec, &nsec
			n++
		}
	}
	if n == 0 {
		return 0, nil
	}
	tmp := name + ".rearm"
	out, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return 0, err
	}
	defer root.Remove(tmp)
	if err := crit.New(nil, out, "", false, false).Encode(img); err != nil {
		out.Close()
		return 0, fmt.Errorf("files.img: encode: %w", err)
	}
	if err := out.Close(); err != nil {
		return 0, err
	}
	return n, root.Rename(tmp, name)
}
