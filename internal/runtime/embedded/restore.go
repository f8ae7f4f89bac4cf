package embedded

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	lib "github.com/checkpoint-restore/checkpointctl/lib"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/ckpt-dev/ckpt/internal/archive"
	"github.com/ckpt-dev/ckpt/internal/runtime"
)

// RestoreOptions name the restored container; empty fields keep the names
// recorded in the archive.
type RestoreOptions struct {
	Namespace string
	Pod       string
	Name      string
	// Source describes the archive in the container's record.
	Source string
	// Policy says what a restored pod may ask of this node.
	Policy RestorePolicy
	// Verify, when set, decides on the manifest the archive's members were
	// checked against (nil: none) whether the archive may be used: the
	// signature check (internal/trust). It runs before anything else.
	Verify func(*archive.Manifest) error

	late *archive.LateCheck // see restoreInput.late
}

// PodMember is the archive member holding the container's pod (a validated
// corev1.Pod, JSON). Restore builds the container's spec from it.
const PodMember = "pod.json"

// maxPodJSON bounds pod.json like a manifest.
const maxPodJSON = maxManifestBytes

// maxDeletedJSON bounds the read of deleted.files; archive.RemoveDeleted
// applies the format's own, smaller limit.
const maxDeletedJSON = 64 << 20

// Restore rebuilds a container from a checkpoint archive (a plain tar
// stream): the image with rootfs-diff.tar applied and deleted.files removed,
// and the CRIU images. The process resumes where it was dumped, in a new
// pod sandbox. The archive's checksums are verified before anything runs.
//
// The container's OCI spec is ckpt's own, built from the archive's pod.json
// exactly as for a manifest pod; nothing of spec.dump is used. An archive
// without pod.json (containerd, Podman) gives only what a Pod could ask for:
// the process's args, env and working directory, and the image.
func (r *Runtime) Restore(ctx context.Context, tarStream io.Reader, o RestoreOptions) (runtime.Container, error) {
	staging, err := os.MkdirTemp(r.cfg.StateDir, "restore-")
	if err != nil {
		return runtime.Container{}, fmt.Errorf("restore %s: %w", o.Source, err)
	}
	defer os.RemoveAll(staging)
	// The page images are hashed while the restore goes on (the tasks
	// resume only once they match): the one large copy is not also waited
	// on for its hash.
	m, late, err := archive.ExtractLate(tarStream, staging, archive.DefaultLimits(), nil, pagesImage.MatchString)
	if err != nil {
		return runtime.Container{}, fmt.Errorf("restore %s: %w", o.Source, err)
	}
	if o.Verify != nil {
		if err := o.Verify(m); err != nil {
			return runtime.Container{}, fmt.Errorf("restore %s: %w", o.Source, err)
		}
	}
	o.late = late
	c, err := r.restoreExtracted(ctx, staging, o, nil)
	if err != nil && late != nil {
		if lerr := late.Wait(); lerr != nil {
			return runtime.Container{}, fmt.Errorf("restore %s: %w", o.Source, lerr)
		}
	}
	return c, err
}

// restoreExtracted restores from an archive extracted (and verified) into
// staging; lazy, when set, serves the pages that were not extracted.
func (r *Runtime) restoreExtracted(ctx context.Context, staging string, o RestoreOptions, lazy *lazyInput) (runtime.Container, error) {
	root, err := os.OpenRoot(staging)
	if err != nil {
		return runtime.Container{}, fmt.Errorf("restore %s: %w", o.Source, err)
	}
	defer root.Close()
	if _, err := root.Lstat(PodDumpMember); err == nil {
		return runtime.Container{}, fmt.Errorf("restore %s: this is a pod archive: restore it as a pod (POST /restore/NAMESPACE/POD, ckpt restore): %w", o.Source, runtime.ErrInvalid)
	}
	var cfg lib.ContainerConfig
	if err := readConfigDump(root, &cfg); err != nil {
		return runtime.Container{}, fmt.Errorf("restore %s: %w", o.Source, err)
	}
	// A live dump lacks its pages: it restores only as its migration's
	// destination, which pulls them; a live restore takes nothing else
	// (the pages it pulls are not covered by the archive's checksums).
	_, lerr := root.Lstat(LiveMember)
	if live := lazy != nil && lazy.cfg.Remote; lerr == nil && !live {
		return runtime.Container{}, fmt.Errorf("restore %s: a live migration's dump, without its memory pages, restores only within its migration: %w", o.Source, runtime.ErrInvalid)
	} else if live && lerr != nil {
		return runtime.Container{}, fmt.Errorf("restore %s: not a live migration's dump (no %s): %w", o.Source, LiveMember, runtime.ErrInvalid)
	}
	pod, ctrName, err := archivedPod(root, &cfg)
	if err != nil {
		return runtime.Container{}, fmt.Errorf("restore %s: %w", o.Source, err)
	}
	pod, ctr, err := retarget(pod, ctrName, o)
	if err != nil {
		return runtime.Container{}, fmt.Errorf("restore %s: %w", o.Source, err)
	}
	if err := o.Policy.Check(pod); err != nil {
		return runtime.Container{}, fmt.Errorf("restore %s as %s/%s: %w", o.Source, pod.Namespace, pod.Name, err)
	}
	if err := r.checkPodNameFree(pod.Namespace, pod.Name); err != nil {
		return runtime.Container{}, fmt.Errorf("restore %s: %w", o.Source, err)
	}
	if _, err := r.images.Resolve(ctr.Image); err != nil {
		return runtime.Container{}, fmt.Errorf("restore %s: the checkpoint's image %q is not on this node (import it with `ckpt image import`): %w", o.Source, ctr.Image, err)
	}
	// ckpt's own archives get their mounts from pod.json's volumes; an
	// archive of another runtime only the external mounts every pod has.
	var binds podBinds
	if _, err := root.Lstat(PodMember); errors.Is(err, os.ErrNotExist) {
		if binds, err = archiveExternalMounts(root, ctr.TerminationMessagePath); err != nil {
			return runtime.Container{}, fmt.Errorf("restore %s: %w", o.Source, err)
		}
	}
	if binds.SharePID {
		share := true
		pod.Spec.ShareProcessNamespace = &share
	}
	in, err := loadRestoreInput(root, staging, o.Source, &cfg, lazy)
	if err != nil {
		return runtime.Container{}, fmt.Errorf("restore %s: %w", o.Source, err)
	}
	in.binds, in.late = binds, o.late
	vols, err := archivedVolumes(root, staging, pod)
	if err != nil {
		return runtime.Container{}, fmt.Errorf("restore %s: %w", o.Source, err)
	}
	_, ctrs, err := r.createPod(ctx, pod, originRestore, "", restoreInputs{ctr.Name: in}, vols)
	if err != nil {
		return runtime.Container{}, fmt.Errorf("restore %s as %s/%s/%s: %w", o.Source, pod.Namespace, pod.Name, ctr.Name, err)
	}
	return ctrs[0], nil
}

// readConfigDump reads config.dump and checks that the CRIU images'
// directory is there.
func readConfigDump(root *os.Root, cfg *lib.ContainerConfig) error {
	if err := readJSONIn(root, lib.ConfigDumpFile, maxPodJSON, cfg); err != nil {
		return fmt.Errorf("read %s: %v: %w", lib.ConfigDumpFile, err, runtime.ErrInvalid)
	}
	if st, err := root.Lstat(lib.CheckpointDirectory); err != nil || !st.IsDir() {
		return fmt.Errorf("archive has no %s/ directory: %w", lib.CheckpointDirectory, runtime.ErrInvalid)
	}
	return nil
}

// loadRestoreInput reads what restores one container from its extracted
// (and verified) archive members in root, which is dir on disk: the CRIU
// images (expired timerfds re-armed), rootfs-diff.tar and deleted.files.
func loadRestoreInput(root *os.Root, dir, source string, cfg *lib.ContainerConfig, lazy *lazyInput) (*restoreInput, error) {
	if _, err := rearmExpiredTimerfds(root); err != nil {
		return nil, fmt.Errorf("%v: %w", err, runtime.ErrInvalid)
	}
	in := &restoreInput{imagesDir: filepath.Join(dir, lib.CheckpointDirectory), source: source, createdAt: cfg.CreatedTime, lazy: lazy}
	if st, err := root.Lstat(lib.RootFsDiffTar); err == nil && st.Mode().IsRegular() {
		in.rootfsDiff = filepath.Join(dir, lib.RootFsDiffTar)
	}
	// archive.RemoveDeleted bounds deleted.files itself, with its own message.
	switch data, err := readIn(root, lib.DeletedFilesFile, maxDeletedJSON); {
	case err == nil:
		in.deletedJSON = data
	case !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("%s: %v: %w", lib.DeletedFilesFile, err, runtime.ErrInvalid)
	}
	return in, nil
}

// archivedPod returns the pod an archive's container ran in, and the
// container's name: pod.json, validated like a manifest, when ckpt wrote
// the archive; else a pod derived from spec.dump and config.dump.
func archivedPod(root *os.Root, cfg *lib.ContainerConfig) (*corev1.Pod, string, error) {
	data, err := readIn(root, PodMember, maxPodJSON)
	if err == nil {
		pod, err := ParseManifest(data)
		if err != nil {
			return nil, "", fmt.Errorf("%s: %v: %w", PodMember, err, runtime.ErrInvalid)
		}
		name := cfg.Name
		if len(pod.Spec.Containers) == 1 && name == "" {
			name = pod.Spec.Containers[0].Name
		}
		for _, c := range pod.Spec.Containers {
			if c.Name == name {
				return pod, name, nil
			}
		}
		return nil, "", fmt.Errorf("%s has no container %q (config.dump's name): %w", PodMember, name, runtime.ErrInvalid)
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, "", fmt.Errorf("read %s: %v: %w", PodMember, err, runtime.ErrInvalid)
	}
	return foreignPod(root, cfg)
}

// foreignPod derives a Pod from an archive another runtime wrote: only what
// a Pod could ask for (the process's args, env and working directory) from
// spec.dump, and the image from config.dump. Everything else in spec.dump
// (hooks, mounts, namespaces, capabilities, devices, seccomp) is dropped.
func foreignPod(root *os.Root, cfg *lib.ContainerConfig) (*corev1.Pod, string, error) {
	var spec specs.Spec
	if err := readJSONIn(root, lib.SpecDumpFile, maxPodJSON, &spec); err != nil {
		return nil, "", fmt.Errorf("read %s: %v: %w", lib.SpecDumpFile, err, runtime.ErrInvalid)
	}
	if spec.Process == nil || len(spec.Process.Args) == 0 {
		return nil, "", fmt.Errorf("%s has no process: %w", lib.SpecDumpFile, runtime.ErrInvalid)
	}
	image := firstNonEmpty(cfg.RootfsImageName, cfg.RootfsImage)
	if image == "" {
		return nil, "", fmt.Errorf("config.dump names no image (rootfsImageName): %w", runtime.ErrInvalid)
	}
	name := firstNonEmpty(spec.Annotations[annotationCtrName], spec.Annotations["io.kubernetes.container.name"], cfg.Name)
	c := corev1.Container{Name: name, Image: image, Command: spec.Process.Args, WorkingDir: spec.Process.Cwd}
	for _, kv := range spec.Process.Env {
		k, v, _ := strings.Cut(kv, "=")
		c.Env = append(c.Env, corev1.EnvVar{Name: k, Value: v})
	}
	pod := &corev1.Pod{}
	pod.APIVersion, pod.Kind = "v1", "Pod"
	pod.Namespace = firstNonEmpty(spec.Annotations[annotationSandboxNS], spec.Annotations["io.kubernetes.pod.namespace"], "default")
	pod.Name = firstNonEmpty(spec.Annotations[annotationSandboxName], spec.Annotations["io.kubernetes.pod.name"], name)
	pod.Spec.Containers = []corev1.Container{c}
	pod.Spec.RestartPolicy = corev1.RestartPolicyNever
	return pod, name, nil
}

// retarget renames the pod and container as the restore asks, keeps only
// the restored container, gives the pod a new UID and validates the result.
func retarget(pod *corev1.Pod, ctrName string, o RestoreOptions) (*corev1.Pod, corev1.Container, error) {
	pod = pod.DeepCopy()
	pod.Namespace = firstNonEmpty(o.Namespace, pod.Namespace)
	pod.Name = firstNonEmpty(o.Pod, pod.Name)
	pod.UID = types.UID(newID()[:32])
	var ctr corev1.Container
	for _, c := range pod.Spec.Containers {
		if c.Name == ctrName {
			ctr = c
		}
	}
	ctr.Name = firstNonEmpty(o.Name, ctr.Name)
	pod.Spec.Containers = []corev1.Container{ctr}
	pod.Spec.InitContainers = nil
	if err := validatePod(pod); err != nil {
		return nil, ctr, fmt.Errorf("the restored pod: %v: %w", err, runtime.ErrInvalid)
	}
	return pod, ctr, nil
}

// checkPodNameFree refuses a restore into a pod name another pod holds.
func (r *Runtime) checkPodNameFree(ns, name string) error {
	pods, err := r.loadPods()
	if err != nil {
		return err
	}
	for _, p := range pods {
		if p.Namespace == ns && p.Name == name {
			what := "a restored pod"
			if p.Origin == originManifest {
				what = "a manifest pod"
			}
			return fmt.Errorf("pod %s/%s exists (%s): restore under another pod name, or remove it first: %w", ns, name, what, runtime.ErrExists)
		}
	}
	return nil
}

// RestorePolicy is what the node lets a restored pod ask for; everything is
// refused by default. Each field has a flag on `ckpt serve`.
type RestorePolicy struct {
	AllowHostPath          bool // --restore-allow-host-path
	AllowPrivileged        bool // --restore-allow-privileged
	AllowAddedCapabilities bool // --restore-allow-added-capabilities
	AllowHostNetwork       bool // --restore-allow-host-network
}

// Check refuses a pod that asks for what the policy does not allow, naming
// the field and the flag that would allow it.
func (p RestorePolicy) Check(pod *corev1.Pod) error {
	refuse := func(field, flag string) error {
		return fmt.Errorf("%s is refused on restore (allow it with ckpt serve %s): %w", field, flag, runtime.ErrInvalid)
	}
	if pod.Spec.HostNetwork && !p.AllowHostNetwork {
		return refuse("spec.hostNetwork", "--restore-allow-host-network")
	}
	for i, v := range pod.Spec.Volumes {
		if v.HostPath != nil && !p.AllowHostPath {
			return refuse(fmt.Sprintf("spec.volumes[%d].hostPath (%s)", i, v.HostPath.Path), "--restore-allow-host-path")
		}
	}
	for i, c := range pod.Spec.Containers {
		sc := c.SecurityContext
		if sc == nil {
			continue
		}
		if sc.Privileged != nil && *sc.Privileged && !p.AllowPrivileged {
			return refuse(fmt.Sprintf("spec.containers[%d].securityContext.privileged", i), "--restore-allow-privileged")
		}
		if sc.Capabilities != nil && len(sc.Capabilities.Add) > 0 && !p.AllowAddedCapabilities {
			return refuse(fmt.Sprintf("spec.containers[%d].securityContext.capabilities.add", i), "--restore-allow-added-capabilities")
		}
	}
	return nil
}

// readIn reads a regular file inside root, bounded, following no symlink.
func readIn(root *os.Root, name string, limit int64) ([]byte, error) {
	st, err := root.Lstat(name)
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", name)
	}
	if st.Size() > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", name, limit)
	}
	f, err := root.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, limit))
}

func readJSONIn(root *os.Root, name string, limit int64, v any) error {
	data, err := readIn(root, name, limit)
	if err != nil {
		return err
	}
	return json.Unmarshal(data, v)
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// restoreInput is what a restore needs from an extracted archive.
type restoreInput struct {
	source      string     // the archive, for the record
	createdAt   time.Time  // when the checkpointed container was created
	imagesDir   string     // CRIU images
	rootfsDiff  string     // path of rootfs-diff.tar, "" if none
	deletedJSON []byte     // deleted.files
	lazy        *lazyInput // set for a lazy restore
	// late, when set, is still verifying the page images: the tasks may
	// resume only on its good verdict.
	late  *archive.LateCheck
	binds podBinds // mounts the dumped container had from outside
}

// prepareRootfs applies the archive's file system changes to a fresh rootfs.
func (in *restoreInput) prepareRootfs(rootfs string) error {
	if in.rootfsDiff != "" {
		f, err := os.Open(in.rootfsDiff)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := archive.ApplyRootfsDiff(rootfs, f, archive.DefaultLimits()); err != nil {
			return err
		}
	}
	if in.binds.RootMode != 0 {
		// CRIU checks the mode of the root it restores into.
		if err := os.Chmod(rootfs, in.binds.RootMode); err != nil {
			return err
		}
	}
	if len(in.deletedJSON) > 0 {
		return archive.RemoveDeleted(rootfs, in.deletedJSON)
	}
	return nil
}

// boundingCaps is the bounding set of a spec (none if it has none).
func boundingCaps(specJSON []byte) []string {
	var s specs.Spec
	caps := []string{}
	if json.Unmarshal(specJSON, &s) == nil && s.Process != nil && s.Process.Capabilities != nil {
		caps = append(caps, s.Process.Capabilities.Bounding...)
	}
	return caps
}
