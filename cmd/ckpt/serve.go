package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"

	"github.com/ckpt-dev/ckpt/internal/archive"
	"github.com/ckpt-dev/ckpt/internal/auth"
	"github.com/ckpt-dev/ckpt/internal/checkpoint"
	"github.com/ckpt-dev/ckpt/internal/criuprobe"
	"github.com/ckpt-dev/ckpt/internal/metrics"
	"github.com/ckpt-dev/ckpt/internal/runtime"
	"github.com/ckpt-dev/ckpt/internal/runtime/cri"
	"github.com/ckpt-dev/ckpt/internal/runtime/embedded"
	"github.com/ckpt-dev/ckpt/internal/server"
)

func init() { register(newServeCommand) }

type serveOptions struct {
	address          string
	port             int
	plainHTTP        bool
	hostnameOverride string
	certDir          string
	tlsCertFile      string
	tlsKeyFile       string
	requestTimeout   time.Duration
	podManifestPath  string
	fileCheckFreq    time.Duration
	criEndpoint      string
	auth             auth.Config
	retention        checkpoint.Retention
	compress         bool
	recipientsFile   string
	identityFile     string
}

func newServeCommand(g *globalOptions) *cobra.Command {
	o := &serveOptions{auth: auth.DefaultConfig()}
	gate := server.NewFeatureGate()
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the node agent: the kubelet Checkpoint API and, with the embedded runtime, static pods",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runServe(cmd.Context(), g, o, gate.Enabled(server.ContainerCheckpoint))
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.address, "address", "0.0.0.0", "IP address to serve on")
	f.IntVar(&o.port, "port", 10250, "port to serve on")
	f.BoolVar(&o.plainHTTP, "plain-http", false, "serve plain HTTP instead of HTTPS (only on a loopback --address)")
	f.StringVar(&o.hostnameOverride, "hostname-override", "", "node name used for authorization and the self-signed certificate (default: hostname)")
	f.StringVar(&o.certDir, "cert-dir", "", "directory for the self-signed certificate when no --tls-cert-file is given (default <root-dir>/pki)")
	f.StringVar(&o.tlsCertFile, "tls-cert-file", "", "x509 certificate for HTTPS")
	f.StringVar(&o.tlsKeyFile, "tls-private-key-file", "", "private key matching --tls-cert-file")
	f.DurationVar(&o.requestTimeout, "runtime-request-timeout", 2*time.Minute, "default timeout of a checkpoint when the request gives none")
	f.StringVar(&o.podManifestPath, "pod-manifest-path", "", "directory of static Pod manifests to run (embedded runtime)")
	f.DurationVar(&o.fileCheckFreq, "file-check-frequency", 20*time.Second, "how often to re-read --pod-manifest-path")
	f.StringVar(&o.criEndpoint, "container-runtime-endpoint", "", "CRI endpoint (e.g. unix:///run/containerd/containerd.sock); empty = the embedded runtime")
	f.IntVar(&o.retention.PerContainer, "checkpoint-retention-per-container", 0, "keep at most N archives per container (0 = no limit)")
	f.Int64Var(&o.retention.MaxBytes, "checkpoint-retention-max-bytes", 0, "keep at most this many bytes of archives (0 = no limit)")
	f.DurationVar(&o.retention.MaxAge, "checkpoint-retention-max-age", 0, "delete archives older than this (0 = keep)")
	f.BoolVar(&o.compress, "checkpoint-compress", false, "compress archives with zstd (.tar.zst)")
	f.StringVar(&o.recipientsFile, "checkpoint-encryption-recipients-file", "", "encrypt archives at rest to these age recipients (.tar.age)")
	f.StringVar(&o.identityFile, "checkpoint-encryption-identity-file", "", "age identities the agent uses to restore encrypted archives")
	o.auth.AddFlags(f)
	gate.AddFlag(f)
	return cmd
}

func nodeName(override string) string {
	if override != "" {
		return strings.ToLower(override)
	}
	h, err := os.Hostname()
	if err != nil {
		return "localhost"
	}
	return strings.ToLower(h)
}

// backend is what serve needs of a runtime backend.
type backend interface {
	checkpoint.Runtime
	Healthy(ctx context.Context) error
}

func runServe(ctx context.Context, g *globalOptions, o *serveOptions, checkpointEnabled bool) error {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	addr := net.JoinHostPort(o.address, strconv.Itoa(o.port))
	if o.plainHTTP {
		if err := server.CheckPlainHTTPAddress(addr); err != nil {
			return err
		}
	}
	node := nodeName(o.hostnameOverride)
	o.auth.NodeName = node
	guard, err := auth.New(o.auth)
	if err != nil {
		return err
	}

	var rt backend
	var embeddedRT *embedded.Runtime
	var criRT *cri.Runtime
	if o.criEndpoint != "" {
		if o.podManifestPath != "" {
			return errors.New("--pod-manifest-path runs pods on the embedded runtime; it cannot be combined with --container-runtime-endpoint")
		}
		c, err := cri.New(ctx, o.criEndpoint)
		if err != nil {
			return err
		}
		defer c.Close()
		rt = c
		criRT = c
		log.Info("using CRI runtime", "endpoint", o.criEndpoint)
	} else {
		if embeddedRT, err = g.embeddedRuntime(); err != nil {
			return err
		}
		rt = embeddedHealth{embeddedRT}
		probeCtx, cancel := context.WithTimeout(ctx, time.Minute)
		err := criuprobe.Probe(probeCtx, embeddedRT.CriuPath())
		cancel()
		if err != nil {
			return fmt.Errorf("the embedded runtime needs a CRIU that dumps sockets (run hack/install-deps.sh, or use --container-runtime-endpoint): %w", err)
		}
		if err := embeddedRT.LockAgent(); err != nil {
			return err
		}
		for _, what := range embeddedRT.RecoverInterruptedDumps() {
			log.Warn("recovered from an interrupted checkpoint: " + what)
		}
		log.Info("using the embedded runtime (runc + CRIU)", "state", g.stateDir())
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := metrics.New(reg)
	copts := checkpoint.Options{RootDir: g.rootDir, DefaultTimeout: o.requestTimeout, Recorder: m,
		Retention: o.retention, Compress: o.compress}
	if o.recipientsFile != "" {
		if copts.Recipients, err = archive.ParseRecipientsFile(o.recipientsFile); err != nil {
			return err
		}
	}
	svc, err := checkpoint.New(rt, copts)
	if err != nil {
		return err
	}
	if embeddedRT != nil {
		ids, err := loadIdentities(o.identityFile)
		if err != nil {
			return err
		}
		svc.SetRestorer(embeddedRestorer{embeddedRT}, ids)
	} else {
		ids, err := loadIdentities(o.identityFile)
		if err != nil {
			return err
		}
		svc.SetRestorer(criRestorer{criRT, svc.StagingDir()}, ids)
	}
	handler := server.NewWithArchives(server.Options{
		CheckpointEnabled: checkpointEnabled, DefaultTimeout: o.requestTimeout, Registry: reg,
	}, svc, svc, guard, rt)
	go retentionLoop(ctx, log, svc)

	if embeddedRT != nil && o.podManifestPath != "" {
		go syncPodsLoop(ctx, log, embeddedRT, o.podManifestPath, o.fileCheckFreq)
	}

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	scheme := "https"
	var srv *http.Server
	if o.plainHTTP {
		scheme = "http"
		srv = server.NewHTTPServer(addr, handler, nil)
	} else {
		certDir := o.certDir
		if certDir == "" {
			certDir = filepath.Join(g.rootDir, "pki")
		}
		tlsCfg, err := server.TLSConfig(o.tlsCertFile, o.tlsKeyFile, certDir, node, guard.ClientCAs())
		if err != nil {
			ln.Close()
			return err
		}
		srv = server.NewHTTPServer(addr, handler, tlsCfg)
	}
	// The local socket: the same API for root on the node, authenticated
	// by the peer's process credentials instead of tokens or certificates.
	local, err := server.ListenUnix(g.socketPath())
	if err != nil {
		ln.Close()
		return err
	}
	localSrv := server.NewHTTPServer("", server.NewWithArchives(server.Options{
		CheckpointEnabled: checkpointEnabled, DefaultTimeout: o.requestTimeout, Registry: reg,
	}, svc, svc, auth.NewLocal(node), rt), nil)
	localSrv.ConnContext = auth.ConnContext
	log.Info("serving the checkpoint API", "url", fmt.Sprintf("%s://%s", scheme, ln.Addr()), "node", node,
		"socket", g.socketPath(), "checkpoints", svc.Dir(), "ContainerCheckpoint", checkpointEnabled)

	errc := make(chan error, 2)
	go func() {
		if o.plainHTTP {
			errc <- srv.Serve(ln)
		} else {
			errc <- srv.ServeTLS(ln, "", "")
		}
	}()
	go func() { errc <- localSrv.Serve(local) }()
	var serveErr error
	select {
	case serveErr = <-errc:
	case <-ctx.Done():
		log.Info("shutting down; containers keep running")
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = errors.Join(srv.Shutdown(shutdownCtx), localSrv.Shutdown(shutdownCtx))
	if serveErr != nil {
		return serveErr
	}
	return err
}

// embeddedRestorer adapts the embedded runtime to the service.
type embeddedRestorer struct{ rt *embedded.Runtime }

func (e embeddedRestorer) Restore(ctx context.Context, tarStream io.Reader, target runtime.Ref, source string) (runtime.Container, error) {
	return e.rt.Restore(ctx, tarStream, embedded.RestoreOptions{
		Namespace: target.Namespace, Pod: target.Pod, Name: target.Container, Source: source,
	})
}

// RestoreLazy restores with memory served on demand from the archive file.
func (e embeddedRestorer) RestoreLazy(ctx context.Context, f *os.File, target runtime.Ref, source string) (runtime.Container, error) {
	return e.rt.RestoreLazy(ctx, f, embedded.RestoreOptions{
		Namespace: target.Namespace, Pod: target.Pod, Name: target.Container, Source: source,
	})
}

// RestoreInPlace restores fully with the pages served from the archive file.
func (e embeddedRestorer) RestoreInPlace(ctx context.Context, f *os.File, target runtime.Ref, source string) (runtime.Container, error) {
	return e.rt.RestoreInPlace(ctx, f, embedded.RestoreOptions{
		Namespace: target.Namespace, Pod: target.Pod, Name: target.Container, Source: source,
	})
}

// criRestorer restores through CRI, which takes an archive file: the
// stream is written to the staging directory first.
type criRestorer struct {
	rt      *cri.Runtime
	staging string
}

func (c criRestorer) Restore(ctx context.Context, tarStream io.Reader, target runtime.Ref, source string) (runtime.Container, error) {
	if target.Namespace == "" || target.Pod == "" || target.Container == "" {
		return runtime.Container{}, fmt.Errorf("restore %s through CRI: name the target namespace, pod and container: %w", source, runtime.ErrInvalid)
	}
	dir, err := os.MkdirTemp(c.staging, "restore-")
	if err != nil {
		return runtime.Container{}, err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "archive.tar")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return runtime.Container{}, err
	}
	_, err = io.Copy(f, tarStream)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return runtime.Container{}, fmt.Errorf("restore %s: spool archive: %w", source, err)
	}
	return c.rt.Restore(ctx, path, target)
}

// retentionLoop applies the retention policy every minute, besides after
// every checkpoint.
func retentionLoop(ctx context.Context, log *slog.Logger, svc *checkpoint.Service) {
	for {
		if deleted, err := svc.ApplyRetention(); err != nil {
			log.Error("retention", "error", err)
		} else if len(deleted) > 0 {
			log.Info("retention deleted archives", "names", deleted)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Minute):
		}
	}
}

// embeddedHealth gives the embedded runtime the health check serve needs.
type embeddedHealth struct{ *embedded.Runtime }

func (e embeddedHealth) Healthy(ctx context.Context) error {
	_, err := e.List(ctx)
	return err
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
