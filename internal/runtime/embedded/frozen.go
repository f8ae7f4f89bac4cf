package embedded

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/ckpt-dev/ckpt/internal/archive"
)

// FrozenCapture names what CRIU's post-dump hook captures while the
// container is still frozen, so that memory and files are one cut.
type FrozenCapture struct {
	Upper   string // the container's overlay upper dir
	Diff    string // rootfs-diff.tar to write
	Deleted string // deleted.files to write
	Log     string // the container log
	LogSize string // file to write the log's size into
}

// Args renders the capture as the hidden `ckpt capture-frozen` command line.
func (c FrozenCapture) Args() []string {
	return []string{"capture-frozen", "--upper", c.Upper, "--diff", c.Diff, "--deleted", c.Deleted, "--log", c.Log, "--log-size", c.LogSize}
}

// hookScript is CRIU's action script: on post-dump (tasks still frozen) it
// runs the capture; a failed capture fails the dump, which thaws the container.
func (c FrozenCapture) hookScript(ckpt string) string {
	words := []string{shellQuote(ckpt)}
	for _, a := range c.Args() {
		words = append(words, shellQuote(a))
	}
	return "#!/bin/sh\n[ \"$CRTOOLS_SCRIPT_ACTION\" = post-dump ] || exit 0\nexec " + strings.Join(words, " ") + "\n"
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// RunFrozenCapture writes the rootfs diff, deleted.files and the log size.
func RunFrozenCapture(c FrozenCapture) error {
	diff, err := os.OpenFile(c.Diff, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	deleted, err := archive.WriteRootfsDiff(diff, c.Upper)
	if cerr := diff.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("rootfs diff of %s: %w", c.Upper, err)
	}
	if err := os.WriteFile(c.Deleted, archive.MarshalDeletedFiles(deleted), 0o600); err != nil {
		return err
	}
	size := int64(-1)
	if st, err := os.Stat(c.Log); err == nil {
		size = st.Size()
	}
	return os.WriteFile(c.LogSize, []byte(strconv.FormatInt(size, 10)), 0o600)
}

// frozenCapture lays out the capture's files in the dump's work dir.
func frozenCapture(containerDir, work string) FrozenCapture {
	return FrozenCapture{
		Upper:   filepath.Join(containerDir, dirUpper),
		Diff:    filepath.Join(work, "rootfs-diff.tar"),
		Deleted: filepath.Join(work, "deleted.files"),
		Log:     filepath.Join(containerDir, fileLog),
		LogSize: filepath.Join(work, "log-size"),
	}
}
