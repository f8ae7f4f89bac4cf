// Package ckptimage turns checkpoint archives into OCI images and back: an
// image with one layer that holds the archive's members, annotated so that
// CRI-O, containerd and checkpointctl recognize it as a checkpoint. The
// images live in an OCI image layout beside the local image store, and move
// to and from registries with go-containerregistry.
package ckptimage

import (
	"bufio"
	"bytes"
	"encoding/json"
	"strings"

	metadata "github.com/checkpoint-restore/checkpointctl/lib"
)

// Annotations CRI-O and containerd restore from. CRI-O looks for its key in
// the image's (manifest) annotations; containerd 2.1-2.3 for checkpointctl's
// container name in the annotations of the blob the image name points to,
// which for our images is the manifest.
const (
	AnnotationCRIOName = "io.kubernetes.cri-o.annotations.checkpoint.name"
	AnnotationName     = metadata.CheckpointAnnotationName

	// AnnotationPod is ckpt's own, on a pod image (a pod archive's): the
	// pod, NAMESPACE/NAME. A pod image has no container name annotation.
	AnnotationPod = "dev.ckpt.checkpoint.pod"

	// AnnotationArchiveFormat is ckpt's own: the layer is the archive's plain
	// tar stream, byte for byte.
	AnnotationArchiveFormat = "dev.ckpt.checkpoint.archive"

	annotationRefName        = "org.opencontainers.image.ref.name"
	annotationContainerdName = "io.containerd.image.name"
	annotationCreated        = "org.opencontainers.image.created"
)

// Info is what an archive says about the checkpoint it holds.
type Info struct {
	Engine      string // ckpt, containerd, CRI-O, Podman
	Container   string
	Pod         string
	Namespace   string
	Image       string // rootfs image name
	ImageUser   string // as the user asked for it
	ImageID     string // rootfs image ref (digest)
	Runtime     string
	CRIUVersion string
	Kernel      string
	Arch        string
	// PodArchive: the archive holds a whole pod (its Containers).
	PodArchive bool
	Containers []string
}

// what names the checkpoint for people: a container, or "pod NS/NAME".
func (info Info) what() string {
	if info.PodArchive {
		return "pod " + info.Namespace + "/" + info.Pod
	}
	return info.Container
}

// annotations is the image's annotation set for info.
func (info Info) annotations() map[string]string {
	a := map[string]string{
		AnnotationName:                                        info.Container,
		AnnotationCRIOName:                                    info.Container,
		metadata.CheckpointAnnotationEngine:                   info.Engine,
		metadata.CheckpointAnnotationPod:                      info.Pod,
		metadata.CheckpointAnnotationNamespace:                info.Namespace,
		metadata.CheckpointAnnotationRootfsImageName:          info.Image,
		metadata.CheckpointAnnotationRootfsImageUserRequested: info.ImageUser,
		metadata.CheckpointAnnotationRootfsImageID:            info.ImageID,
		metadata.CheckpointAnnotationRuntimeName:              info.Runtime,
		metadata.CheckpointAnnotationCriuVersion:              info.CRIUVersion,
		metadata.CheckpointAnnotationHostKernel:               info.Kernel,
		metadata.CheckpointAnnotationHostArch:                 info.Arch,
		AnnotationArchiveFormat:                               "tar",
	}
	if info.PodArchive {
		delete(a, AnnotationName)
		delete(a, AnnotationCRIOName)
		a[AnnotationPod] = info.Namespace + "/" + info.Pod
	}
	for k, v := range a {
		if v == "" {
			delete(a, k)
		}
	}
	return a
}

// IsCheckpoint says whether annotations mark a checkpoint image, and names
// its container (or "pod NAMESPACE/NAME" for a pod image).
func IsCheckpoint(a map[string]string) (string, bool) {
	for _, k := range []string{AnnotationName, AnnotationCRIOName} {
		if v, ok := a[k]; ok {
			return v, true
		}
	}
	if v, ok := a[AnnotationPod]; ok {
		return "pod " + v, true
	}
	return "", false
}

// infoFrom reads config.dump and spec.dump the way checkpointctl does: the
// spec's io.container.manager names the engine and where the names are.
func infoFrom(cfgJSON, specJSON, dumpLog []byte) (Info, error) {
	var cfg metadata.ContainerConfig
	if err := json.Unmarshal(cfgJSON, &cfg); err != nil {
		return Info{}, err
	}
	var spec metadata.Spec
	if err := json.Unmarshal(specJSON, &spec); err != nil {
		return Info{}, err
	}
	a := spec.Annotations
	info := Info{
		Container: cfg.Name, Image: cfg.RootfsImageName, ImageUser: cfg.RootfsImage,
		ImageID: cfg.RootfsImageRef, Runtime: cfg.OCIRuntime,
	}
	switch a["io.container.manager"] {
	case "libpod":
		info.Engine = "podman"
	case "cri-o":
		info.Engine = "cri-o"
		var md struct {
			Name string `json:"name"`
		}
		if json.Unmarshal([]byte(a["io.kubernetes.cri-o.Metadata"]), &md) == nil && md.Name != "" {
			info.Container = md.Name
		}
		info.Pod, info.Namespace = a["io.kubernetes.pod.name"], a["io.kubernetes.pod.namespace"]
	default:
		info.Engine = "containerd"
		if a["io.container.manager"] == "ckpt" {
			info.Engine = "ckpt"
		}
		if n := a["io.kubernetes.cri.container-name"]; n != "" {
			info.Container = n
		}
		info.Pod, info.Namespace = a["io.kubernetes.cri.sandbox-name"], a["io.kubernetes.cri.sandbox-namespace"]
	}
	info.CRIUVersion, info.Kernel, info.Arch = fromDumpLog(dumpLog)
	return info, nil
}

// fromDumpLog takes CRIU's version and the host's kernel and architecture
// from the head of dump.log:
//
//	(00.000000) Version: 4.2.1 (gitid 0)
//	(00.000012) Running on host Linux 6.18.0 #1 SMP ... x86_64
func fromDumpLog(b []byte) (criu, kernel, arch string) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		if i := strings.Index(line, ") "); i >= 0 && strings.HasPrefix(line, "(") {
			line = line[i+2:]
		}
		switch {
		case strings.HasPrefix(line, "Version: ") && criu == "":
			criu, _, _ = strings.Cut(strings.TrimPrefix(line, "Version: "), " ")
		case strings.HasPrefix(line, "Running on ") && kernel == "":
			f := strings.Fields(line)
			// Running on HOST Linux RELEASE ... ARCH
			for i := 2; i+1 < len(f); i++ {
				if f[i] == "Linux" {
					kernel = f[i+1]
					break
				}
			}
			if len(f) > 0 {
				arch = f[len(f)-1]
			}
		}
	}
	return criu, kernel, arch
}
