package main

import (
	"context"
	"errors"
	"fmt"
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
	"k8s.io/component-base/featuregate"

	"github.com/ckpt-dev/ckpt/internal/archive"
	"github.com/ckpt-dev/ckpt/internal/auth"
	"github.com/ckpt-dev/ckpt/internal/checkpoint"
	"github.com/ckpt-dev/ckpt/internal/metrics"
	"github.com/ckpt-dev/ckpt/internal/runtime"
	"github.com/ckpt-dev/ckpt/internal/runtime/embedded"
	"github.com/ckpt-dev/ckpt/internal/server"
	"github.com/ckpt-dev/ckpt/internal/trust"
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
	podInfraImage    string
	clusterDomain    string
	restorePolicy    embedded.RestorePolicy
	trustedKeysFile  string
	allowUnsigned    bool
	inPlace          bool
	strictTimeout    bool
	verbosity        int
}

func newServeCommand(g *globalOptions) *cobra.Command {
	o := &serveOptions{auth: auth.DefaultConfig()}
	gate := server.NewFeatureGate()
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the node agent: the kubelet Checkpoint API and, with the embedded runtime, static pods",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runServe(cmd.Context(), g, o, gate)
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
	f.BoolVar(&o.strictTimeout, "checkpoint-timeout-strict", false, "a request's timeout is the deadline even when shorter than --runtime-request-timeout (default: the kubelet's rule, the larger of the two)")
	f.IntVarP(&o.verbosity, "v", "v", 0, "log verbosity: 2 logs every request (method, path, user, status, duration), 4 adds query, remote address and user agent; below 2 only 5xx answers")
	f.StringVar(&o.podManifestPath, "pod-manifest-path", "", "directory of static Pod manifests to run (embedded runtime)")
	f.DurationVar(&o.fileCheckFreq, "file-check-frequency", 20*time.Second, "how often to re-read --pod-manifest-path")
	f.StringVar(&o.criEndpoint, "container-runtime-endpoint", "", "CRI endpoint (e.g. unix:///run/containerd/containerd.sock); empty = the embedded runtime")
	f.IntVar(&o.retention.PerContainer, "checkpoint-retention-per-container", 0, "keep at most N archives per container (0 = no limit)")
	f.Int64Var(&o.retention.MaxBytes, "checkpoint-retention-max-bytes", 0, "keep at most this many bytes of archives (0 = no limit)")
	f.DurationVar(&o.retention.MaxAge, "checkpoint-retention-max-age", 0, "delete archives older than this (0 = keep)")
	f.BoolVar(&o.compress, "checkpoint-compress", false, "compress archives with zstd (.tar.zst)")
	f.StringVar(&o.recipientsFile, "checkpoint-encryption-recipients-file", "", "encrypt archives at rest to these age recipients (.tar.age)")
	f.StringVar(&o.identityFile, "checkpoint-encryption-identity-file", "", "age identities the agent uses to restore encrypted archives")
	f.StringVar(&o.podInfraImage, "pod-infra-container-image", embedded.DefaultPauseImage, "image of the pause process that holds each pod's namespaces (embedded runtime)")
	f.StringVar(&o.clusterDomain, "cluster-domain", "", "domain of a pod's hostname with spec.subdomain, as the kubelet's --cluster-domain")
	f.BoolVar(&o.restorePolicy.AllowHostPath, "restore-allow-host-path", false, "let a restored pod mount hostPath volumes")
	f.BoolVar(&o.restorePolicy.AllowPrivileged, "restore-allow-privileged", false, "let a restored pod run privileged containers")
	f.BoolVar(&o.restorePolicy.AllowAddedCapabilities, "restore-allow-added-capabilities", false, "let a restored pod add capabilities")
	f.BoolVar(&o.restorePolicy.AllowHostNetwork, "restore-allow-host-network", false, "let a restored pod use the host's network namespace")
	f.StringVar(&o.trustedKeysFile, "restore-trusted-keys", "", "restore archives signed by these keys (authorized_keys format, e.g. other nodes' <root-dir>/pki/"+trust.PubKeyFile+"); this node's own key is always trusted")
	f.BoolVar(&o.inPlace, "restore-in-place", true, "restore published plain archives without extracting their pages: they move from the archive into the held process through userfaultfd (needs `criu check --feature uffd-noncoop`; false: extract first, see docs/restore.md)")
	f.BoolVar(&o.allowUnsigned, "restore-allow-unsigned", false, "also restore unsigned archives (written by containerd, CRI-O or Podman, or by hand); signed archives must still verify")
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

func runServe(ctx context.Context, g *globalOptions, o *serveOptions, gate featuregate.FeatureGate) error {
	checkpointEnabled := gate.Enabled(server.ContainerCheckpoint)
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

	name, rt, closeBackend, err := openBackend(ctx, g, o, log)
	if err != nil {
		return err
	}
	defer closeBackend()
	caps := runtime.Discover(rt)
	log.Info("runtime backend", "name", name, "capabilities", caps.Names())

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := metrics.New(reg)
	metrics.RegisterFeatures(reg, []metrics.Feature{{Name: string(server.ContainerCheckpoint), Stage: "BETA", Enabled: checkpointEnabled}})
	key, err := trust.LoadOrCreateNodeKey(filepath.Join(g.rootDir, "pki"))
	if err != nil {
		return err
	}
	keys := trust.NewKeyring(key.PublicKey())
	if o.trustedKeysFile != "" {
		if err := keys.ReadKeysFile(o.trustedKeysFile); err != nil {
			return err
		}
	}
	log.Info("archives are signed with the node key", "key", trust.Fingerprint(key.PublicKey()),
		"trusted", strings.Join(keys.Fingerprints(), ","), "allowUnsigned", o.allowUnsigned)
	copts := checkpoint.Options{RootDir: g.rootDir, DefaultTimeout: o.requestTimeout, StrictTimeout: o.strictTimeout, Recorder: m,
		Retention: o.retention, Compress: o.compress,
		RetentionError: func(err error) { log.Error("retention after a checkpoint", "error", err) },
		Signer:         key, Trust: trust.Policy{Keys: keys, AllowUnsigned: o.allowUnsigned}, InPlaceRestore: o.inPlace}
	if o.recipientsFile != "" {
		if copts.Recipients, err = archive.ParseRecipientsFile(o.recipientsFile); err != nil {
			return err
		}
	}
	if copts.Identities, err = loadIdentities(o.identityFile); err != nil {
		return err
	}
	svc, err := checkpoint.New(rt, copts)
	if err != nil {
		return err
	}
	images, err := g.checkpointImages()
	if err != nil {
		return err
	}
	handler := server.NewWithArchives(server.Options{
		CheckpointEnabled: checkpointEnabled, DefaultTimeout: o.requestTimeout, Registry: reg,
		Requests: metrics.NewHTTP(reg), AccessLog: log, Verbosity: o.verbosity, UserFrom: auth.UserFrom,
		Images: imageArchives{images},
	}, svc, svc, guard, caps.Health)
	go retentionLoop(ctx, log, svc)

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
	}, svc, svc, auth.NewLocal(node), caps.Health), nil)
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
