package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/ckpt-dev/ckpt/pkg/client"
)

func init() { register(newCheckpointCommand) }

func newCheckpointCommand(g *globalOptions) *cobra.Command {
	var (
		copts client.CheckpointOptions
		co    clientOptions
	)
	cmd := &cobra.Command{
		Use:   "checkpoint NAMESPACE/POD[/CONTAINER]",
		Short: "Checkpoint a running container (or a whole pod) through a ckpt (or kubelet) server",
		Long: `Asks the server to checkpoint one container (POST /checkpoint/NS/POD/CTR), or
every container of a pod in one cut (POST /checkpoint/NS/POD, ckpt only), and
prints the path of the archive it wrote on the server's node. As root on the
node, with no --server or --context, it talks to the local agent through its
socket <root-dir>/ckpt.sock.`,
		Example: `  ckpt checkpoint default/web/app
  ckpt checkpoint default/web-node1          # every container of the pod, one archive
  ckpt checkpoint default/web/app --context node-1 --timeout 5m
  ckpt checkpoint default/web/app --server https://node-1:10250 --cacert ckpt.crt --token-file token`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, err := client.ParseRef(args[0])
			pod := false
			if err != nil {
				// NAMESPACE/POD: the whole pod.
				if ref, err = client.ParseRef(args[0] + "/_"); err != nil {
					return fmt.Errorf("%q: want NAMESPACE/POD/CONTAINER or NAMESPACE/POD", args[0])
				}
				pod = true
			}
			c, err := co.newClient()
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			var path string
			if pod {
				path, err = runCheckpointPod(ctx, c, ref.Namespace, ref.Pod, copts, cmd.ErrOrStderr())
			} else {
				path, err = runCheckpoint(ctx, c, ref, copts, cmd.ErrOrStderr())
			}
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), path)
			return nil
		},
	}
	co.addFlags(g, cmd.Flags())
	cmd.Flags().DurationVar(&copts.Timeout, "timeout", 0, "how long the server may take, sent in whole seconds (rounded up); 0 = the server's default (2m on a kubelet)")
	cmd.Flags().BoolVar(&copts.TCPEstablished, "tcp-established", false, "also checkpoint established TCP connections (CRIU --tcp-established; ckpt servers only)")
	return cmd
}

// runCheckpoint checkpoints ref with a spinner on a terminal stderr.
func runCheckpoint(ctx context.Context, c *client.Client, ref client.Ref, o client.CheckpointOptions, stderr io.Writer) (string, error) {
	p := newProgress(stderr, "checkpointing "+ref.String(), -1)
	path, err := c.Checkpoint(ctx, ref, o)
	elapsed := p.finish()
	if err != nil {
		return "", err
	}
	if isTerminal(stderr) {
		fmt.Fprintf(stderr, "checkpointed %s in %s\n", ref, elapsed.Round(100*time.Millisecond))
	}
	return path, nil
}

// runCheckpointPod checkpoints a whole pod with a spinner on a terminal.
func runCheckpointPod(ctx context.Context, c *client.Client, ns, pod string, o client.CheckpointOptions, stderr io.Writer) (string, error) {
	p := newProgress(stderr, "checkpointing pod "+ns+"/"+pod, -1)
	path, err := c.CheckpointPod(ctx, ns, pod, o)
	p.finish()
	return path, err
}
