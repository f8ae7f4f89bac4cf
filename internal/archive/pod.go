package archive

import (
	"archive/tar"
	"bufio"
	"bytes"
	"io"
)

// A pod archive holds a whole pod, checkpointed in one cut:
//
//	pod.dump                the pod archive's metadata (JSON, first member)
//	pod.json                the pod (a corev1.Pod)
//	containers/<name>/      each container's archive members, as above
//	volumes/<name>.tar      each emptyDir's content (rootfs-diff format)
//	checksums.sha256[.sig]  over every member, as in a container archive
const (
	PodDumpFile      = "pod.dump"
	PodContainersDir = "containers"
	PodVolumesDir    = "volumes"
)

// PeekPod reports whether a plain tar stream is a pod archive (its first
// member is pod.dump) and returns a reader of the whole stream.
func PeekPod(r io.Reader) (io.Reader, bool) {
	br := bufio.NewReaderSize(r, 64<<10)
	head, _ := br.Peek(64 << 10)
	hdr, err := tar.NewReader(bytes.NewReader(head)).Next()
	return br, err == nil && hdr.Name == PodDumpFile
}
