// Package api holds the JSON bodies of ckpt's HTTP API, shared by the
// server (internal/server) and the client (pkg/client) so that the two
// cannot drift apart. It imports nothing of this module.
package api

import "time"

// CheckpointResponse is the kubelet's answer to a checkpoint:
// {"items":["<absolute archive path>"]}.
type CheckpointResponse struct {
	Items []string `json:"items"`
}

// Archive is one published archive (GET /checkpoints).
type Archive struct {
	Name      string `json:"name"`
	Path      string `json:"path"`
	Namespace string `json:"namespace"`
	Pod       string `json:"pod"`
	Container string `json:"container"`
	// Kind is "pod" for an archive of a whole pod, "" for one container.
	Kind    string    `json:"kind,omitempty"`
	Size    int64     `json:"size"`
	Created time.Time `json:"created"`
	SHA256  string    `json:"sha256"`
}

// ArchiveList is the answer to GET /checkpoints.
type ArchiveList struct {
	Items []Archive `json:"items"`
}

// Restored is the answer to a container restore (201).
type Restored struct {
	ID        string `json:"id"`
	Namespace string `json:"namespace"`
	Pod       string `json:"pod"`
	Container string `json:"container"`
	State     string `json:"state"`
	Pid       int    `json:"pid,omitempty"`
}

// RestoredPod is the answer to a pod restore.
type RestoredPod struct {
	Namespace  string     `json:"namespace"`
	Pod        string     `json:"pod"`
	Containers []Restored `json:"containers"`
}

// LiveProtocol is the Upgrade token of a live migration's connections:
// POST /checkpoint/{ns}/{pod}/{ctr}?live=true on the source and
// POST /restore/{ns}/{pod}/{ctr}?live=true on the destination.
const LiveProtocol = "ckpt-live-migration/1"

// LiveResult is what the destination of a live migration reports on its
// connection once the restore returned: the container, or why it failed
// (Status is the HTTP status the error would have had).
type LiveResult struct {
	Restored *Restored `json:"restored,omitempty"`
	Error    string    `json:"error,omitempty"`
	Status   int       `json:"status,omitempty"`
}
