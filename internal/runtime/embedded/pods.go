package embedded

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
)

// SyncPods makes the containers of manifest pods match the manifests, as the
// kubelet does for static pods: a container is created when its pod appears
// and removed when its pod goes away. ckpt does not restart containers that
// exit, and it never touches restored containers. One bad container does not
// stop the others; every failure is returned.
func (r *Runtime) SyncPods(ctx context.Context, pods []*corev1.Pod) []error {
	recs, err := r.loadRecords()
	if err != nil {
		return []error{err}
	}
	type key struct{ ns, pod, name string }
	have := map[key]*record{}
	for _, rec := range recs {
		if rec.Origin == originManifest {
			have[key{rec.Namespace, rec.Pod, rec.Name}] = rec
		}
	}
	var errs []error
	want := map[key]bool{}
	for _, pod := range pods {
		for _, c := range pod.Spec.Containers {
			k := key{pod.Namespace, pod.Name, c.Name}
			want[k] = true
			if _, ok := have[k]; ok {
				continue
			}
			if _, err := r.CreateFromPod(ctx, pod, c); err != nil {
				errs = append(errs, err)
			}
		}
	}
	for k, rec := range have {
		if want[k] {
			continue
		}
		if err := r.Remove(ctx, rec.ID); err != nil {
			errs = append(errs, fmt.Errorf("remove container of deleted pod %s/%s: %w", k.ns, k.pod, err))
		}
	}
	return errs
}
