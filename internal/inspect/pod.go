package inspect

import (
	"archive/tar"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/ckpt-dev/ckpt/internal/archive"
)

// PodInfo is what a pod archive says about its pod (pod.dump).
type PodInfo struct {
	Namespace  string   `json:"namespace"`
	Pod        string   `json:"pod"`
	Containers []string `json:"containers"`
	EmptyDirs  []string `json:"emptyDirs,omitempty"`
}

// OpenAll reads a container archive (one Checkpoint) or a pod archive (one
// Checkpoint per container, each with PodArchive set). A pod archive is
// read twice: once to check every member against its manifest, once to
// split it into per-container archives in a private temporary directory,
// each then read like a container archive.
func OpenAll(path string, opts Options) ([]*Checkpoint, error) {
	rc, _, err := archive.Open(path, opts.Identities)
	if err != nil {
		return nil, err
	}
	r, pod := archive.PeekPod(rc)
	if !pod {
		rc.Close()
		c, err := Open(path, opts)
		if err != nil {
			return nil, err
		}
		return []*Checkpoint{c}, nil
	}
	m, err := archive.Check(r, opts.Limits)
	rc.Close()
	if err != nil {
		return nil, fmt.Errorf("inspect %s: %w", path, err)
	}
	tmp, err := os.MkdirTemp(opts.TempDir, "ckpt-inspect-pod-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	info, files, err := splitPod(path, opts, tmp)
	if err != nil {
		return nil, fmt.Errorf("inspect %s: %w", path, err)
	}
	var out []*Checkpoint
	for _, name := range info.Containers {
		file, ok := files[name]
		if !ok {
			return nil, fmt.Errorf("inspect %s: pod.dump lists container %s, which the archive lacks", path, name)
		}
		o := opts
		o.Identities = nil
		c, err := Open(file, o)
		if err != nil {
			return nil, fmt.Errorf("inspect %s: container %s: %w", path, name, err)
		}
		c.Archive = path
		c.PodArchive = &info
		c.Signature = signature(m, opts.TrustedKeys)
		if c.Container.Name == "" {
			c.Container.Name = name
		}
		out = append(out, c)
	}
	return out, nil
}

// splitPod writes each containers/<name>/ of the pod archive file to
// tmp/<name>.tar and reads pod.dump.
func splitPod(file string, opts Options, tmp string) (PodInfo, map[string]string, error) {
	var info PodInfo
	rc, _, err := archive.Open(file, opts.Identities)
	if err != nil {
		return info, nil, err
	}
	defer rc.Close()
	files := map[string]string{}
	writers := map[string]*tar.Writer{}
	var closers []io.Closer
	defer func() {
		for _, c := range closers {
			c.Close()
		}
	}()
	err = archive.Walk(rc, opts.Limits, func(hdr *tar.Header, body io.Reader) error {
		if hdr.Name == archive.PodDumpFile {
			data, err := io.ReadAll(io.LimitReader(body, maxMetaBytes+1))
			if err != nil {
				return err
			}
			if len(data) > maxMetaBytes {
				return fmt.Errorf("%s is too large", archive.PodDumpFile)
			}
			return json.Unmarshal(data, &info)
		}
		rest, ok := strings.CutPrefix(hdr.Name, archive.PodContainersDir+"/")
		if !ok {
			return nil
		}
		name, member, _ := strings.Cut(rest, "/")
		if name == "" || strings.ContainsAny(name, `\.`) {
			return fmt.Errorf("archive member %q: bad container name", hdr.Name)
		}
		tw, ok := writers[name]
		if !ok {
			f, err := os.OpenFile(filepath.Join(tmp, name+".tar"), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
			if err != nil {
				return err
			}
			tw = tar.NewWriter(f)
			writers[name], files[name] = tw, f.Name()
			closers = append(closers, f)
		}
		if member == "" {
			return nil
		}
		h := &tar.Header{Typeflag: hdr.Typeflag, Name: path.Clean(member), Mode: 0o600, Size: hdr.Size, ModTime: hdr.ModTime}
		if hdr.Typeflag == tar.TypeDir {
			h.Mode, h.Size = 0o700, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		_, err := io.Copy(tw, body)
		return err
	})
	if err != nil {
		return info, nil, err
	}
	for _, tw := range writers {
		if err := tw.Close(); err != nil {
			return info, nil, err
		}
	}
	sort.Strings(info.Containers)
	return info, files, nil
}
