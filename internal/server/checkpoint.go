package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/ckpt-dev/ckpt/internal/checkpoint"
	"github.com/ckpt-dev/ckpt/internal/runtime"
	"github.com/ckpt-dev/ckpt/pkg/api"
)

// PodCheckpointer checkpoints every container of a pod in one cut into
// one archive. internal/checkpoint.Service implements it.
type PodCheckpointer interface {
	CheckpointPod(ctx context.Context, namespace, pod string, opts runtime.CheckpointOptions) (path string, err error)
}

// checkpoint serves POST /checkpoint/{ns}/{pod}/{ctr}?timeout=SECONDS and,
// without {ctr}, POST /checkpoint/{ns}/{pod} (the whole pod).
func (s *server) checkpoint(w http.ResponseWriter, r *http.Request) {
	ctr := r.PathValue("ctr")
	whole := ctr == ""
	if whole {
		ctr = "x" // validate the others
	}
	ref, err := parseRef(r.PathValue("ns"), r.PathValue("pod"), ctr)
	if whole {
		ref.Container = ""
	}
	if err != nil {
		writeText(w, http.StatusBadRequest, err.Error())
		return
	}
	query, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		writeText(w, http.StatusBadRequest, fmt.Sprintf("invalid query: %v", err))
		return
	}
	timeout, err := parseTimeout(query["timeout"], s.opts.DefaultTimeout)
	if err != nil {
		writeText(w, http.StatusBadRequest, err.Error())
		return
	}

	opts := runtime.CheckpointOptions{Timeout: timeout}
	if opts.TCPEstablished, err = parseBool(query, "tcpEstablished"); err != nil {
		writeText(w, http.StatusBadRequest, err.Error())
		return
	}
	live, err := parseBool(query, "live")
	if err != nil {
		writeText(w, http.StatusBadRequest, err.Error())
		return
	}
	if live && whole {
		writeText(w, http.StatusBadRequest, "live migration moves one container; a whole pod cannot be migrated live")
		return
	}
	if live {
		s.checkpointLive(w, r, ref, opts, query)
		return
	}
	var path string
	if whole {
		path, err = s.c.(PodCheckpointer).CheckpointPod(r.Context(), ref.Namespace, ref.Pod, opts)
	} else {
		path, err = s.c.Checkpoint(r.Context(), ref, opts)
	}
	if err != nil {
		status, msg := errorResponse(ref, err)
		writeText(w, status, msg)
		return
	}
	if !filepath.IsAbs(path) {
		writeText(w, http.StatusInternalServerError, fmt.Sprintf("checkpointing of %s failed (archive path %q is not absolute)", ref, path))
		return
	}

	body, err := json.Marshal(api.CheckpointResponse{Items: []string{path}})
	if err != nil { // cannot happen for a []string; kept for honesty
		writeText(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

// errorResponse is the one place where checkpoint errors become HTTP
// statuses. It returns the status and the plain-text body (the kubelet's
// wording). Metrics are the checkpoint service's.
func errorResponse(ref runtime.Ref, err error) (status int, body string) {
	switch {
	case errors.Is(err, runtime.ErrPodNotFound):
		return http.StatusNotFound, "pod does not exist"
	case errors.Is(err, runtime.ErrContainerNotFound):
		return http.StatusNotFound, fmt.Sprintf("container %s does not exist", ref.Container)
	case errors.Is(err, runtime.ErrInvalid):
		return http.StatusBadRequest, err.Error()
	}
	what := ref.Namespace + "/" + ref.Pod
	if ref.Container != "" {
		what += "/" + ref.Container
	}
	return http.StatusInternalServerError, fmt.Sprintf("checkpointing of %s failed (%v)", what, err)
}

// writeArchiveError answers the archive and restore routes; like
// errorResponse, it is where their errors become statuses.
func writeArchiveError(w http.ResponseWriter, err error) {
	writeText(w, archiveStatus(err), err.Error())
}

// archiveStatus is the status of an archive or restore error.
func archiveStatus(err error) int {
	status := http.StatusInternalServerError
	switch {
	case errors.Is(err, checkpoint.ErrArchiveNotFound), errors.Is(err, ErrImageNotFound), errors.Is(err, runtime.ErrPodNotFound),
		errors.Is(err, runtime.ErrContainerNotFound):
		status = http.StatusNotFound
	case errors.Is(err, runtime.ErrInvalid):
		status = http.StatusBadRequest
	case errors.Is(err, runtime.ErrExists), errors.Is(err, runtime.ErrBusy), errors.Is(err, runtime.ErrNotRunning):
		status = http.StatusConflict
	case errors.Is(err, runtime.ErrUnsupported):
		// A capability the backend lacks (restore, stop): the message
		// names it.
		status = http.StatusNotImplemented
	}
	return status
}

// parseRef validates the three path segments as the API server validates
// the objects they name: a namespace is a DNS-1123 label, a pod name a
// DNS-1123 subdomain, a container name a DNS-1123 label.
func parseRef(ns, pod, ctr string) (runtime.Ref, error) {
	for _, seg := range []struct {
		what, value string
		check       func(string) []string
	}{
		{"namespace", ns, validation.IsDNS1123Label},
		{"pod name", pod, validation.IsDNS1123Subdomain},
		{"container name", ctr, validation.IsDNS1123Label},
	} {
		if msgs := seg.check(seg.value); len(msgs) > 0 {
			return runtime.Ref{}, fmt.Errorf("invalid %s %q: %s", seg.what, seg.value, strings.Join(msgs, "; "))
		}
	}
	return runtime.Ref{Namespace: ns, Pod: pod, Container: ctr}, nil
}

// parseBool reads an optional ckpt-only boolean query parameter; the last
// value wins, like timeout.
func parseBool(query url.Values, name string) (bool, error) {
	values := query[name]
	if len(values) == 0 {
		return false, nil
	}
	v, err := strconv.ParseBool(values[len(values)-1])
	if err != nil {
		return false, fmt.Errorf("invalid %s %q: must be true or false", name, values[len(values)-1])
	}
	return v, nil
}

// maxTimeoutSeconds is the largest timeout a time.Duration can hold.
const maxTimeoutSeconds = math.MaxInt64 / int64(time.Second)

// parseTimeout reads the timeout query values (seconds). The last value
// wins when the parameter is repeated, deliberately: that is what the
// kubelet's handler does (it reads URL.Query()["timeout"] and takes the last
// one), not go-restful's QueryParameter, which returns the first. Absent or
// 0 means def. A negative, non-integer or too large value is an error
// naming the value; the kubelet answers those with 404, ckpt with 400.
func parseTimeout(values []string, def time.Duration) (time.Duration, error) {
	if len(values) == 0 {
		return def, nil
	}
	v := values[len(values)-1]
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 || n > maxTimeoutSeconds {
		return 0, fmt.Errorf("invalid timeout %q: must be a whole number of seconds from 0 to %d", v, maxTimeoutSeconds)
	}
	if n == 0 {
		return def, nil
	}
	return time.Duration(n) * time.Second, nil
}
