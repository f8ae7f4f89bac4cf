package embedded

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	lib "github.com/checkpoint-restore/checkpointctl/lib"
	specs "github.com/opencontainers/runtime-spec/specs-go"

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
	// Verify, when set, decides on the manifest the archive's members were
	// checked against (nil: none) whether the archive may be used: the
	// signature check (internal/trust). It runs before anything else.
	Verify func(*archive.Manifest) error
}

// Restore rebuilds a container from a checkpoint archive (a plain tar
// stream): the image with rootfs-diff.tar applied and deleted.files removed,
// spec.dump, and the CRIU images. The process resumes where it was dumped.
// The archive's checksums are verified before anything runs.
func (r *Runtime) Restore(ctx context.Context, tarStream io.Reader, o RestoreOptions) (runtime.Container, error) {
	staging, err := os.MkdirTemp(r.cfg.StateDir, "restore-")
	if err != nil {
		return runtime.Container{}, fmt.Errorf("restore %s: %w", o.Source, err)
	}
	defer os.RemoveAll(staging)
	m, err := archive.Extract(tarStream, staging, archive.DefaultLimits(), nil)
	if err != nil {
		return runtime.Container{}, fmt.Errorf("restore %s: %w", o.Source, err)
	}
	if o.Verify != nil {
		if err := o.Verify(m); err != nil {
			return runtime.Container{}, fmt.Errorf("restore %s: %w", o.Source, err)
		}
	}
	return r.restoreExtracted(ctx, staging, o, nil)
}

// restoreExtracted restores from an archive extracted (and verified) into
// staging; lazy, when set, serves the pages that were not extracted.
func (r *Runtime) restoreExtracted(ctx context.Context, staging string, o RestoreOptions, lazy *lazyInput) (runtime.Container, error) {
	var cfg lib.ContainerConfig
	if err := readJSON(filepath.Join(staging, lib.ConfigDumpFile), &cfg); err != nil {
		return runtime.Container{}, fmt.Errorf("restore %s: read %s: %w", o.Source, lib.ConfigDumpFile, err)
	}
	var spec specs.Spec
	if err := readJSON(filepath.Join(staging, lib.SpecDumpFile), &spec); err != nil {
		return runtime.Container{}, fmt.Errorf("restore %s: read %s: %w", o.Source, lib.SpecDumpFile, err)
	}
	if spec.Linux == nil || spec.Process == nil {
		return runtime.Container{}, fmt.Errorf("restore %s: %s is not a Linux container spec: %w", o.Source, lib.SpecDumpFile, runtime.ErrInvalid)
	}
	if st, err := os.Stat(filepath.Join(staging, lib.CheckpointDirectory)); err != nil || !st.IsDir() {
		return runtime.Container{}, fmt.Errorf("restore %s: archive has no %s/ directory: %w", o.Source, lib.CheckpointDirectory, runtime.ErrInvalid)
	}
	rec := &record{
		ID:        newID(),
		Namespace: firstNonEmpty(o.Namespace, spec.Annotations[annotationSandboxNS], "default"),
		Pod:       firstNonEmpty(o.Pod, spec.Annotations[annotationSandboxName], cfg.Name),
		Name:      firstNonEmpty(o.Name, spec.Annotations[annotationCtrName], cfg.Name),
		Image:     firstNonEmpty(cfg.RootfsImageName, cfg.RootfsImage),
		Origin:    originRestore, CreatedAt: cfg.CreatedTime, RestoredFrom: o.Source, RestoredAt: time.Now().UTC(),
	}
	if err := r.checkNameFree(ctx, rec); err != nil {
		return runtime.Container{}, err
	}
	img, err := r.images.Resolve(rec.Image)
	if err != nil {
		return runtime.Container{}, fmt.Errorf("restore %s: the checkpoint's image %q is not on this node (import it with `ckpt image import`): %w", o.Source, rec.Image, err)
	}
	rec.ImageID = img.ID
	in := &restoreInput{imagesDir: filepath.Join(staging, lib.CheckpointDirectory), lazy: lazy}
	if _, err := os.Stat(filepath.Join(staging, lib.RootFsDiffTar)); err == nil {
		in.rootfsDiff = filepath.Join(staging, lib.RootFsDiffTar)
	}
	if data, err := os.ReadFile(filepath.Join(staging, lib.DeletedFilesFile)); err == nil {
		in.deletedJSON = data
	}
	c, err := r.create(ctx, rec, img, func(rootfs, criuConf string) ([]byte, error) {
		data, err := restoredSpec(spec, rec, rootfs, criuConf)
		if err != nil {
			return nil, err
		}
		if r.cfg.CheckImages == nil {
			return data, nil
		}
		// CRIU runs as root on these images: check them against the
		// prepared root and the spec the container gets.
		return data, r.cfg.CheckImages(in.imagesDir, rootfs, boundingCaps(data))
	}, in)
	if err != nil {
		return c, fmt.Errorf("restore %s as %s/%s/%s: %w", o.Source, rec.Namespace, rec.Pod, rec.Name, err)
	}
	return c, nil
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

// restoredSpec adapts the checkpointed spec to the new container.
func restoredSpec(s specs.Spec, rec *record, rootfs, criuConf string) ([]byte, error) {
	s.Root = &specs.Root{Path: rootfs}
	if s.Annotations == nil {
		s.Annotations = map[string]string{}
	}
	s.Annotations[annotationManager] = managerName
	s.Annotations[annotationCtrName] = rec.Name
	s.Annotations[annotationSandboxName] = rec.Pod
	s.Annotations[annotationSandboxNS] = rec.Namespace
	s.Annotations[annotationCriuConfig] = criuConf
	s.Linux.CgroupsPath = filepath.Join(defaultContainerCgroup, rec.ID)
	return json.MarshalIndent(s, "", "  ")
}

// checkNameFree refuses a restore that would shadow a running container.
func (r *Runtime) checkNameFree(ctx context.Context, rec *record) error {
	all, err := r.List(ctx)
	if err != nil {
		return err
	}
	for _, c := range all {
		if c.Namespace == rec.Namespace && c.Pod == rec.Pod && c.Name == rec.Name && c.State == runtime.StateRunning {
			return fmt.Errorf("container %s/%s/%s is running (%s): restore under another name or pod, or stop it first: %w",
				rec.Namespace, rec.Pod, rec.Name, short(c.ID), runtime.ErrExists)
		}
	}
	return nil
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
	imagesDir   string     // CRIU images
	rootfsDiff  string     // path of rootfs-diff.tar, "" if none
	deletedJSON []byte     // deleted.files
	lazy        *lazyInput // set for a lazy restore
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
	if len(in.deletedJSON) > 0 {
		return archive.RemoveDeleted(rootfs, in.deletedJSON)
	}
	return nil
}
