package runtime

import (
	"context"
	"io"
	"os"
	"time"
)

// Backend is what every runtime backend implements: find a container and
// checkpoint it. A backend is one folder under internal/runtime; what else
// it can do, it says by implementing the capability interfaces below, and
// Discover is the one place that asks.
type Backend interface {
	Lookup(ctx context.Context, ref Ref) (Container, error)
	// Checkpoint writes an archive of a running container to archivePath,
	// leaving the container running. The deadline comes from ctx.
	Checkpoint(ctx context.Context, c Container, archivePath string, opts CheckpointOptions) (CheckpointResult, error)
}

// StreamRestorer restores a container from a plain tar stream of an
// archive (the embedded runtime). Empty target fields keep the archive's
// names; source describes the archive for the container's record. Once
// the archive's members are verified, and before anything of it is used,
// it calls check; check's error ends the restore.
type StreamRestorer interface {
	RestoreStream(ctx context.Context, tarStream io.Reader, target Ref, source string, check ArchiveCheck) (Container, error)
}

// ArchiveCheck is the node's trust decision on an archive: manifest is the
// exact checksums.sha256 its members were verified against (nil: it has
// none), signature the checksums.sha256.sig that followed (nil: none).
type ArchiveCheck func(manifest, signature []byte) error

// FileRestorer restores a container from a plain archive file (CRI, whose
// runtimes read the archive themselves). The checkpoint service spools a
// stream to a private file first.
type FileRestorer interface {
	Restore(ctx context.Context, archivePath string, target Ref) (Container, error)
}

// LazyRestorer restores a container from a plain tar archive file with its
// memory served on demand from the file, which it keeps open as long as it
// needs (the embedded runtime: ?lazy=true). check is as for StreamRestorer.
type LazyRestorer interface {
	RestoreLazyFile(ctx context.Context, archive *os.File, target Ref, source string, check ArchiveCheck) (Container, error)
}

// InPlaceRestorer restores a container fully from a plain tar archive file
// without copying its memory pages out of it first.
type InPlaceRestorer interface {
	RestoreInPlaceFile(ctx context.Context, archive *os.File, target Ref, source string, check ArchiveCheck) (Container, error)
}

// PodCheckpointer checkpoints every running container of a pod in one
// consistent cut into one archive (the embedded runtime).
type PodCheckpointer interface {
	// LookupPod returns the pod's running app containers; a pod that does
	// not exist is ErrPodNotFound.
	LookupPod(ctx context.Context, namespace, pod string) ([]Container, error)
	// CheckpointPod writes the archive of the pod of cs to archivePath,
	// leaving every container running and thawed, also on failure.
	CheckpointPod(ctx context.Context, cs []Container, archivePath string, opts CheckpointOptions) (CheckpointResult, error)
}

// PodRestorer restores a whole pod from the plain tar stream of a pod
// archive into a new sandbox. Empty target fields (Container is unused)
// keep the archive's names; check is as for StreamRestorer.
type PodRestorer interface {
	RestorePodStream(ctx context.Context, tarStream io.Reader, target Ref, source string, check ArchiveCheck) ([]Container, error)
}

// LiveCheckpointer dumps a running container for live migration: all of
// it but the memory pages, which stay with the frozen container to be
// pulled by the destination (the embedded runtime: runc checkpoint
// --lazy-pages). The archive at archivePath holds the rest.
type LiveCheckpointer interface {
	CheckpointLive(ctx context.Context, c Container, archivePath string, opts CheckpointOptions) (LiveDump, error)
}

// LiveDump is a container frozen by a live checkpoint.
type LiveDump interface {
	// ServePages answers the destination's page requests arriving on
	// tunnel until the destination holds every page (nil: the source
	// container has ended) or the migration aborts (an error: the source
	// runs on). It answers the destination's final close itself.
	ServePages(tunnel LiveTunnel, first, idle time.Duration) error
	// Abort resumes a container whose pages were never served.
	Abort()
}

// LiveTunnel is the connection the page traffic rides on.
type LiveTunnel interface {
	io.ReadWriter
	SetReadDeadline(time.Time) error
}

// LiveRestorer restores a live-migrated container from a plain archive
// file (everything but the memory pages), its pages pulled through pages,
// a socket whose other end the caller relays to the source.
type LiveRestorer interface {
	RestoreLiveFile(ctx context.Context, archive, pages *os.File, target Ref, source string, check ArchiveCheck) (Container, error)
}

// Stopper stops a container by ID (migration's --stop-source).
type Stopper interface {
	Stop(ctx context.Context, id string) error
}

// HealthChecker reports whether the backend can serve.
type HealthChecker interface {
	Healthy(ctx context.Context) error
}

// Capabilities are what a backend can do beyond checkpointing; a nil field
// is a capability it lacks, which the API answers with 501.
type Capabilities struct {
	StreamRestore StreamRestorer
	FileRestore   FileRestorer
	// LazyRestore and InPlaceRestore come with StreamRestore.
	LazyRestore    LazyRestorer
	InPlaceRestore InPlaceRestorer
	LiveCheckpoint LiveCheckpointer
	LiveRestore    LiveRestorer
	Stop           Stopper
	Health         HealthChecker
	PodCheckpoint  PodCheckpointer
	PodRestore     PodRestorer
}

// Discover finds a backend's capabilities. Decorators must not stand
// between a backend and Discover: ask the backend itself.
func Discover(b Backend) Capabilities {
	var c Capabilities
	c.StreamRestore, _ = b.(StreamRestorer)
	c.FileRestore, _ = b.(FileRestorer)
	c.LazyRestore, _ = b.(LazyRestorer)
	c.InPlaceRestore, _ = b.(InPlaceRestorer)
	c.LiveCheckpoint, _ = b.(LiveCheckpointer)
	c.LiveRestore, _ = b.(LiveRestorer)
	c.Stop, _ = b.(Stopper)
	c.Health, _ = b.(HealthChecker)
	c.PodCheckpoint, _ = b.(PodCheckpointer)
	c.PodRestore, _ = b.(PodRestorer)
	return c
}

// Names lists the capabilities present, for logs.
func (c Capabilities) Names() []string {
	var n []string
	if c.StreamRestore != nil || c.FileRestore != nil {
		n = append(n, "restore")
	}
	if c.Stop != nil {
		n = append(n, "stop")
	}
	if c.Health != nil {
		n = append(n, "health")
	}
	if c.PodCheckpoint != nil {
		n = append(n, "pod-checkpoint")
	}
	if c.PodRestore != nil {
		n = append(n, "pod-restore")
	}
	return n
}
