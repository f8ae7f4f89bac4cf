package embedded

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	corev1 "k8s.io/api/core/v1"
)

// volumePaths maps each volume of a pod to its host path: emptyDirs live in
// the pod directory, hostPaths where they say.
func volumePaths(pod *corev1.Pod, podDir string) map[string]string {
	out := map[string]string{}
	for _, v := range pod.Spec.Volumes {
		switch {
		case v.EmptyDir != nil:
			out[v.Name] = filepath.Join(podDir, dirPodVolumes, v.Name)
		case v.HostPath != nil:
			out[v.Name] = v.HostPath.Path
		}
	}
	return out
}

// prepareVolumes creates the pod's emptyDirs (a tmpfs for medium Memory,
// bounded by sizeLimit) and checks its hostPaths as the kubelet does. With
// fsGroup, emptyDirs belong to that group and are setgid.
func (r *Runtime) prepareVolumes(pod *corev1.Pod, podDir string) error {
	var fsGroup *int64
	if sc := pod.Spec.SecurityContext; sc != nil {
		fsGroup = sc.FSGroup
	}
	for i, v := range pod.Spec.Volumes {
		f := fmt.Sprintf("spec.volumes[%d] (%s)", i, v.Name)
		switch {
		case v.EmptyDir != nil:
			p := filepath.Join(podDir, dirPodVolumes, v.Name)
			if err := os.Mkdir(p, 0o777); err != nil && !errors.Is(err, os.ErrExist) {
				return fmt.Errorf("%s: %w", f, err)
			}
			if v.EmptyDir.Medium == corev1.StorageMediumMemory {
				opts := "mode=0777"
				if l := v.EmptyDir.SizeLimit; l != nil && l.Value() > 0 {
					opts += fmt.Sprintf(",size=%d", l.Value())
				}
				if err := syscall.Mount("tmpfs", p, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, opts); err != nil {
					return fmt.Errorf("%s: mount tmpfs: %w", f, err)
				}
			}
			// The kubelet makes emptyDirs world-writable (0777).
			mode := os.FileMode(0o777)
			if fsGroup != nil {
				if err := os.Chown(p, -1, int(*fsGroup)); err != nil {
					return fmt.Errorf("%s: fsGroup: %w", f, err)
				}
				mode |= os.ModeSetgid
			}
			if err := os.Chmod(p, mode); err != nil {
				return fmt.Errorf("%s: %w", f, err)
			}
		case v.HostPath != nil:
			if err := checkHostPath(v.HostPath); err != nil {
				return fmt.Errorf("%s: %w", f, err)
			}
		}
	}
	return nil
}

// checkHostPath applies the kubelet's hostPath type checks, creating the
// path for the *OrCreate types.
func checkHostPath(h *corev1.HostPathVolumeSource) error {
	t := corev1.HostPathUnset
	if h.Type != nil {
		t = *h.Type
	}
	st, err := os.Stat(h.Path)
	exists := err == nil
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	is := func(want os.FileMode, what string) error {
		if !exists {
			return fmt.Errorf("hostPath type check failed: %s is not a %s (it does not exist)", h.Path, what)
		}
		if st.Mode().Type() != want {
			return fmt.Errorf("hostPath type check failed: %s is not a %s", h.Path, what)
		}
		return nil
	}
	switch t {
	case corev1.HostPathUnset:
		return nil
	case corev1.HostPathDirectoryOrCreate:
		if !exists {
			return os.MkdirAll(h.Path, 0o755)
		}
		return is(os.ModeDir, "directory")
	case corev1.HostPathDirectory:
		return is(os.ModeDir, "directory")
	case corev1.HostPathFileOrCreate:
		if !exists {
			if err := os.MkdirAll(filepath.Dir(h.Path), 0o755); err != nil {
				return err
			}
			f, err := os.OpenFile(h.Path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
			if err != nil {
				return err
			}
			return f.Close()
		}
		return is(0, "file")
	case corev1.HostPathFile:
		return is(0, "file")
	case corev1.HostPathSocket:
		return is(os.ModeSocket, "socket")
	case corev1.HostPathCharDev:
		return is(os.ModeDevice|os.ModeCharDevice, "character device")
	case corev1.HostPathBlockDev:
		return is(os.ModeDevice, "block device")
	}
	return fmt.Errorf("unknown hostPath type %q", t)
}

// checkSubPaths makes sure every subPath a container mounts exists inside its
// volume, without following a symlink out of it (the kubelet creates
// missing subPath directories the same way).
func checkSubPaths(c corev1.Container, vols map[string]string) error {
	for _, vm := range c.VolumeMounts {
		if vm.SubPath == "" {
			continue
		}
		root, err := os.OpenRoot(vols[vm.Name])
		if err != nil {
			return fmt.Errorf("volumeMounts %q: %w", vm.Name, err)
		}
		st, err := root.Lstat(vm.SubPath)
		switch {
		case errors.Is(err, os.ErrNotExist):
			err = root.MkdirAll(vm.SubPath, 0o777)
		case err == nil && st.Mode()&os.ModeSymlink != 0:
			err = fmt.Errorf("is a symlink")
		}
		root.Close()
		if err != nil {
			return fmt.Errorf("volumeMounts %q subPath %q: %w", vm.Name, vm.SubPath, err)
		}
	}
	return nil
}
