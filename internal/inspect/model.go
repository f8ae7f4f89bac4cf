// Package inspect reads checkpoint archives (ckpt's own, containerd's,
// CRI-O's and Podman's; plain, zstd or age) in one streaming pass and
// reports the container, its CRIU statistics, process tree, open files,
// sockets, mounts and memory. It can search and dump the memory pages
// while they stream by, so a multi-GiB archive is read with bounded memory.
//
// Archives are hostile: small members are extracted into a private
// temporary root through os.Root, CRIU images are size-checked and their
// framing verified before go-criu's crit decodes them, and page images are
// never extracted unless they arrive before the pagemap that describes them.
//
// The JSON form of Checkpoint is stable and documented in docs/inspect.md.
package inspect

import "time"

// Checkpoint is what one archive holds.
type Checkpoint struct {
	Archive    string      `json:"archive"`
	Format     string      `json:"format"`
	Container  Container   `json:"container"`
	Sizes      Sizes       `json:"sizes"`
	Statistics *Statistics `json:"statistics,omitempty"`
	// Processes are the roots of the process tree (normally one).
	Processes []*Process `json:"processes,omitempty"`
	Mounts    []Mount    `json:"mounts,omitempty"`
	// Signature says who signed checksums.sha256 and whether it verifies.
	Signature Signature `json:"signature"`
	// PodArchive is set when the container is one of a pod archive's.
	PodArchive *PodInfo `json:"pod_archive,omitempty"`
}

// Signature is the archive's checksums.sha256.sig.
type Signature struct {
	// Signed: the archive carries a signature (ckpt's archives do).
	Signed bool `json:"signed"`
	// Valid: the signature verifies over checksums.sha256 with its key.
	Valid bool `json:"valid"`
	// Key is the signing key's SHA256 fingerprint (ssh-keygen -l), and
	// KeyType its type, when the signature could be parsed.
	Key     string `json:"key,omitempty"`
	KeyType string `json:"key_type,omitempty"`
	// Trusted is whether Key is among the trusted keys; omitted when none
	// were given.
	Trusted *bool `json:"trusted,omitempty"`
	// Error says why the signature is not valid.
	Error string `json:"error,omitempty"`
}

// Container identifies the checkpointed container.
type Container struct {
	Name         string            `json:"name"`
	ID           string            `json:"id"`
	Image        string            `json:"image"`
	ImageRef     string            `json:"image_ref,omitempty"`
	Runtime      string            `json:"runtime"`
	Engine       string            `json:"engine"`
	Pod          string            `json:"pod,omitempty"`
	Namespace    string            `json:"namespace,omitempty"`
	Created      *time.Time        `json:"created,omitempty"`
	Checkpointed *time.Time        `json:"checkpointed,omitempty"`
	Restored     bool              `json:"restored"`
	Annotations  map[string]string `json:"annotations,omitempty"`
}

// Sizes are in bytes, from the tar headers.
type Sizes struct {
	// Checkpoint is the sum of the CRIU images (checkpoint/).
	Checkpoint int64 `json:"checkpoint"`
	// MemoryPages is the part of Checkpoint in pages-*.img.
	MemoryPages int64 `json:"memory_pages"`
	// RootfsDiff is the size of rootfs-diff.tar.
	RootfsDiff int64 `json:"rootfs_diff"`
	// Content is the sum of every member of the archive.
	Content int64 `json:"content"`
}

// Statistics are CRIU's dump statistics (stats-dump); times in microseconds.
type Statistics struct {
	FreezingTimeUS uint32 `json:"freezing_time_us"`
	FrozenTimeUS   uint32 `json:"frozen_time_us"`
	MemdumpTimeUS  uint32 `json:"memdump_time_us"`
	MemwriteTimeUS uint32 `json:"memwrite_time_us"`
	PagesScanned   uint64 `json:"pages_scanned"`
	PagesSkipped   uint64 `json:"pages_skipped_parent"`
	PagesWritten   uint64 `json:"pages_written"`
	PagesLazy      uint64 `json:"pages_lazy"`
}

// Process is one task of the process tree.
type Process struct {
	PID     uint32 `json:"pid"`
	PPID    uint32 `json:"ppid"`
	PGID    uint32 `json:"pgid"`
	SID     uint32 `json:"sid"`
	Command string `json:"command"`
	State   string `json:"state"`
	Threads int    `json:"threads"`
	// Cmdline and Env are read from the memory pages (when asked for).
	Cmdline  []string   `json:"cmdline,omitempty"`
	Env      []string   `json:"env,omitempty"`
	Files    []File     `json:"files,omitempty"`
	Sockets  []Socket   `json:"sockets,omitempty"`
	Memory   *Memory    `json:"memory,omitempty"`
	Children []*Process `json:"children,omitempty"`
}

// File is an open file descriptor, or the cwd or root of a process.
type File struct {
	FD   string `json:"fd"` // number, "cwd" or "root"
	Type string `json:"type"`
	Path string `json:"path"`
}

// Socket is an open socket.
type Socket struct {
	FD       uint32 `json:"fd"`
	Kind     string `json:"kind"` // UNIXSK, INETSK, PACKETSK, NETLINKSK
	Family   string `json:"family,omitempty"`
	Protocol string `json:"protocol,omitempty"`
	Type     string `json:"type,omitempty"`
	State    string `json:"state,omitempty"`
	Src      string `json:"src,omitempty"`
	SrcPort  uint32 `json:"src_port,omitempty"`
	Dst      string `json:"dst,omitempty"`
	DstPort  uint32 `json:"dst_port,omitempty"`
}

// Memory sums up a process's address space, in bytes.
type Memory struct {
	Dumped   int64 `json:"dumped"`   // pages stored in the archive
	Virtual  int64 `json:"virtual"`  // all mappings
	Shared   int64 `json:"shared"`   // MAP_SHARED mappings
	Mappings int   `json:"mappings"` // number of VMAs
}

// Mount is one mount of the container's OCI spec.
type Mount struct {
	Destination string `json:"destination"`
	Type        string `json:"type"`
	Source      string `json:"source"`
}

// Walk calls fn for every process, parents first.
func (c *Checkpoint) Walk(fn func(*Process)) {
	var visit func([]*Process)
	visit = func(ps []*Process) {
		for _, p := range ps {
			fn(p)
			visit(p.Children)
		}
	}
	visit(c.Processes)
}

// Process returns the process with the given PID, or nil.
func (c *Checkpoint) Process(pid uint32) *Process {
	var found *Process
	c.Walk(func(p *Process) {
		if p.PID == pid && found == nil {
			found = p
		}
	})
	return found
}
