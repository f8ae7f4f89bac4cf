package cri

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/ckpt-dev/ckpt/internal/archive"
	"github.com/ckpt-dev/ckpt/internal/runtime"
)

// maxDumpBytes bounds config.dump and spec.dump when reading names.
const maxDumpBytes = 4 << 20

var errNamesFound = errors.New("names found")

// archiveNames reads the namespace, pod and container names a checkpoint
// archive recorded: from spec.dump's annotations (CRI-O's, containerd's and
// ckpt's), else config.dump's name. Fields it cannot find stay empty. The
// archive is hostile: members are bounded and only the two are read.
func archiveNames(path string) (runtime.Ref, error) {
	f, err := os.Open(path)
	if err != nil {
		return runtime.Ref{}, err
	}
	defer f.Close()
	var cfg struct {
		Name string `json:"name"`
	}
	var spec struct {
		Annotations map[string]string `json:"annotations"`
	}
	var haveCfg, haveSpec bool
	err = archive.Walk(f, archive.DefaultLimits(), func(hdr *tar.Header, body io.Reader) error {
		if hdr.Typeflag != tar.TypeReg {
			return nil
		}
		var v any
		switch hdr.Name {
		case "config.dump":
			v, haveCfg = &cfg, true
		case "spec.dump":
			v, haveSpec = &spec, true
		default:
			return nil
		}
		if hdr.Size > maxDumpBytes {
			return fmt.Errorf("%s: %d bytes, more than %d: %w", hdr.Name, hdr.Size, maxDumpBytes, runtime.ErrInvalid)
		}
		if err := json.NewDecoder(io.LimitReader(body, maxDumpBytes)).Decode(v); err != nil {
			return fmt.Errorf("%s: %v: %w", hdr.Name, err, runtime.ErrInvalid)
		}
		if haveCfg && haveSpec {
			return errNamesFound
		}
		return nil
	})
	if err != nil && !errors.Is(err, errNamesFound) {
		return runtime.Ref{}, fmt.Errorf("read names from archive: %w", err)
	}
	return namesFromAnnotations(spec.Annotations, cfg.Name), nil
}

// namesFromAnnotations names a checkpointed container the way checkpointctl
// does, by the io.container.manager annotation.
func namesFromAnnotations(a map[string]string, configName string) runtime.Ref {
	if a["io.container.manager"] == "cri-o" {
		ref := runtime.Ref{Namespace: a[labelPodNamespace], Pod: a[labelPodName]}
		var md struct {
			Name string `json:"name"`
		}
		if json.Unmarshal([]byte(a["io.kubernetes.cri-o.Metadata"]), &md) == nil {
			ref.Container = md.Name
		}
		return ref
	}
	// containerd and ckpt's embedded runtime.
	ref := runtime.Ref{
		Namespace: a["io.kubernetes.cri.sandbox-namespace"],
		Pod:       a["io.kubernetes.cri.sandbox-name"],
		Container: a["io.kubernetes.cri.container-name"],
	}
	if ref.Container == "" {
		ref.Container = configName
	}
	return ref
}

// fillTarget completes target with the names the archive recorded.
func fillTarget(archivePath string, target runtime.Ref) (runtime.Ref, error) {
	if target.Namespace != "" && target.Pod != "" && target.Container != "" {
		return target, nil
	}
	rec, err := archiveNames(archivePath)
	if err != nil {
		return target, err
	}
	if target.Namespace == "" {
		target.Namespace = rec.Namespace
	}
	if target.Pod == "" {
		target.Pod = rec.Pod
	}
	if target.Container == "" {
		target.Container = rec.Container
	}
	if target.Namespace == "" || target.Pod == "" || target.Container == "" {
		return target, fmt.Errorf("the archive does not record the %s; name the target (--pod NAMESPACE/POD, --name CONTAINER): %w",
			missing(target), runtime.ErrInvalid)
	}
	return target, nil
}

func missing(r runtime.Ref) string {
	var m []string
	if r.Namespace == "" {
		m = append(m, "namespace")
	}
	if r.Pod == "" {
		m = append(m, "pod")
	}
	if r.Container == "" {
		m = append(m, "container name")
	}
	switch len(m) {
	case 1:
		return m[0]
	case 2:
		return m[0] + " and " + m[1]
	}
	return m[0] + ", " + m[1] + " and " + m[2]
}
