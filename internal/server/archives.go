package server

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"time"

	"github.com/ckpt-dev/ckpt/internal/checkpoint"
	"github.com/ckpt-dev/ckpt/internal/runtime"
	"github.com/ckpt-dev/ckpt/pkg/api"
)

// Archives manages published archives and restores from them.
// internal/checkpoint.Service implements it.
type Archives interface {
	ListWithDigests() ([]checkpoint.ArchiveInfo, error)
	Open(name string) (*os.File, checkpoint.ArchiveInfo, func(), error)
	Delete(name string) error
	Restore(ctx context.Context, src io.Reader, target runtime.Ref, source string) (runtime.Container, error)
	RestoreArchive(ctx context.Context, name string, target runtime.Ref) (runtime.Container, error)
	StopContainer(ctx context.Context, ref runtime.Ref) error
}

// LazyArchives restores with memory served on demand (?lazy=true).
// internal/checkpoint.Service implements it.
type LazyArchives interface {
	RestoreLazy(ctx context.Context, src io.Reader, target runtime.Ref, source string) (runtime.Container, error)
	RestoreArchiveLazy(ctx context.Context, name string, target runtime.Ref) (runtime.Container, error)
}

// ImageArchives opens the archive a checkpoint image carries: its plain tar
// stream, which restores through the same path as any archive. An unknown
// image is an error matching ErrImageNotFound (404), one that is no
// checkpoint image matches runtime.ErrInvalid (400). If the stream has a
// RestoreFailed method, a failed restore calls it after Close.
type ImageArchives interface {
	OpenImageArchive(ctx context.Context, ref string) (io.ReadCloser, error)
}

// ErrImageNotFound: no checkpoint image by that reference, locally or in
// its registry.
var ErrImageNotFound = errors.New("checkpoint image not found")

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (s *server) listArchives(w http.ResponseWriter, r *http.Request) {
	list, err := s.a.ListWithDigests()
	if err != nil {
		writeArchiveError(w, err)
		return
	}
	if list == nil {
		list = []checkpoint.ArchiveInfo{}
	}
	writeJSON(w, http.StatusOK, api.ArchiveList{Items: list})
}

func (s *server) downloadArchive(w http.ResponseWriter, r *http.Request) {
	f, info, release, err := s.a.Open(r.PathValue("file"))
	if err != nil {
		writeArchiveError(w, err)
		return
	}
	defer release()
	defer f.Close()
	ctype := "application/x-tar"
	switch path.Ext(info.Name) {
	case ".zst":
		ctype = "application/zstd"
	case ".age":
		ctype = "application/octet-stream"
	}
	w.Header().Set("Content-Type", ctype)
	w.Header().Set("Content-Disposition", `attachment; filename="`+info.Name+`"`)
	http.ServeContent(w, r, info.Name, info.Created, f)
}

func (s *server) deleteArchive(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("file")
	if err := s.a.Delete(name); err != nil {
		writeArchiveError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"deleted": name})
}

// restore restores into {ns}/{pod}/{ctr} from ?archive=NAME (a published
// archive), ?image=REF (a checkpoint image) or, without either, from the
// archive sent as the request body.
func (s *server) restore(w http.ResponseWriter, r *http.Request) {
	target, err := parseRestoreTarget(r.PathValue("ns"), r.PathValue("pod"), r.PathValue("ctr"))
	if err != nil {
		writeText(w, http.StatusBadRequest, err.Error())
		return
	}
	// A restore outlives a client that goes away: it is undone only by
	// its own failure.
	ctx := context.WithoutCancel(r.Context())
	// The server's read timeout bounds headers and small bodies; an
	// uploaded archive may take longer.
	_ = http.NewResponseController(w).SetReadDeadline(time.Time{})
	query := r.URL.Query()
	lazy, err := parseBool(query, "lazy")
	if err != nil {
		writeText(w, http.StatusBadRequest, err.Error())
		return
	}
	live, err := parseBool(query, "live")
	if err != nil {
		writeText(w, http.StatusBadRequest, err.Error())
		return
	}
	if live {
		s.restoreLive(w, r, target)
		return
	}
	la, canLazy := s.a.(LazyArchives)
	if lazy && !canLazy {
		writeText(w, http.StatusBadRequest, "this agent cannot restore lazily")
		return
	}
	src, err := s.parseRestoreSource(query)
	if err != nil {
		writeText(w, http.StatusBadRequest, err.Error())
		return
	}
	var c runtime.Container
	switch {
	case src.archive != "" && lazy:
		c, err = la.RestoreArchiveLazy(ctx, src.archive, target)
	case src.archive != "":
		c, err = s.a.RestoreArchive(ctx, src.archive, target)
	default:
		err = s.withStream(ctx, r, src, func(rd io.Reader, desc string) (err error) {
			if lazy {
				c, err = la.RestoreLazy(ctx, rd, target, desc)
			} else {
				c, err = s.a.Restore(ctx, rd, target, desc)
			}
			return err
		})
	}
	if err != nil {
		writeArchiveError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, api.Restored{
		ID: c.ID, Namespace: c.Namespace, Pod: c.Pod, Container: c.Name, State: string(c.State), Pid: c.Pid,
	})
}

// restoreSource is where a restore reads its archive: an archive the agent
// keeps (?archive=NAME), a checkpoint image (?image=REF), or, with
// neither, the request body.
type restoreSource struct{ archive, image string }

func (s *server) parseRestoreSource(query url.Values) (restoreSource, error) {
	names, images := query["archive"], query["image"]
	switch {
	case len(names) > 0 && len(images) > 0:
		return restoreSource{}, errors.New("give either archive or image, not both")
	case len(images) > 0 && s.opts.Images == nil:
		return restoreSource{}, errors.New("this agent does not restore from images")
	case len(images) > 0:
		return restoreSource{image: images[len(images)-1]}, nil
	case len(names) > 0:
		return restoreSource{archive: names[len(names)-1]}, nil
	}
	return restoreSource{}, nil
}

// withStream runs restore on the archive stream of an image or upload
// source, with a description for the record. What was fetched for an image
// whose restore failed does not stay.
func (s *server) withStream(ctx context.Context, r *http.Request, src restoreSource, restore func(io.Reader, string) error) error {
	if src.image == "" {
		return restore(r.Body, "upload")
	}
	rc, err := s.opts.Images.OpenImageArchive(ctx, src.image)
	if err != nil {
		return err
	}
	err = restore(rc, "image "+src.image)
	rc.Close()
	if f, ok := rc.(interface{ RestoreFailed() }); ok && err != nil {
		f.RestoreFailed()
	}
	return err
}

// keepName in a restore path segment keeps the name the archive recorded.
const keepName = "_"

func parseRestoreTarget(ns, pod, ctr string) (runtime.Ref, error) {
	segs := []string{ns, pod, ctr}
	for i, v := range segs {
		if v == keepName {
			segs[i] = "x" // any valid name: validate the others
		}
	}
	ref, err := parseRef(segs[0], segs[1], segs[2])
	if err != nil {
		return ref, err
	}
	if ns == keepName {
		ref.Namespace = ""
	}
	if pod == keepName {
		ref.Pod = ""
	}
	if ctr == keepName {
		ref.Container = ""
	}
	return ref, nil
}

// stop stops {ns}/{pod}/{ctr}: what `ckpt migrate --stop-source` does once
// the copy runs elsewhere.
func (s *server) stop(w http.ResponseWriter, r *http.Request) {
	ref, err := parseRef(r.PathValue("ns"), r.PathValue("pod"), r.PathValue("ctr"))
	if err != nil {
		writeText(w, http.StatusBadRequest, err.Error())
		return
	}
	if err := s.a.StopContainer(context.WithoutCancel(r.Context()), ref); err != nil {
		writeArchiveError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"stopped": ref.String()})
}

// PodArchives restores whole pods from pod archives.
// internal/checkpoint.Service implements it.
type PodArchives interface {
	RestorePod(ctx context.Context, src io.Reader, target runtime.Ref, source string) ([]runtime.Container, error)
	RestorePodArchive(ctx context.Context, name string, target runtime.Ref) ([]runtime.Container, error)
}

// restorePod restores a whole pod into {ns}/{pod} ("_" keeps the
// archive's name) from ?archive=NAME, ?image=REF or the request body.
func (s *server) restorePod(w http.ResponseWriter, r *http.Request) {
	pa := s.a.(PodArchives)
	target, err := parseRestoreTarget(r.PathValue("ns"), r.PathValue("pod"), keepName)
	if err != nil {
		writeText(w, http.StatusBadRequest, err.Error())
		return
	}
	ctx := context.WithoutCancel(r.Context())
	_ = http.NewResponseController(w).SetReadDeadline(time.Time{})
	query := r.URL.Query()
	if lazy, err := parseBool(query, "lazy"); err != nil || lazy {
		writeText(w, http.StatusBadRequest, "a pod is not restored lazily (lazy=true is for containers)")
		return
	}
	if live, err := parseBool(query, "live"); err != nil || live {
		writeText(w, http.StatusBadRequest, "a pod is not migrated live (live=true is for containers)")
		return
	}
	src, err := s.parseRestoreSource(query)
	if err != nil {
		writeText(w, http.StatusBadRequest, err.Error())
		return
	}
	var cs []runtime.Container
	if src.archive != "" {
		cs, err = pa.RestorePodArchive(ctx, src.archive, target)
	} else {
		err = s.withStream(ctx, r, src, func(rd io.Reader, desc string) (err error) {
			cs, err = pa.RestorePod(ctx, rd, target, desc)
			return err
		})
	}
	if err != nil {
		writeArchiveError(w, err)
		return
	}
	out := api.RestoredPod{Containers: []api.Restored{}}
	for _, c := range cs {
		out.Namespace, out.Pod = c.Namespace, c.Pod
		out.Containers = append(out.Containers, api.Restored{
			ID: c.ID, Namespace: c.Namespace, Pod: c.Pod, Container: c.Name, State: string(c.State), Pid: c.Pid,
		})
	}
	writeJSON(w, http.StatusCreated, out)
}
