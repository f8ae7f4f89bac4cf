package embedded

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"time"

	lib "github.com/checkpoint-restore/checkpointctl/lib"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/ckpt-dev/ckpt/internal/archive"
	"github.com/ckpt-dev/ckpt/internal/runtime"
)

// The pod archive's layout is archive's (pod.go, docs/archive.md).
const (
	PodDumpMember   = archive.PodDumpFile
	PodContainers   = archive.PodContainersDir
	PodVolumes      = archive.PodVolumesDir
	PodArchiveKind  = "ckpt.dev/pod-checkpoint/v1"
	maxPodDumpBytes = 1 << 20
)

// PodDump is pod.dump.
type PodDump struct {
	Kind             string    `json:"kind"`
	Namespace        string    `json:"namespace"`
	Pod              string    `json:"pod"`
	UID              string    `json:"uid,omitempty"`
	Containers       []string  `json:"containers"`
	EmptyDirs        []string  `json:"emptyDirs,omitempty"`
	CheckpointedTime time.Time `json:"checkpointedTime"`
	// FrozenMicros is how long the pod was frozen, in microseconds.
	FrozenMicros int64 `json:"frozenMicros"`
}

var (
	_ runtime.PodCheckpointer = (*Runtime)(nil)
	_ runtime.PodRestorer     = (*Runtime)(nil)
)

// LookupPod returns the running app containers of a pod, one per container
// of its spec, sorted by name.
func (r *Runtime) LookupPod(ctx context.Context, namespace, name string) ([]runtime.Container, error) {
	p, pod, err := r.findPod(namespace, name)
	if err != nil {
		return nil, err
	}
	recs, err := r.loadRecords()
	if err != nil {
		return nil, err
	}
	var out []runtime.Container
	for _, c := range pod.Spec.Containers {
		var found *runtime.Container
		for _, rec := range recs {
			if rec.PodUID != p.ID || rec.Kind != "" || rec.Name != c.Name {
				continue
			}
			ctr := r.container(ctx, rec)
			if found == nil || (ctr.State == runtime.StateRunning && found.State != runtime.StateRunning) {
				found = &ctr
			}
		}
		switch {
		case found == nil:
			return nil, fmt.Errorf("pod %s/%s: container %s has not started: %w", namespace, name, c.Name, runtime.ErrNotRunning)
		case found.State != runtime.StateRunning:
			return nil, fmt.Errorf("pod %s/%s: container %s (%s) is %s: %w", namespace, name, c.Name, short(found.ID), found.State, runtime.ErrNotRunning)
		}
		out = append(out, *found)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// findPod returns the pod named namespace/name.
func (r *Runtime) findPod(namespace, name string) (*podRecord, *corev1.Pod, error) {
	pods, err := r.loadPods()
	if err != nil {
		return nil, nil, err
	}
	for _, p := range pods {
		if p.Namespace == namespace && p.Name == name {
			return r.loadPod(p.ID)
		}
	}
	return nil, nil, fmt.Errorf("%w: %s/%s", runtime.ErrPodNotFound, namespace, name)
}

// CheckpointPod checkpoints the containers cs of one pod in one cut: every
// container's cgroup is frozen first, then each is dumped (CRIU seizes the
// frozen tasks and puts the freezer back to FROZEN before it lets them go),
// then the emptyDirs are captured, and only then is the pod thawed. One
// archive holds it all. Every container is thawed on return, whatever
// happened; on failure only a partial archivePath is left (the caller's).
func (r *Runtime) CheckpointPod(ctx context.Context, cs []runtime.Container, archivePath string, opts runtime.CheckpointOptions) (res runtime.CheckpointResult, err error) {
	if len(cs) == 0 {
		return res, fmt.Errorf("checkpoint pod: no containers: %w", runtime.ErrInvalid)
	}
	recs := make([]*record, len(cs))
	for i, c := range cs {
		if recs[i], err = r.loadRecord(c.ID); err != nil {
			return res, fmt.Errorf("checkpoint pod: container %s: %w", c.ID, runtime.ErrContainerNotFound)
		}
		if recs[i].PodUID == "" || recs[i].PodUID != recs[0].PodUID {
			return res, fmt.Errorf("checkpoint pod: containers %s and %s are not of one pod: %w", recs[0].ID, c.ID, runtime.ErrInvalid)
		}
	}
	p, pod, err := r.loadPod(recs[0].PodUID)
	if err != nil {
		return res, fmt.Errorf("checkpoint pod %s/%s: %w", recs[0].Namespace, recs[0].Pod, err)
	}
	what := p.Namespace + "/" + p.Name
	work, err := os.MkdirTemp(filepath.Dir(archivePath), ".pod-")
	if err != nil {
		return res, fmt.Errorf("checkpoint pod %s: %w", what, err)
	}
	defer os.RemoveAll(work)

	frozenAt, thawedAt, err := r.dumpPodFrozen(ctx, p, pod, recs, work, opts, &res)
	if err != nil {
		return res, fmt.Errorf("checkpoint pod %s: %w", what, err)
	}
	res.FreezeTime = thawedAt.Sub(frozenAt)

	f, err := os.OpenFile(archivePath, os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o600)
	if err != nil {
		return res, fmt.Errorf("checkpoint pod %s: %w", what, err)
	}
	defer f.Close()
	dump := PodDump{Kind: PodArchiveKind, Namespace: p.Namespace, Pod: p.Name, UID: p.UID,
		CheckpointedTime: thawedAt.UTC(), FrozenMicros: res.FreezeTime.Microseconds()}
	for _, rec := range recs {
		dump.Containers = append(dump.Containers, rec.Name)
	}
	for _, v := range pod.Spec.Volumes {
		if v.EmptyDir != nil {
			dump.EmptyDirs = append(dump.EmptyDirs, v.Name)
		}
	}
	if err := writePodArchive(f, dump, filepath.Join(r.podDir(p.ID), filePod), work); err != nil {
		return res, fmt.Errorf("checkpoint pod %s: write archive: %w", what, err)
	}
	return res, f.Close()
}

// dumpPodFrozen freezes every container of recs, dumps each into
// work/<name>.tar and captures the emptyDirs into work/volume-<name>.tar,
// then thaws them all (also on failure) and says when.
func (r *Runtime) dumpPodFrozen(ctx context.Context, p *podRecord, pod *corev1.Pod, recs []*record, work string, opts runtime.CheckpointOptions, res *runtime.CheckpointResult) (frozenAt, thawedAt time.Time, err error) {
	var frozen []string
	thawAll := func() {
		for _, id := range frozen {
			r.thaw(id)
		}
		frozen = nil
		thawedAt = time.Now()
	}
	defer thawAll()
	for _, rec := range recs {
		frozen = append(frozen, rec.ID) // thawed even if freezing fails half-way
		if err := freezeCgroupWait(ctx, rec.ID); err != nil {
			if ctx.Err() != nil {
				err = fmt.Errorf("%w (freezing %s/%s: %v)", runtime.ErrTimeout, rec.Pod, rec.Name, err)
			}
			return frozenAt, thawedAt, fmt.Errorf("freeze container %s: %w", rec.Name, err)
		}
	}
	frozenAt = time.Now()
	for _, rec := range recs {
		c := runtime.Container{ID: rec.ID, Namespace: rec.Namespace, Pod: rec.Pod, Name: rec.Name}
		one, err := r.checkpoint(ctx, c, filepath.Join(work, rec.Name+".tar"), opts, false)
		if err != nil {
			return frozenAt, thawedAt, err
		}
		res.PagesWritten += one.PagesWritten
		// The cut holds only if CRIU left every cgroup frozen.
		for _, id := range frozen {
			if !r.Frozen(id) {
				return frozenAt, thawedAt, fmt.Errorf("container %s was thawed while the pod was dumped: no consistent cut", short(id))
			}
		}
	}
	vols := volumePaths(pod, r.podDir(p.ID))
	for _, v := range pod.Spec.Volumes {
		if v.EmptyDir == nil {
			continue
		}
		if err := captureVolume(vols[v.Name], filepath.Join(work, "volume-"+v.Name+".tar")); err != nil {
			return frozenAt, thawedAt, fmt.Errorf("emptyDir %s: %w", v.Name, err)
		}
	}
	thawAll()
	return frozenAt, thawedAt, nil
}

// writePodArchive writes the pod archive into f from the work directory
// dumpPodFrozen filled.
func writePodArchive(f *os.File, dump PodDump, podJSON, work string) error {
	w := archive.NewFileWriter(f)
	data, err := json.MarshalIndent(dump, "", "  ")
	if err != nil {
		return err
	}
	if err := w.AddBytes(PodDumpMember, data); err != nil {
		return err
	}
	if err := w.AddFile(PodMember, podJSON); err != nil {
		return err
	}
	if err := w.AddDirEntry(PodContainers, 0o700); err != nil {
		return err
	}
	for _, name := range dump.Containers {
		if err := copyMembers(w, filepath.Join(work, name+".tar"), path.Join(PodContainers, name)); err != nil {
			return fmt.Errorf("container %s: %w", name, err)
		}
	}
	if err := w.AddDirEntry(PodVolumes, 0o700); err != nil {
		return err
	}
	for _, name := range dump.EmptyDirs {
		if err := w.AddFile(path.Join(PodVolumes, name+".tar"), filepath.Join(work, "volume-"+name+".tar")); err != nil {
			return err
		}
	}
	return w.Close()
}

// copyMembers adds a container archive's members under dir; its manifest
// goes (the pod archive's covers every member), and so does its pod.json
// (the pod archive has one).
func copyMembers(w *archive.FileWriter, archivePath, dir string) error {
	src, err := os.Open(archivePath)
	if err != nil {
		return err
	}
	defer src.Close()
	if err := w.AddDirEntry(dir, 0o700); err != nil {
		return err
	}
	return archive.Walk(src, archive.DefaultLimits(), func(hdr *tar.Header, body io.Reader) error {
		switch {
		case hdr.Name == archive.ManifestFile || hdr.Name == archive.SignatureFile || hdr.Name == PodMember:
			return nil
		case hdr.Typeflag == tar.TypeDir:
			return w.AddDirEntry(path.Join(dir, hdr.Name), 0o700)
		case hdr.Typeflag == tar.TypeReg:
			return w.AddReader(path.Join(dir, hdr.Name), hdr.Size, body)
		}
		return fmt.Errorf("member %s: unexpected type %c", hdr.Name, hdr.Typeflag)
	})
}

// RestorePodStream restores a whole pod from a pod archive (a plain tar
// stream) into a new sandbox: every container from its members, each
// emptyDir with its content, its hostPorts forwarded. The archive is
// extracted and verified (checksums, then check) before anything of it is
// used; the pod is validated as a manifest and held to the restore policy.
func (r *Runtime) RestorePodStream(ctx context.Context, tarStream io.Reader, target runtime.Ref, source string, check runtime.ArchiveCheck) ([]runtime.Container, error) {
	staging, err := os.MkdirTemp(r.cfg.StateDir, "restore-pod-")
	if err != nil {
		return nil, fmt.Errorf("restore %s: %w", source, err)
	}
	defer os.RemoveAll(staging)
	m, err := archive.Extract(tarStream, staging, archive.DefaultLimits(), nil)
	if err != nil {
		return nil, fmt.Errorf("restore %s: %w", source, err)
	}
	if m == nil {
		err = check(nil, nil)
	} else {
		err = check(m.Raw, m.Signature)
	}
	if err != nil {
		return nil, fmt.Errorf("restore %s: %w", source, err)
	}
	cs, err := r.restorePodExtracted(ctx, staging, target, source)
	if err != nil {
		return nil, fmt.Errorf("restore %s: %w", source, err)
	}
	return cs, nil
}

func (r *Runtime) restorePodExtracted(ctx context.Context, staging string, target runtime.Ref, source string) ([]runtime.Container, error) {
	root, err := os.OpenRoot(staging)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	var dump PodDump
	if err := readJSONIn(root, PodDumpMember, maxPodDumpBytes, &dump); err != nil || dump.Kind != PodArchiveKind {
		if _, cerr := root.Lstat(lib.ConfigDumpFile); cerr == nil {
			return nil, fmt.Errorf("this is a container archive, not a pod archive: restore it as a container (POST /restore/NAMESPACE/POD/CONTAINER): %w", runtime.ErrInvalid)
		}
		return nil, fmt.Errorf("not a pod archive (%s of kind %s): %v: %w", PodDumpMember, PodArchiveKind, err, runtime.ErrInvalid)
	}
	data, err := readIn(root, PodMember, maxPodJSON)
	if err != nil {
		return nil, fmt.Errorf("read %s: %v: %w", PodMember, err, runtime.ErrInvalid)
	}
	pod, err := ParseManifest(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %v: %w", PodMember, err, runtime.ErrInvalid)
	}
	pod = pod.DeepCopy()
	pod.Namespace = firstNonEmpty(target.Namespace, pod.Namespace)
	pod.Name = firstNonEmpty(target.Pod, pod.Name)
	pod.UID = types.UID(newID()[:32])
	pod.Spec.InitContainers = nil // they ran to completion before the checkpoint
	if err := validatePod(pod); err != nil {
		return nil, fmt.Errorf("the restored pod: %v: %w", err, runtime.ErrInvalid)
	}
	if err := r.cfg.RestorePolicy.Check(pod); err != nil {
		return nil, fmt.Errorf("restore as %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	if err := r.checkPodNameFree(pod.Namespace, pod.Name); err != nil {
		return nil, err
	}

	// Exactly the pod's containers and emptyDirs, nothing else.
	wantCtrs, wantVols := map[string]bool{}, map[string]bool{}
	for _, c := range pod.Spec.Containers {
		wantCtrs[c.Name] = true
	}
	for _, v := range pod.Spec.Volumes {
		if v.EmptyDir != nil {
			wantVols[v.Name+".tar"] = true
		}
	}
	for dir, want := range map[string]map[string]bool{PodContainers: wantCtrs, PodVolumes: wantVols} {
		entries, err := readDirIn(root, dir)
		if err != nil {
			return nil, fmt.Errorf("%s/: %v: %w", dir, err, runtime.ErrInvalid)
		}
		for _, e := range entries {
			if !want[e] {
				return nil, fmt.Errorf("%s/%s is not in the pod's spec (%s): %w", dir, e, PodMember, runtime.ErrInvalid)
			}
		}
	}

	inputs := restoreInputs{}
	for _, c := range pod.Spec.Containers {
		dir := path.Join(PodContainers, c.Name)
		if st, err := root.Lstat(dir); err != nil || !st.IsDir() {
			return nil, fmt.Errorf("the archive has no %s/ for container %s: %w", dir, c.Name, runtime.ErrInvalid)
		}
		croot, err := root.OpenRoot(dir)
		if err != nil {
			return nil, err
		}
		var cfg lib.ContainerConfig
		err = readConfigDump(croot, &cfg)
		if err == nil && cfg.Name != c.Name {
			err = fmt.Errorf("%s/%s names container %q: %w", dir, lib.ConfigDumpFile, cfg.Name, runtime.ErrInvalid)
		}
		var in *restoreInput
		if err == nil {
			in, err = loadRestoreInput(croot, filepath.Join(staging, dir), source, &cfg, nil)
		}
		croot.Close()
		if err != nil {
			return nil, fmt.Errorf("container %s: %w", c.Name, err)
		}
		inputs[c.Name] = in
	}
	vols, err := archivedVolumes(root, staging, pod)
	if err != nil {
		return nil, err
	}
	_, ctrs, err := r.createPod(ctx, pod, originRestore, "", inputs, vols)
	if err != nil {
		return nil, fmt.Errorf("restore pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	return ctrs, nil
}

// readDirIn lists a directory inside root ("" entries if it is missing).
func readDirIn(root *os.Root, dir string) ([]string, error) {
	st, err := root.Lstat(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("not a directory")
	}
	f, err := root.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}

// archivedVolumes maps the pod's emptyDirs that the extracted archive in
// staging (opened as root) holds a volumes/NAME.tar for to that file. An
// emptyDir without one starts empty; members for other names are not
// looked at.
func archivedVolumes(root *os.Root, staging string, pod *corev1.Pod) (map[string]string, error) {
	vols := map[string]string{}
	for _, v := range pod.Spec.Volumes {
		name := path.Join(PodVolumes, v.Name+".tar")
		if v.EmptyDir == nil {
			continue
		}
		st, err := root.Lstat(name)
		if errors.Is(err, os.ErrNotExist) {
			continue // an empty emptyDir
		}
		if err != nil || !st.Mode().IsRegular() {
			return nil, fmt.Errorf("%s is not a regular file: %w", name, runtime.ErrInvalid)
		}
		vols[v.Name] = filepath.Join(staging, name)
	}
	return vols, nil
}

// fillVolumes applies the archived content of a restored pod's emptyDirs
// (rootfs-diff format, through os.Root: nothing lands outside the volume).
func (r *Runtime) fillVolumes(pod *corev1.Pod, p *podRecord, volumes map[string]string) error {
	paths := volumePaths(pod, r.podDir(p.ID))
	for name, tarPath := range volumes {
		dir, ok := paths[name]
		if !ok {
			return fmt.Errorf("volume %s is not an emptyDir of the pod: %w", name, runtime.ErrInvalid)
		}
		f, err := os.Open(tarPath)
		if err != nil {
			return err
		}
		err = archive.ApplyRootfsDiff(dir, f, archive.DefaultLimits())
		f.Close()
		if err != nil {
			return fmt.Errorf("emptyDir %s: %w: %w", name, runtime.ErrInvalid, err)
		}
	}
	return nil
}
