package ckptimage

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	goruntime "runtime"
	"strings"
	"time"

	metadata "github.com/checkpoint-restore/checkpointctl/lib"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/ckpt-dev/ckpt/internal/archive"
	"github.com/ckpt-dev/ckpt/internal/runtime"
)

// Bounds on the members read into memory while building.
const (
	maxDumpJSON = 16 << 20
	maxLogHead  = 16 << 10
)

// NotCheckpointError says an archive or an image is not a checkpoint.
type NotCheckpointError struct{ What, Reason string }

func (e *NotCheckpointError) Error() string {
	return fmt.Sprintf("%s is not a checkpoint %s", e.What, e.Reason)
}

// Unwrap: answered 400 like any invalid input.
func (e *NotCheckpointError) Unwrap() error { return runtime.ErrInvalid }

// Built is an image built from an archive, whose layer is a file that Close
// removes.
type Built struct {
	Image v1.Image
	Info  Info
	layer *fileLayer
}

// Close removes the layer's staged file, unless a store adopted it.
func (b *Built) Close() error {
	if b.layer.adopted {
		return nil
	}
	return os.Remove(b.layer.path)
}

// Build reads the plain tar stream of a checkpoint archive (archive.Open
// gives it for .tar, .tar.zst and .tar.age files) and returns an image
// whose one layer is that stream, byte for byte, staged in a file under
// workDir. The archive is checked like any hostile one (archive.Walk);
// config.dump and spec.dump must be there.
func Build(tarStream io.Reader, workDir string, lim archive.Limits) (_ *Built, retErr error) {
	f, err := os.CreateTemp(workDir, fmt.Sprintf("layer-%d-*.tar", os.Getpid()))
	if err != nil {
		return nil, fmt.Errorf("build checkpoint image: %w", err)
	}
	defer func() {
		if retErr != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	h := sha256.New()
	tee := io.TeeReader(tarStream, io.MultiWriter(f, h))
	var cfgJSON, specJSON, dumpLog, podDump []byte
	var hasImages, hasPodJSON, first = false, false, true
	podImages := map[string]bool{}
	err = archive.Walk(tee, lim, func(hdr *tar.Header, body io.Reader) error {
		read := func(max int64) ([]byte, error) {
			if hdr.Size > max {
				return nil, fmt.Errorf("%s: %d bytes, more than %d", hdr.Name, hdr.Size, max)
			}
			return io.ReadAll(body)
		}
		var err error
		isFirst := first
		first = false
		if podDump != nil || (isFirst && hdr.Name == archive.PodDumpFile) {
			// A pod archive: pod.dump first, containers/<name>/ each.
			switch {
			case hdr.Name == archive.PodDumpFile && hdr.Typeflag == tar.TypeReg:
				podDump, err = read(maxDumpJSON)
			case hdr.Name == "pod.json" && hdr.Typeflag == tar.TypeReg:
				hasPodJSON = true
			case strings.HasPrefix(hdr.Name, archive.PodContainersDir+"/"):
				name, rest, _ := strings.Cut(strings.TrimPrefix(hdr.Name, archive.PodContainersDir+"/"), "/")
				if rest == metadata.CheckpointDirectory || strings.HasPrefix(rest, metadata.CheckpointDirectory+"/") {
					podImages[name] = true
				}
				if rest == metadata.DumpLogFile && dumpLog == nil && hdr.Typeflag == tar.TypeReg {
					dumpLog, err = io.ReadAll(io.LimitReader(body, maxLogHead))
				}
			}
			return err
		}
		switch {
		case hdr.Name == metadata.ConfigDumpFile && hdr.Typeflag == tar.TypeReg:
			cfgJSON, err = read(maxDumpJSON)
		case hdr.Name == metadata.SpecDumpFile && hdr.Typeflag == tar.TypeReg:
			specJSON, err = read(maxDumpJSON)
		case hdr.Name == metadata.DumpLogFile && hdr.Typeflag == tar.TypeReg:
			dumpLog, err = io.ReadAll(io.LimitReader(body, maxLogHead))
		case hdr.Name == metadata.CheckpointDirectory || len(hdr.Name) > len(metadata.CheckpointDirectory) &&
			hdr.Name[:len(metadata.CheckpointDirectory)+1] == metadata.CheckpointDirectory+"/":
			hasImages = true
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("build checkpoint image: read archive: %w", err)
	}
	// The end-of-archive blocks belong to the stream too.
	if _, err := io.Copy(io.Discard, tee); err != nil {
		return nil, fmt.Errorf("build checkpoint image: read archive: %w", err)
	}
	if podDump != nil {
		return buildPod(f, h, podDump, hasPodJSON, podImages, dumpLog)
	}
	switch {
	case cfgJSON == nil:
		return nil, &NotCheckpointError{What: "the archive", Reason: "archive: no " + metadata.ConfigDumpFile}
	case specJSON == nil:
		return nil, &NotCheckpointError{What: "the archive", Reason: "archive: no " + metadata.SpecDumpFile}
	case !hasImages:
		return nil, &NotCheckpointError{What: "the archive", Reason: "archive: no " + metadata.CheckpointDirectory + "/ of CRIU images"}
	}
	info, err := infoFrom(cfgJSON, specJSON, dumpLog)
	if err != nil {
		return nil, &NotCheckpointError{What: "the archive", Reason: "archive: " + err.Error()}
	}
	if info.Container == "" {
		return nil, &NotCheckpointError{What: "the archive", Reason: "archive: it names no container"}
	}
	size, err := f.Seek(0, io.SeekCurrent)
	if err == nil {
		err = f.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("build checkpoint image: %w", err)
	}
	l := &fileLayer{path: f.Name(), size: size, digest: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}}

	var created time.Time
	var cfg metadata.ContainerConfig
	if json.Unmarshal(cfgJSON, &cfg) == nil {
		created = cfg.CheckpointedAt.UTC()
	}
	img, err := newImage(l, info, created)
	if err != nil {
		return nil, fmt.Errorf("build checkpoint image: %w", err)
	}
	return &Built{Image: img, Info: info, layer: l}, nil
}

// buildPod finishes Build for a pod archive: a pod image, whose
// annotations name the pod (AnnotationPod) and none of the container keys,
// so that CRI-O and containerd do not take it for one container's.
func buildPod(f *os.File, h hash.Hash, podDump []byte, hasPodJSON bool, images map[string]bool, dumpLog []byte) (*Built, error) {
	var d struct {
		Namespace        string    `json:"namespace"`
		Pod              string    `json:"pod"`
		Containers       []string  `json:"containers"`
		CheckpointedTime time.Time `json:"checkpointedTime"`
	}
	if err := json.Unmarshal(podDump, &d); err != nil {
		return nil, &NotCheckpointError{What: "the archive", Reason: "pod archive: " + archive.PodDumpFile + ": " + err.Error()}
	}
	switch {
	case d.Pod == "" || d.Namespace == "" || len(d.Containers) == 0:
		return nil, &NotCheckpointError{What: "the archive", Reason: "pod archive: " + archive.PodDumpFile + " names no pod or containers"}
	case !hasPodJSON:
		return nil, &NotCheckpointError{What: "the archive", Reason: "pod archive: no pod.json"}
	}
	for _, c := range d.Containers {
		if !images[c] {
			return nil, &NotCheckpointError{What: "the archive", Reason: "pod archive: no CRIU images for container " + c}
		}
	}
	size, err := f.Seek(0, io.SeekCurrent)
	if err == nil {
		err = f.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("build checkpoint image: %w", err)
	}
	l := &fileLayer{path: f.Name(), size: size, digest: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}}
	info := Info{Engine: "ckpt", Pod: d.Pod, Namespace: d.Namespace, PodArchive: true, Containers: d.Containers}
	info.CRIUVersion, info.Kernel, info.Arch = fromDumpLog(dumpLog)
	img, err := newImage(l, info, d.CheckpointedTime.UTC())
	if err != nil {
		return nil, fmt.Errorf("build checkpoint image: %w", err)
	}
	return &Built{Image: img, Info: info, layer: l}, nil
}

// newImage assembles the one-layer image. Its config and manifest depend
// only on the archive, so the same archive always gives the same digest.
func newImage(l v1.Layer, info Info, created time.Time) (v1.Image, error) {
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err := mutate.Append(img, mutate.Addendum{
		Layer:     l,
		MediaType: types.OCIUncompressedLayer,
		History:   v1.History{Created: v1.Time{Time: created}, CreatedBy: "ckpt image from-checkpoint", Comment: "checkpoint of " + info.what()},
	})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS = "linux"
	cf.Architecture = goArch(info.Arch)
	cf.Created = v1.Time{Time: created}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return nil, err
	}
	a := info.annotations()
	if !created.IsZero() {
		a[annotationCreated] = created.Format(time.RFC3339)
	}
	return mutate.Annotations(img, a).(v1.Image), nil
}

// goArch turns uname's machine into GOARCH, defaulting to this host's.
func goArch(machine string) string {
	switch machine {
	case "x86_64":
		return "amd64"
	case "aarch64":
		return "arm64"
	case "ppc64le", "s390x", "riscv64":
		return machine
	}
	return goruntime.GOARCH
}

// fileLayer is an uncompressed layer kept in a file.
type fileLayer struct {
	path    string
	size    int64
	digest  v1.Hash
	adopted bool // moved into a store's blobs
}

func (l *fileLayer) Digest() (v1.Hash, error)            { return l.digest, nil }
func (l *fileLayer) DiffID() (v1.Hash, error)            { return l.digest, nil }
func (l *fileLayer) Size() (int64, error)                { return l.size, nil }
func (l *fileLayer) MediaType() (types.MediaType, error) { return types.OCIUncompressedLayer, nil }
func (l *fileLayer) Compressed() (io.ReadCloser, error)  { return os.Open(l.path) }
func (l *fileLayer) Uncompressed() (io.ReadCloser, error) {
	return os.Open(l.path)
}

var errDigest = errors.New("content does not match its digest")
