package embedded

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// The kubelet's container restart back-off: 10 s, doubling to 5 min, and
// forgotten once a container has not needed it for 10 min.
const (
	backoffInitial = 10 * time.Second
	backoffMax     = 5 * time.Minute
	backoffReset   = 2 * backoffMax
)

// backoff is one container's restart back-off, kept in the pod directory.
type backoff struct {
	Delay time.Duration `json:"delay"`
	Last  time.Time     `json:"last"` // when the back-off was last taken
}

const fileBackoff = "backoff.json"

// podsMu serializes the passes that create and remove pods' containers
// (SyncPods, RestartExited) within one agent.
var podsMu sync.Mutex

// shouldRestart applies a pod's restart policy to an exit code.
func shouldRestart(policy corev1.RestartPolicy, code int) bool {
	switch policy {
	case corev1.RestartPolicyAlways:
		return true
	case corev1.RestartPolicyOnFailure:
		return code != 0
	}
	return false
}

// nextRestart is when a container that exited at finished may start again,
// and the back-off that follows, as the kubelet computes them: the first
// restart is at once, then each waits the back-off since the exit.
func nextRestart(b *backoff, finished, now time.Time) (at time.Time, next backoff) {
	if b == nil || now.Sub(b.Last) > backoffReset {
		return finished, backoff{Delay: backoffInitial, Last: now}
	}
	at = finished.Add(b.Delay)
	d := 2 * b.Delay
	if d > backoffMax {
		d = backoffMax
	}
	return at, backoff{Delay: d, Last: now}
}

// RestartExited restarts the exited app containers of pods whose
// restartPolicy asks for it (Always, or OnFailure after a failure), with the
// kubelet's back-off. A container stopped on request is left stopped. The
// agent calls it about once a second.
func (r *Runtime) RestartExited(ctx context.Context) []error {
	podsMu.Lock()
	defer podsMu.Unlock()
	recs, err := r.loadRecords()
	if err != nil {
		return []error{err}
	}
	var errs []error
	now := time.Now()
	for _, rec := range recs {
		if rec.Kind != "" || rec.PodUID == "" || rec.Stopped {
			continue
		}
		// A lazy restore that ended before its memory was complete (its
		// pages could not be served, or a live migration was aborted) is a
		// failed restore: started again from the image, it would be a
		// second copy of the source.
		if m := r.Memory(rec.ID); m != nil && m.State != MemoryComplete {
			continue
		}
		var st exitStatus
		if readJSON(filepath.Join(r.containerDir(rec.ID), fileExit), &st) != nil {
			continue // running
		}
		// A restore that failed is not restarted from the image: that
		// would be another container than the one asked for.
		if st.Reason == reasonStartError && rec.RestoredFrom != "" {
			continue
		}
		p, pod, err := r.loadPod(rec.PodUID)
		if err != nil || !shouldRestart(pod.Spec.RestartPolicy, st.Code) {
			continue
		}
		var c *corev1.Container
		for i := range pod.Spec.Containers {
			if pod.Spec.Containers[i].Name == rec.Name {
				c = &pod.Spec.Containers[i]
			}
		}
		if c == nil {
			continue
		}
		offs := map[string]*backoff{}
		readJSON(filepath.Join(r.podDir(p.ID), fileBackoff), &offs)
		at, next := nextRestart(offs[rec.Name], st.FinishedAt, now)
		if now.Before(at) {
			continue
		}
		offs[rec.Name] = &next
		if err := writeJSONAtomic(filepath.Join(r.podDir(p.ID), fileBackoff), offs); err != nil {
			errs = append(errs, err)
			continue
		}
		// The new container first, so that the pod is never empty; then the
		// old one goes (Lookup prefers the running one meanwhile).
		prev := *rec
		prev.LastExit = &st
		if _, err := r.createContainerAs(ctx, p, pod, *c, nil, "", &prev); err != nil {
			errs = append(errs, fmt.Errorf("restart %s/%s/%s: %w", rec.Namespace, rec.Pod, rec.Name, err))
			continue
		}
		if err := r.removeContainer(ctx, rec.ID); err != nil {
			errs = append(errs, fmt.Errorf("restart %s/%s/%s: remove the exited container: %w", rec.Namespace, rec.Pod, rec.Name, err))
		}
	}
	return append(errs, r.advanceInit(ctx, recs, now)...)
}

// advanceInit moves on the pods whose init containers have not all
// succeeded yet (createPod stops at a failed one), as the kubelet does: a
// failed init container is restarted with the back-off unless the
// restartPolicy is Never (the pod has failed); once it succeeds the next
// one runs, and after the last the app containers start. It never waits
// for a container: the next pass sees how it ended.
func (r *Runtime) advanceInit(ctx context.Context, recs []*record, now time.Time) []error {
	byPod := map[string][]*record{}
	for _, rec := range recs {
		if rec.PodUID != "" {
			byPod[rec.PodUID] = append(byPod[rec.PodUID], rec)
		}
	}
	var errs []error
	for podID, podRecs := range byPod {
		p, pod, err := r.loadPod(podID)
		if err != nil || len(pod.Spec.InitContainers) == 0 {
			continue
		}
		if err := r.advancePodInit(ctx, p, pod, podRecs, now); err != nil {
			errs = append(errs, fmt.Errorf("pod %s/%s: %w", p.Namespace, p.Name, err))
		}
	}
	return errs
}

func (r *Runtime) advancePodInit(ctx context.Context, p *podRecord, pod *corev1.Pod, recs []*record, now time.Time) error {
	inits := map[string]*record{}
	for _, rec := range recs {
		switch rec.Kind {
		case "":
			return nil // the app containers run: the init phase is over
		case kindInit:
			inits[rec.Name] = rec
		}
	}
	for _, c := range pod.Spec.InitContainers {
		rec := inits[c.Name]
		if rec == nil {
			_, err := r.createContainerAs(ctx, p, pod, c, nil, kindInit)
			return err
		}
		var st exitStatus
		if readJSON(filepath.Join(r.containerDir(rec.ID), fileExit), &st) != nil {
			return nil // running
		}
		if st.Code == 0 {
			continue
		}
		if rec.Stopped || !shouldRestart(pod.Spec.RestartPolicy, st.Code) {
			return nil // the pod has failed
		}
		offs := map[string]*backoff{}
		readJSON(filepath.Join(r.podDir(p.ID), fileBackoff), &offs)
		key := "init:" + c.Name
		at, next := nextRestart(offs[key], st.FinishedAt, now)
		if now.Before(at) {
			return nil
		}
		offs[key] = &next
		if err := writeJSONAtomic(filepath.Join(r.podDir(p.ID), fileBackoff), offs); err != nil {
			return err
		}
		prev := *rec
		prev.LastExit = &st
		if _, err := r.createContainerAs(ctx, p, pod, c, nil, kindInit, &prev); err != nil {
			return fmt.Errorf("restart init container %s: %w", c.Name, err)
		}
		return r.removeContainer(ctx, rec.ID)
	}
	for _, c := range pod.Spec.Containers {
		if _, err := r.createContainer(ctx, p, pod, c, nil); err != nil {
			return err
		}
	}
	return nil
}
