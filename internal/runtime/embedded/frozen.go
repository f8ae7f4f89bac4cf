package embedded

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"

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
	// Volumes are the emptyDirs the container mounts, "NAME=DIR": each is
	// written as volume-NAME.tar beside Diff.
	Volumes []string
}

// volumeTar is where the capture writes emptyDir name's content.
func (c FrozenCapture) volumeTar(name string) string {
	return filepath.Join(filepath.Dir(c.Diff), "volume-"+name+".tar")
}

// Args renders the capture as the hidden `ckpt capture-frozen` command line.
func (c FrozenCapture) Args() []string {
	args := []string{"capture-frozen", "--upper", c.Upper, "--diff", c.Diff, "--deleted", c.Deleted, "--log", c.Log, "--log-size", c.LogSize}
	for _, v := range c.Volumes {
		args = append(args, "--volume", v)
	}
	return args
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
	for _, v := range c.Volumes {
		name, dir, ok := strings.Cut(v, "=")
		if !ok || name == "" || strings.Contains(name, "/") {
			return fmt.Errorf("bad --volume %q: want NAME=DIR", v)
		}
		if err := captureVolume(dir, c.volumeTar(name)); err != nil {
			return fmt.Errorf("emptyDir %s: %w", name, err)
		}
	}
	size := int64(-1)
	if st, err := os.Stat(c.Log); err == nil {
		size = st.Size()
	}
	return os.WriteFile(c.LogSize, []byte(strconv.FormatInt(size, 10)), 0o600)
}

// frozenCapture lays out the capture's files in the dump's work dir.
// volumes are the emptyDirs to capture (name to host dir).
func frozenCapture(containerDir, work string, volumes map[string]string) FrozenCapture {
	c := FrozenCapture{
		Upper:   filepath.Join(containerDir, dirUpper),
		Diff:    filepath.Join(work, "rootfs-diff.tar"),
		Deleted: filepath.Join(work, "deleted.files"),
		Log:     filepath.Join(containerDir, fileLog),
		LogSize: filepath.Join(work, "log-size"),
	}
	for _, name := range slices.Sorted(maps.Keys(volumes)) {
		c.Volumes = append(c.Volumes, name+"="+volumes[name])
	}
	return c
}

// mountedEmptyDirs maps the emptyDirs container name of pod mounts to
// their host directories.
func mountedEmptyDirs(pod *corev1.Pod, podDir, name string) map[string]string {
	paths := volumePaths(pod, podDir)
	empty := map[string]bool{}
	for _, v := range pod.Spec.Volumes {
		empty[v.Name] = v.EmptyDir != nil
	}
	out := map[string]string{}
	for _, c := range pod.Spec.Containers {
		if c.Name != name {
			continue
		}
		for _, m := range c.VolumeMounts {
			if empty[m.Name] {
				out[m.Name] = paths[m.Name]
			}
		}
	}
	return out
}

// captureVolume writes an emptyDir's content as a tar in rootfs-diff
// format, which a restore applies through os.Root.
func captureVolume(dir, out string) error {
	f, err := os.OpenFile(out, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := archive.WriteRootfsDiff(f, dir); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
