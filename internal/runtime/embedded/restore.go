package embedded

import (
	"os"

	"github.com/ckpt-dev/ckpt/internal/archive"
)

// restoreInput is what a restore needs from an extracted archive.
type restoreInput struct {
	imagesDir   string // CRIU images
	rootfsDiff  string // path of rootfs-diff.tar, "" if none
	deletedJSON []byte // deleted.files
}

// prepareRootfs applies the archive's file system changes to a fresh rootfs.
func (in *restoreInput) prepareRootfs(rootfs string) error {
	if in.rootfsDiff != "" {
		f, err := os.Open(in.rootfsDiff)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := archive.ApplyRootfsDiff(rootfs, f, archive.DefaultLimits()); err != nil {
			return err
		}
	}
	if len(in.deletedJSON) > 0 {
		return archive.RemoveDeleted(rootfs, in.deletedJSON)
	}
	return nil
}
