package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/ckpt-dev/ckpt/pkg/client"
)

// Ways to reach a node.
const (
	// viaProxy: through the API server's node proxy (the kubelet) or pod
	// proxy (the ckpt agent). The API server authorizes the user
	// (nodes/proxy, pods/proxy); the node sees the API server.
	viaProxy = "proxy"
	// viaNode: straight to the node's address with the user's own
	// credentials; the kubelet or ckpt authorizes them (nodes/checkpoint,
	// nodes/restore) through the API server.
	viaNode = "node"
)

type options struct {
	kubeconfig     string
	context        string
	ns             string
	token          string
	via            string
	agentNamespace string
	agentSelector  string
	agentPort      int
	nodeCAFile     string
	addressTypes   []string
	nodeInsecure   bool
	stdout, stderr io.Writer
}

func newRootCommand(stdout, stderr io.Writer) *cobra.Command {
	o := &options{stdout: stdout, stderr: stderr}
	var container string
	var timeout time.Duration
	root := &cobra.Command{
		Use:   "kubectl-checkpoint POD [-c CONTAINER] [-n NAMESPACE]",
		Short: "Checkpoint a pod's container on its node, and manage the archives of the ckpt agent there",
		Long: `kubectl checkpoint POD finds the pod's node and checkpoints the container
through the API server's node proxy (POST /api/v1/nodes/NODE/proxy/checkpoint/NS/POD/CTR),
as the kubelet's Checkpoint API is called; it prints the archive's path on the node.

  --via=proxy (default)  the API server authorizes you for nodes/proxy (create)
  --via=node             straight to the node's kubelet with your credentials;
                         the kubelet authorizes nodes/checkpoint (create)

ls, get and restore talk to the ckpt agent (deploy/) on a node: by default
straight to its port on the node's address with your credentials, which the
agent authorizes (nodes/checkpoint list/get, nodes/restore); --via=proxy goes
through the API server's pod proxy, which authorizes pods/proxy but does not
pass your identity on to the agent.`,
		Args:          cobra.ExactArgs(1),
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.checkpoint(cmd.Context(), args[0], container, timeout)
		},
	}
	root.Flags().StringVarP(&container, "container", "c", "", "container (default: the pod's only container, or its kubectl.kubernetes.io/default-container)")
	root.Flags().DurationVar(&timeout, "timeout", 0, "checkpoint timeout sent to the node (0: the node's default)")
	pf := root.PersistentFlags()
	pf.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
	pf.StringVar(&o.context, "context", "", "kubeconfig context (default: the current one)")
	pf.StringVarP(&o.ns, "namespace", "n", "", "namespace of the pod (default: the context's)")
	pf.StringVar(&o.token, "token", "", "bearer token instead of the kubeconfig's credentials")
	pf.StringVar(&o.via, "via", "", "how to reach the node: proxy (the API server's node or pod proxy) or node (its address, with your credentials); default: proxy to checkpoint, node for ls, get and restore")
	pf.StringVar(&o.agentNamespace, "agent-namespace", "ckpt-system", "namespace of the ckpt DaemonSet")
	pf.StringVar(&o.agentSelector, "agent-selector", "app.kubernetes.io/name=ckpt", "label selector of the ckpt agent pods")
	pf.IntVar(&o.agentPort, "agent-port", 0, "ckpt agent port (default: the agent container's port named api)")
	pf.StringSliceVar(&o.addressTypes, "node-address-types", []string{"InternalIP", "ExternalIP", "Hostname"},
		"with --via=node: which node address to use, in order of preference (like kube-apiserver's --kubelet-preferred-address-types)")
	pf.StringVar(&o.nodeCAFile, "node-cacert", "", "with --via=node: CA bundle for the node's serving certificate (default: the kubeconfig's CA)")
	pf.BoolVar(&o.nodeInsecure, "node-insecure-skip-tls-verify", false, "with --via=node: do not verify the node's certificate (self-signed kubelets)")
	root.AddCommand(o.lsCommand(), o.getCommand(), o.restoreCommand())
	return root
}

func (o *options) restConfig() (*rest.Config, error) {
	if o.via != "" && o.via != viaProxy && o.via != viaNode {
		return nil, fmt.Errorf("--via %q: want proxy or node", o.via)
	}
	cfg, err := o.loader().ClientConfig()
	if err != nil {
		return nil, err
	}
	if o.token != "" {
		// --token is who the caller is: no client certificate, basic
		// credentials or exec plugin from the kubeconfig alongside it.
		cfg.CertFile, cfg.KeyFile, cfg.CertData, cfg.KeyData = "", "", nil, nil
		cfg.Username, cfg.Password, cfg.ExecProvider, cfg.AuthProvider = "", "", nil, nil
		cfg.BearerToken, cfg.BearerTokenFile = o.token, ""
	}
	return cfg, nil
}

func (o *options) loader() clientcmd.ClientConfig {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = o.kubeconfig
	return clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules,
		&clientcmd.ConfigOverrides{CurrentContext: o.context, Context: clientcmdapi.Context{Namespace: o.ns},
			AuthInfo: clientcmdapi.AuthInfo{Token: o.token}})
}

func (o *options) namespace() (string, error) {
	ns, _, err := o.loader().Namespace()
	return ns, err
}

// nodeClient is a ckpt API client for base on node, over the API
// server's proxy path (proxyPath) or straight to hostPort.
func (o *options) apiClient(cfg *rest.Config, via, proxyPath, hostPort string) (*client.Client, error) {
	if via == viaProxy {
		rt, err := rest.TransportFor(cfg)
		if err != nil {
			return nil, err
		}
		return client.New(client.Config{Server: cfg.Host + proxyPath, Transport: rt})
	}
	direct := rest.CopyConfig(cfg)
	if o.nodeCAFile != "" {
		direct.TLSClientConfig.CAFile, direct.TLSClientConfig.CAData = o.nodeCAFile, nil
	}
	if o.nodeInsecure {
		direct.TLSClientConfig.Insecure = true
		direct.TLSClientConfig.CAFile, direct.TLSClientConfig.CAData = "", nil
	}
	// The node's certificate names the node's address, not the API server.
	direct.TLSClientConfig.ServerName = ""
	rt, err := rest.TransportFor(direct)
	if err != nil {
		return nil, err
	}
	return client.New(client.Config{Server: "https://" + hostPort, Transport: rt})
}

// nodeAddress is the node's first address of the preferred types.
func nodeAddress(n *corev1.Node, types []string) (string, error) {
	for _, t := range types {
		for _, a := range n.Status.Addresses {
			if string(a.Type) == t && a.Address != "" {
				return a.Address, nil
			}
		}
	}
	return "", fmt.Errorf("node %s has no address of the types %v", n.Name, types)
}

func (o *options) checkpoint(ctx context.Context, pod, container string, timeout time.Duration) error {
	cfg, err := o.restConfig()
	if err != nil {
		return err
	}
	ns, err := o.namespace()
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	p, err := cs.CoreV1().Pods(ns).Get(ctx, pod, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if container, err = pickContainer(p, container); err != nil {
		return err
	}
	if p.Spec.NodeName == "" {
		return fmt.Errorf("pod %s/%s is not scheduled to a node yet", ns, pod)
	}
	via := o.via
	if via == "" {
		via = viaProxy
	}
	var hostPort string
	if via == viaNode {
		n, err := cs.CoreV1().Nodes().Get(ctx, p.Spec.NodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		addr, err := nodeAddress(n, o.addressTypes)
		if err != nil {
			return err
		}
		hostPort = net.JoinHostPort(addr, strconv.Itoa(int(n.Status.DaemonEndpoints.KubeletEndpoint.Port)))
	}
	c, err := o.apiClient(cfg, via, "/api/v1/nodes/"+p.Spec.NodeName+"/proxy", hostPort)
	if err != nil {
		return err
	}
	ref := client.Ref{Namespace: ns, Pod: pod, Container: container}
	stop := o.spinner(fmt.Sprintf("checkpointing %s on node %s", ref, p.Spec.NodeName))
	path, err := c.Checkpoint(ctx, ref, client.CheckpointOptions{Timeout: timeout})
	stop(err == nil)
	if err != nil {
		return err
	}
	fmt.Fprintf(o.stdout, "%s\n", path)
	fmt.Fprintf(o.stderr, "archive on node %s: %s\n", p.Spec.NodeName, path)
	return nil
}

// pickContainer is -c, or the default container as kubectl picks it.
func pickContainer(p *corev1.Pod, name string) (string, error) {
	if name != "" {
		for _, c := range append(append([]corev1.Container{}, p.Spec.Containers...), p.Spec.InitContainers...) {
			if c.Name == name {
				return name, nil
			}
		}
		for _, c := range p.Spec.EphemeralContainers {
			if c.Name == name {
				return name, nil
			}
		}
		return "", fmt.Errorf("pod %s/%s has no container %q", p.Namespace, p.Name, name)
	}
	if d := p.Annotations["kubectl.kubernetes.io/default-container"]; d != "" {
		return d, nil
	}
	if len(p.Spec.Containers) == 1 {
		return p.Spec.Containers[0].Name, nil
	}
	var names []string
	for _, c := range p.Spec.Containers {
		names = append(names, c.Name)
	}
	return "", fmt.Errorf("pod %s/%s has %d containers %v: choose one with -c", p.Namespace, p.Name, len(names), names)
}

// agent finds the ckpt agent pod on node (for the pod proxy) and its port.
func (o *options) agent(ctx context.Context, cs kubernetes.Interface, node string) (*corev1.Pod, int, error) {
	pods, err := cs.CoreV1().Pods(o.agentNamespace).List(ctx, metav1.ListOptions{
		LabelSelector: o.agentSelector, FieldSelector: "spec.nodeName=" + node,
	})
	if err != nil {
		return nil, 0, err
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.Status.Phase != corev1.PodRunning {
			continue
		}
		port := o.agentPort
		for _, c := range p.Spec.Containers {
			for _, cp := range c.Ports {
				if port == 0 && cp.Name == "api" {
					port = int(cp.ContainerPort)
				}
			}
		}
		if port == 0 {
			return nil, 0, fmt.Errorf("agent pod %s/%s has no port named api; give --agent-port", p.Namespace, p.Name)
		}
		return p, port, nil
	}
	return nil, 0, fmt.Errorf("no running ckpt agent (%s in namespace %s) on node %s", o.agentSelector, o.agentNamespace, node)
}

// agentClient is a client of the ckpt agent on the node given by --node
// or by the pod named in args.
func (o *options) agentClient(ctx context.Context, node, pod string) (*client.Client, string, error) {
	cfg, err := o.restConfig()
	if err != nil {
		return nil, "", err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, "", err
	}
	if node == "" {
		if pod == "" {
			return nil, "", errors.New("name the node with --node or a pod with --pod")
		}
		ns, err := o.namespace()
		if err != nil {
			return nil, "", err
		}
		p, err := cs.CoreV1().Pods(ns).Get(ctx, pod, metav1.GetOptions{})
		if err != nil {
			return nil, "", err
		}
		if node = p.Spec.NodeName; node == "" {
			return nil, "", fmt.Errorf("pod %s/%s is not scheduled to a node yet", ns, pod)
		}
	}
	ap, port, err := o.agent(ctx, cs, node)
	if err != nil {
		return nil, "", err
	}
	// The pod proxy does not pass the caller's identity on (the API server
	// drops the Authorization header), so the agent is reached directly
	// unless --via=proxy says otherwise.
	via := o.via
	if via == "" {
		via = viaNode
	}
	hostPort := ""
	if via == viaNode {
		n, err := cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			return nil, "", err
		}
		addr, err := nodeAddress(n, o.addressTypes)
		if err != nil {
			return nil, "", err
		}
		hostPort = net.JoinHostPort(addr, strconv.Itoa(port))
	}
	proxy := fmt.Sprintf("/api/v1/namespaces/%s/pods/https:%s:%d/proxy", ap.Namespace, ap.Name, port)
	c, err := o.apiClient(cfg, via, proxy, hostPort)
	return c, node, err
}

func (o *options) lsCommand() *cobra.Command {
	var node, pod string
	cmd := &cobra.Command{
		Use:   "ls (--node NODE | --pod POD)",
		Short: "List the archives the ckpt agent on a node holds",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, _, err := o.agentClient(cmd.Context(), node, pod)
			if err != nil {
				return err
			}
			list, err := c.Archives(cmd.Context())
			if err != nil {
				return err
			}
			fmt.Fprintf(o.stdout, "%-70s %12s  %s\n", "NAME", "SIZE", "CREATED")
			for _, a := range list {
				fmt.Fprintf(o.stdout, "%-70s %12d  %s\n", a.Name, a.Size, a.Created.Format(time.RFC3339))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&node, "node", "", "node whose agent to ask")
	cmd.Flags().StringVar(&pod, "pod", "", "a pod (in -n) whose node's agent to ask")
	return cmd
}

func (o *options) getCommand() *cobra.Command {
	var node, pod, out string
	cmd := &cobra.Command{
		Use:   "get ARCHIVE (--node NODE | --pod POD) [-o FILE]",
		Short: "Download an archive from the ckpt agent on a node",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := o.agentClient(cmd.Context(), node, pod)
			if err != nil {
				return err
			}
			if out == "" {
				out = args[0]
			}
			if filepath.Base(args[0]) != args[0] {
				return fmt.Errorf("archive %q: give a name, as ls shows it", args[0])
			}
			d, err := c.Get(cmd.Context(), args[0], client.GetOptions{Progress: o.progress(args[0])})
			if err != nil {
				return err
			}
			defer d.Close()
			f, err := os.OpenFile(out, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
			if err != nil {
				return err
			}
			_, err = io.Copy(f, d)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				os.Remove(out)
				return fmt.Errorf("download %s: %w", args[0], err)
			}
			o.endProgress()
			fmt.Fprintln(o.stdout, out)
			return nil
		},
	}
	cmd.Flags().StringVar(&node, "node", "", "node whose agent holds the archive")
	cmd.Flags().StringVar(&pod, "pod", "", "a pod (in -n) whose node's agent holds the archive")
	cmd.Flags().StringVarP(&out, "output", "o", "", "file to write (default: the archive's name; never overwritten)")
	return cmd
}

func (o *options) restoreCommand() *cobra.Command {
	var node, target string
	cmd := &cobra.Command{
		Use:   "restore ARCHIVE --node NODE --to NAMESPACE/POD/CONTAINER",
		Short: "Restore a container from an archive the ckpt agent on a node holds",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, err := client.ParseRef(target)
			if err != nil {
				return fmt.Errorf("--to: %w", err)
			}
			c, node, err := o.agentClient(cmd.Context(), node, "")
			if err != nil {
				return err
			}
			stop := o.spinner(fmt.Sprintf("restoring %s on node %s", ref, node))
			r, err := c.Restore(cmd.Context(), ref, client.RestoreSource{Archive: args[0]})
			stop(err == nil)
			if err != nil {
				return err
			}
			fmt.Fprintf(o.stdout, "%s/%s/%s %s %s\n", r.Namespace, r.Pod, r.Container, r.ID, r.State)
			return nil
		},
	}
	cmd.Flags().StringVar(&node, "node", "", "node whose agent holds the archive")
	cmd.Flags().StringVar(&target, "to", "", "container to restore into: NAMESPACE/POD/CONTAINER")
	return cmd
}
