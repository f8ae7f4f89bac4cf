package embedded

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netns"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Probes run in the agent, as the kubelet runs them: exec through runc,
// httpGet and tcpSocket on 127.0.0.1 inside the pod's network namespace.
// A liveness probe that fails failureThreshold times in a row kills the
// container (its restart policy then applies); a readiness probe sets the
// READY column of `ckpt ps` (fileReady in the container directory).

const fileReady = "ready"

type probeState struct {
	started   time.Time
	last      time.Time
	failures  int
	successes int
}

// prober keeps the probes' state between passes.
type prober struct {
	mu    sync.Mutex
	state map[string]*probeState // container ID + "/" + kind
}

func probeDefaults(p *corev1.Probe) (period, timeout time.Duration, failure, success int) {
	period, timeout, failure, success = 10*time.Second, time.Second, 3, 1
	if p.PeriodSeconds > 0 {
		period = time.Duration(p.PeriodSeconds) * time.Second
	}
	if p.TimeoutSeconds > 0 {
		timeout = time.Duration(p.TimeoutSeconds) * time.Second
	}
	if p.FailureThreshold > 0 {
		failure = int(p.FailureThreshold)
	}
	if p.SuccessThreshold > 0 {
		success = int(p.SuccessThreshold)
	}
	return
}

// ProbeContainers runs the probes that are due. The agent calls it about
// once a second.
func (r *Runtime) ProbeContainers(ctx context.Context) []error {
	r.probes.mu.Lock()
	defer r.probes.mu.Unlock()
	if r.probes.state == nil {
		r.probes.state = map[string]*probeState{}
	}
	recs, err := r.loadRecords()
	if err != nil {
		return []error{err}
	}
	seen := map[string]bool{}
	var errs []error
	for _, rec := range recs {
		if rec.Kind != "" || rec.PodUID == "" {
			continue
		}
		c := r.container(ctx, rec)
		if c.State != "running" {
			continue
		}
		p, pod, err := r.loadPod(rec.PodUID)
		if err != nil {
			continue
		}
		var spec *corev1.Container
		for i := range pod.Spec.Containers {
			if pod.Spec.Containers[i].Name == rec.Name {
				spec = &pod.Spec.Containers[i]
			}
		}
		if spec == nil {
			continue
		}
		sb, err := r.sandboxOf(ctx, p, pod)
		if err != nil {
			continue
		}
		for kind, probe := range map[string]*corev1.Probe{"liveness": spec.LivenessProbe, "readiness": spec.ReadinessProbe} {
			if probe == nil {
				continue
			}
			key := rec.ID + "/" + kind
			seen[key] = true
			st := r.probes.state[key]
			if st == nil {
				st = &probeState{started: time.Now()}
				r.probes.state[key] = st
			}
			period, timeout, failure, success := probeDefaults(probe)
			now := time.Now()
			if now.Sub(st.started) < time.Duration(probe.InitialDelaySeconds)*time.Second || now.Sub(st.last) < period {
				continue
			}
			st.last = now
			if err := r.runProbe(ctx, rec.ID, sb, probe, timeout); err != nil {
				st.failures++
				st.successes = 0
			} else {
				st.successes++
				st.failures = 0
			}
			switch kind {
			case "liveness":
				if st.failures >= failure {
					delete(r.probes.state, key)
					// Killed, not stopped: the restart policy decides what follows.
					if err := r.runc.Kill(ctx, rec.ID, int(syscall.SIGKILL), nil); err != nil && !isGone(err) {
						errs = append(errs, fmt.Errorf("liveness probe of %s/%s/%s failed; kill: %w", rec.Namespace, rec.Pod, rec.Name, err))
					}
				}
			case "readiness":
				ready := filepath.Join(r.containerDir(rec.ID), fileReady)
				if st.successes >= success {
					os.WriteFile(ready, []byte("true"), 0o600)
				} else if st.failures >= failure {
					os.Remove(ready)
				}
			}
		}
	}
	for k := range r.probes.state {
		if !seen[k] {
			delete(r.probes.state, k)
		}
	}
	return errs
}

// runProbe runs one probe with its timeout.
func (r *Runtime) runProbe(ctx context.Context, id string, sb sandboxNS, p *corev1.Probe, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	switch {
	case p.Exec != nil:
		args := append([]string{"--root", r.runcRoot(), "exec", id}, p.Exec.Command...)
		return exec.CommandContext(ctx, r.cfg.Runc, args...).Run()
	case p.TCPSocket != nil:
		c, err := dialPod(sb, "tcp", p.TCPSocket.Port, timeout)
		if err != nil {
			return err
		}
		return c.Close()
	case p.HTTPGet != nil:
		c, err := dialPod(sb, "tcp", p.HTTPGet.Port, timeout)
		if err != nil {
			return err
		}
		tr := &http.Transport{DialContext: func(context.Context, string, string) (net.Conn, error) { return c, nil }}
		defer tr.CloseIdleConnections()
		path := p.HTTPGet.Path
		if path == "" {
			path = "/"
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://127.0.0.1:"+strconv.Itoa(p.HTTPGet.Port.IntValue())+path, nil)
		if err != nil {
			return err
		}
		for _, h := range p.HTTPGet.HTTPHeaders {
			req.Header.Set(h.Name, h.Value)
		}
		resp, err := (&http.Client{Transport: tr, Timeout: timeout}).Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode >= 400 {
			return fmt.Errorf("HTTP status %d", resp.StatusCode)
		}
		return nil
	}
	return fmt.Errorf("probe has no handler")
}

// dialPod connects to 127.0.0.1:port in the pod's network namespace (the
// host's with hostNetwork).
func dialPod(sb sandboxNS, network string, port intstr.IntOrString, timeout time.Duration) (net.Conn, error) {
	if port.Type != intstr.Int {
		return nil, fmt.Errorf("named ports are not supported")
	}
	if sb.HostNetwork {
		return net.DialTimeout(network, net.JoinHostPort("127.0.0.1", strconv.Itoa(port.IntValue())), timeout)
	}
	ns, err := netns.GetFromPid(sb.PausePid)
	if err != nil {
		return nil, err
	}
	f := &forwarder{ns: ns}
	defer f.Close()
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		res := result{err: fmt.Errorf("could not enter the pod's network namespace")}
		defer func() { ch <- res }()
		res.c, res.err = f.dialInside(network, port.IntValue())
	}()
	res := <-ch
	return res.c, res.err
}
