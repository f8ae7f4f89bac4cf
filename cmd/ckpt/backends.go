package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ckpt-dev/ckpt/internal/criuprobe"
	"github.com/ckpt-dev/ckpt/internal/runtime"
	"github.com/ckpt-dev/ckpt/internal/runtime/cri"
	"github.com/ckpt-dev/ckpt/internal/runtime/embedded"
)

// backendEntry is one runtime backend serve can run on. Adding a backend
// is its folder under internal/runtime plus one line in backends.
type backendEntry struct {
	name string
	// selected reports whether the flags ask for this backend; the first
	// selected entry is used.
	selected func(o *serveOptions) bool
	// open starts the backend; close is called when serve ends.
	open func(ctx context.Context, g *globalOptions, o *serveOptions, log *slog.Logger) (b runtime.Backend, close func(), err error)
}

var backends = []backendEntry{
	{"cri", func(o *serveOptions) bool { return o.criEndpoint != "" }, openCRI},
	{"embedded", func(*serveOptions) bool { return true }, openEmbedded},
}

// openBackend opens the backend the flags select.
func openBackend(ctx context.Context, g *globalOptions, o *serveOptions, log *slog.Logger) (string, runtime.Backend, func(), error) {
	for _, e := range backends {
		if e.selected(o) {
			b, closeFn, err := e.open(ctx, g, o, log)
			return e.name, b, closeFn, err
		}
	}
	return "", nil, nil, errors.New("no runtime backend selected")
}

func openCRI(ctx context.Context, _ *globalOptions, o *serveOptions, log *slog.Logger) (runtime.Backend, func(), error) {
	if o.podManifestPath != "" {
		return nil, nil, errors.New("--pod-manifest-path runs pods on the embedded runtime; it cannot be combined with --container-runtime-endpoint")
	}
	c, err := cri.New(ctx, o.criEndpoint)
	if err != nil {
		return nil, nil, err
	}
	log.Info("using CRI runtime", "endpoint", o.criEndpoint)
	return c, func() { c.Close() }, nil
}

func openEmbedded(ctx context.Context, g *globalOptions, o *serveOptions, log *slog.Logger) (runtime.Backend, func(), error) {
	rt, err := g.embeddedRuntime(func(c *embedded.Config) {
		c.NodeName, c.PauseImage, c.ClusterDomain = nodeName(o.hostnameOverride), o.podInfraImage, o.clusterDomain
		c.RestorePolicy = o.restorePolicy
	})
	if err != nil {
		return nil, nil, err
	}
	probeCtx, cancel := context.WithTimeout(ctx, time.Minute)
	err = criuprobe.Cached(probeCtx, rt.CriuPath(), criuprobe.DefaultCacheDir)
	cancel()
	if err != nil {
		return nil, nil, fmt.Errorf("the embedded runtime needs a CRIU that dumps sockets (run hack/install-deps.sh, or use --container-runtime-endpoint): %w", err)
	}
	if o.inPlace {
		uffdCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		if err := criuprobe.CachedUserfaultfd(uffdCtx, rt.CriuPath(), criuprobe.DefaultCacheDir); err != nil {
			log.Warn("full restores extract their archive: in-place restore needs userfaultfd", "error", err)
			o.inPlace = false
		}
		cancel()
	}
	if err := rt.LockAgent(); err != nil {
		return nil, nil, err
	}
	for _, what := range rt.RecoverInterruptedDumps() {
		log.Warn("recovered from an interrupted checkpoint: " + what)
	}
	log.Info("using the embedded runtime (runc + CRIU)", "state", g.stateDir())
	if o.podManifestPath != "" {
		go syncPodsLoop(ctx, log, rt, o.podManifestPath, o.fileCheckFreq)
	}
	go restartLoop(ctx, log, rt)
	return rt, func() {}, nil
}

// syncPodsLoop runs the static pods and re-reads their manifests.
func syncPodsLoop(ctx context.Context, log *slog.Logger, rt *embedded.Runtime, dir string, every time.Duration) {
	reported := map[string]string{}
	lastFailing := map[string]bool{}
	for {
		pods, bad := embedded.LoadManifests(dir)
		for _, e := range bad {
			if reported[e.File] != e.Err.Error() {
				log.Error("skipping pod manifest", "file", e.File, "error", e.Err)
				reported[e.File] = e.Err.Error()
			}
		}
		// Report each distinct failure once, not at every pass.
		failing := map[string]bool{}
		for _, err := range rt.SyncPods(ctx, pods) {
			failing[err.Error()] = true
			if !lastFailing[err.Error()] {
				log.Error("pod sync", "error", err)
			}
		}
		lastFailing = failing
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
	}
}

// restartLoop runs the containers' probes and applies the pods' restart
// policies once a second.
func restartLoop(ctx context.Context, log *slog.Logger, rt *embedded.Runtime) {
	last := map[string]bool{}
	for {
		now := map[string]bool{}
		errs := append(rt.ProbeContainers(ctx), rt.RestartExited(ctx)...)
		for _, err := range errs {
			now[err.Error()] = true
			if !last[err.Error()] {
				log.Error("restart", "error", err)
			}
		}
		last = now
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}
