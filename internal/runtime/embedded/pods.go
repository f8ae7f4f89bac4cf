package embedded

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/ckpt-dev/ckpt/internal/runtime"
)

// Annotations the kubelet puts on a static pod.
const (
	annotationConfigHash   = "kubernetes.io/config.hash"
	annotationConfigSource = "kubernetes.io/config.source"
	annotationConfigSeen   = "kubernetes.io/config.seen"
)

// StaticPod returns a manifest's pod as the kubelet runs it: named
// <name>-<node>, its UID the hash of the manifest and the node, with the
// kubelet's config annotations. The hash also tells a changed manifest.
func StaticPod(pod *corev1.Pod, node string) (*corev1.Pod, string) {
	p := pod.DeepCopy()
	data, _ := json.Marshal(p)
	sum := sha256.Sum256(append(append(data, 0), node...))
	hash := hex.EncodeToString(sum[:16])
	if node != "" {
		p.Name = pod.Name + "-" + node
	}
	p.UID = types.UID(hash)
	if p.Annotations == nil {
		p.Annotations = map[string]string{}
	}
	p.Annotations[annotationConfigHash] = hash
	p.Annotations[annotationConfigSource] = "file"
	p.Annotations[annotationConfigSeen] = time.Now().UTC().Format(time.RFC3339Nano)
	return p, hash
}

// SyncPods makes the running pods match the manifests, as the kubelet does
// for static pods: a pod is created when its manifest appears, created
// again when its manifest changes, and removed when it goes away. It
// restarts exited containers in RestartExited. A pod name belongs to one pod: a
// manifest pod whose name a restored pod holds is not started. One bad pod
// does not stop the others; every failure is returned.
func (r *Runtime) SyncPods(ctx context.Context, manifests []*corev1.Pod) []error {
	podsMu.Lock()
	defer podsMu.Unlock()
	pods, err := r.loadPods()
	if err != nil {
		return []error{err}
	}
	var errs []error
	r.removeLegacyContainers(ctx, &errs)
	errs = append(errs, r.RemoveEmptyPods(ctx, time.Minute)...)
	type key struct{ ns, name string }
	have := map[key]*podRecord{}
	for _, p := range pods {
		have[key{p.Namespace, p.Name}] = p
	}
	want := map[key]bool{}
	for _, m := range manifests {
		pod, hash := StaticPod(m, r.cfg.NodeName)
		k := key{pod.Namespace, pod.Name}
		want[k] = true
		if p, ok := have[k]; ok {
			if p.Origin != originManifest {
				errs = append(errs, fmt.Errorf("pod %s/%s: the name is held by a restored pod (restored from an archive); remove it (ckpt rm) or restore it under another name: %w",
					pod.Namespace, pod.Name, runtime.ErrExists))
				continue
			}
			if p.Hash == hash {
				continue
			}
			// The manifest changed: the kubelet kills the pod and creates it anew.
			if err := r.removePod(ctx, p); err != nil {
				errs = append(errs, fmt.Errorf("recreate changed pod %s/%s: %w", pod.Namespace, pod.Name, err))
				continue
			}
		}
		if _, _, err := r.createPod(ctx, pod, originManifest, hash, nil, nil); err != nil {
			errs = append(errs, err)
		}
	}
	for k, p := range have {
		if p.Origin == originManifest && !want[k] {
			if err := r.removePod(ctx, p); err != nil {
				errs = append(errs, fmt.Errorf("remove deleted pod %s/%s: %w", k.ns, k.name, err))
			}
		}
	}
	return errs
}

// removeLegacyContainers removes manifest containers made before pods had
// sandboxes; their pods are created again with one.
func (r *Runtime) removeLegacyContainers(ctx context.Context, errs *[]error) {
	recs, _ := r.loadRecords()
	for _, rec := range recs {
		if rec.Origin == originManifest && rec.PodUID == "" {
			if err := r.removeContainer(ctx, rec.ID); err != nil {
				*errs = append(*errs, err)
			}
		}
	}
}

// restoreInputs maps container names to what restores them; nil creates
// every container fresh.
type restoreInputs map[string]*restoreInput

// createPod starts a pod: its sandbox, then each container. A pod that
// fails to start leaves nothing behind. volumes maps emptyDir names to the
// tar of their content (a pod restore), applied before any container runs.
func (r *Runtime) createPod(ctx context.Context, pod *corev1.Pod, origin, hash string, restore restoreInputs, volumes map[string]string) (_ *podRecord, out []runtime.Container, err error) {
	// Every image first: a pod that cannot start makes no sandbox.
	for _, c := range append(append([]corev1.Container(nil), pod.Spec.InitContainers...), pod.Spec.Containers...) {
		if _, err := r.images.Resolve(c.Image); err != nil {
			return nil, nil, fmt.Errorf("create container %s/%s/%s: %w", pod.Namespace, pod.Name, c.Name, err)
		}
	}
	var ports []corev1.ContainerPort
	for _, c := range pod.Spec.Containers {
		if restore == nil || restore[c.Name] != nil {
			ports = append(ports, c.Ports...)
		}
	}
	p, err := r.createSandbox(ctx, pod, origin, hash, ports)
	if err != nil {
		return nil, nil, err
	}
	defer func() {
		if err != nil {
			r.removePod(context.WithoutCancel(ctx), p)
		}
	}()
	if err := r.fillVolumes(pod, p, volumes); err != nil {
		return nil, nil, err
	}
	if restore == nil {
		done, err := r.runInitContainers(ctx, p, pod)
		if err != nil {
			return nil, nil, err
		}
		if !done {
			return p, nil, nil // an init container failed: the pod stays, failed, as the kubelet's
		}
	}
	for _, c := range pod.Spec.Containers {
		var in *restoreInput
		if restore != nil {
			if in = restore[c.Name]; in == nil {
				continue
			}
		}
		ctr, err := r.createContainer(ctx, p, pod, c, in)
		if err != nil {
			return nil, nil, err
		}
		out = append(out, ctr)
	}
	return p, out, nil
}

// createContainer creates (or restores) one container in pod p's sandbox.
func (r *Runtime) createContainer(ctx context.Context, p *podRecord, pod *corev1.Pod, c corev1.Container, restore *restoreInput) (runtime.Container, error) {
	return r.createContainerAs(ctx, p, pod, c, restore, "")
}

func (r *Runtime) createContainerAs(ctx context.Context, p *podRecord, pod *corev1.Pod, c corev1.Container, restore *restoreInput, kind string, prev ...*record) (runtime.Container, error) {
	verb := "create"
	if restore != nil {
		verb = "restore"
	}
	fail := func(err error) (runtime.Container, error) {
		return runtime.Container{}, fmt.Errorf("%s container %s/%s/%s: %w", verb, pod.Namespace, pod.Name, c.Name, err)
	}
	img, err := r.images.Resolve(c.Image)
	if err != nil {
		return fail(err)
	}
	sb, err := r.sandboxOf(ctx, p, pod)
	if err != nil {
		return fail(err)
	}
	vols := volumePaths(pod, r.podDir(p.ID))
	if err := checkSubPaths(c, vols); err != nil {
		return fail(err)
	}
	rec := &record{
		ID: newID(), Namespace: pod.Namespace, Pod: pod.Name, Name: c.Name,
		Image: c.Image, ImageID: img.ID, Origin: p.Origin, CreatedAt: time.Now().UTC(), PodUID: p.ID,
		PodAnnotations: pod.Annotations, Kind: kind, HasReadiness: c.ReadinessProbe != nil,
	}
	for _, old := range prev { // a restart: count it, and say how the last run ended
		rec.Restarts, rec.LastExit = old.Restarts+1, old.LastExit
	}
	if restore != nil {
		rec.CreatedAt, rec.RestoredFrom, rec.RestoredAt = restore.createdAt, restore.source, time.Now().UTC()
	}
	ctr, err := r.create(ctx, rec, img, func(rootfs, criuConf string) ([]byte, error) {
		termLog := filepath.Join(r.containerDir(rec.ID), "termination-log")
		if err := os.WriteFile(termLog, nil, 0o644); err != nil {
			return nil, err
		}
		in := specInput{
			Rec: rec, Pod: pod, Container: c, Image: img, Rootfs: rootfs, CriuConfig: criuConf,
			Sandbox: sb, Volumes: vols, TerminationLog: termLog,
		}
		if restore != nil {
			if err := restore.binds.prepare(r.containerDir(rec.ID), &in); err != nil {
				return nil, err
			}
		}
		s, err := buildContainerSpec(in)
		if err != nil {
			return nil, err
		}
		data, err := marshalSpec(s)
		if err != nil || restore == nil || r.cfg.CheckImages == nil {
			return data, err
		}
		// CRIU runs as root on these images: check them against the
		// prepared root and the spec the container gets.
		return data, r.cfg.CheckImages(restore.imagesDir, rootfs, boundingCaps(data))
	}, restore, nil)
	if err != nil {
		return fail(err)
	}
	return ctr, nil
}

// podOf returns the pod a container runs in.
func (r *Runtime) podOf(rec *record) (*podRecord, *corev1.Pod, error) {
	if rec.PodUID == "" {
		return nil, nil, errors.New("the container has no pod sandbox")
	}
	return r.loadPod(rec.PodUID)
}

// runInitContainers runs the pod's init containers one by one, each to
// completion, before the app containers start. A failed one stops it (done
// is false): with restartPolicy Never the pod has failed, as the kubelet
// has it, and the app containers never start; otherwise RestartExited
// (advanceInit) restarts it with the back-off and goes on from there.
// The exited init containers stay, so that `ckpt ps` shows how they ended.
func (r *Runtime) runInitContainers(ctx context.Context, p *podRecord, pod *corev1.Pod) (done bool, err error) {
	for _, c := range pod.Spec.InitContainers {
		ctr, err := r.createContainerAs(ctx, p, pod, c, nil, kindInit)
		if err != nil {
			return false, err
		}
		st, err := r.waitExited(ctx, ctr.ID)
		if err != nil {
			return false, fmt.Errorf("init container %s/%s/%s: %w", pod.Namespace, pod.Name, c.Name, err)
		}
		if st.Code != 0 {
			return false, nil
		}
	}
	return true, nil
}

// waitExited waits for a container to exit and returns how it ended.
func (r *Runtime) waitExited(ctx context.Context, id string) (exitStatus, error) {
	var st exitStatus
	for {
		if err := readJSON(filepath.Join(r.containerDir(id), fileExit), &st); err == nil {
			return st, nil
		}
		select {
		case <-ctx.Done():
			return st, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
