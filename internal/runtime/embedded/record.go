package embedded

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Origin says how a container came to be.
const (
	originManifest = "manifest"
	originRestore  = "restore"
)

// record is what ckpt keeps on disk about a container, in
// <state>/containers/<id>/meta.json. runc keeps the rest.
type record struct {
	ID           string    `json:"id"`
	Namespace    string    `json:"namespace"`
	Pod          string    `json:"pod"`
	Name         string    `json:"name"`
	Image        string    `json:"image"`
	ImageID      string    `json:"imageID"`
	Origin       string    `json:"origin"`
	CreatedAt    time.Time `json:"createdAt"`
	RestoredFrom string    `json:"restoredFrom,omitempty"`
	RestoredAt   time.Time `json:"restoredAt,omitzero"`
	// PodUID names the sandbox (<state>/pods/<uid>) the container runs in.
	PodUID string `json:"podUID,omitempty"`
	// Kind is "sandbox" for a pod's pause container, "init" for an init
	// container, "" for others.
	Kind string `json:"kind,omitempty"`
	// Restarts counts how often the restart policy restarted this
	// container; LastExit is how its previous run ended.
	Restarts int         `json:"restarts,omitempty"`
	LastExit *exitStatus `json:"lastExit,omitempty"`
	// Stopped is set when the container was stopped on request (POST
	// /stop): the restart policy leaves it stopped.
	Stopped bool `json:"stopped,omitempty"`
	// HasReadiness: the container has a readiness probe.
	HasReadiness bool `json:"hasReadiness,omitempty"`
	// PodAnnotations are the pod's annotations (ckpt options ride on them).
	PodAnnotations map[string]string `json:"podAnnotations,omitempty"`
}

const (
	kindSandbox = "sandbox"
	kindInit    = "init"
)

// exitStatus is written by the shim when the container's init exits.
type exitStatus struct {
	Code       int       `json:"code"`
	Signal     string    `json:"signal,omitempty"`
	Reason     string    `json:"reason,omitempty"` // OOMKilled, as the kubelet says
	FinishedAt time.Time `json:"finishedAt"`
}

// A container that never ran (its create, start or restore failed) exits
// as containerd reports it.
const (
	reasonStartError = "StartError"
	startErrorCode   = 128
)

// Files in a container's directory.
const (
	fileMeta      = "meta.json"
	fileExit      = "exit.json"
	fileInitPid   = "init.pid"
	fileShimPid   = "shim.pid"
	fileLog       = "container.log"
	fileShimLog   = "shim.log"
	fileCriuConf  = "criu.conf"
	dirBundle     = "bundle"
	dirRootfs     = "rootfs"
	dirUpper      = "upper"
	dirOverlayWrk = "work"
)

func newID() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

func writeJSONAtomic(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func readJSON(path string, v any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return json.Unmarshal(data, v)
}

func (r *Runtime) containerDir(id string) string {
	return filepath.Join(r.cfg.StateDir, "containers", id)
}

func (r *Runtime) loadRecord(id string) (*record, error) {
	var rec record
	if err := readJSON(filepath.Join(r.containerDir(id), fileMeta), &rec); err != nil {
		return nil, fmt.Errorf("load container %s: %w", id, err)
	}
	return &rec, nil
}

// loadRecords returns every container ckpt knows, skipping half-created ones.
func (r *Runtime) loadRecords() ([]*record, error) {
	entries, err := os.ReadDir(filepath.Join(r.cfg.StateDir, "containers"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []*record
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		rec, err := r.loadRecord(e.Name())
		if err != nil {
			continue
		}
		out = append(out, rec)
	}
	return out, nil
}
