package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
)

func init() { register(newMigrateCommand) }

// newMigrateCommand checkpoints a container on one agent and restores it on
// another, streaming the archive between them without a local copy.
func newMigrateCommand(*globalOptions) *cobra.Command {
	var client clientOptions
	var from, to string
	var timeout time.Duration
	var target restoreTarget
	var stopSource bool
	var via, identity string
	cmd := &cobra.Command{
		Use:   "migrate NAMESPACE/POD/CONTAINER --from URL --to URL",
		Short: "Checkpoint a container on one node and restore it on another",
		Long: "migrate checkpoints the container through the source agent's kubelet API, streams the\n" +
			"archive from the source's GET /checkpoints/{name} into the destination's POST /restore,\n" +
			"or, with --via REGISTRY/REPO, builds a checkpoint image of it here, pushes it, and has the\n" +
			"destination pull and restore it (for nodes that cannot reach each other; the image stays),\n" +
			"and prints where it runs now. By default the source container keeps running (a\n" +
			"checkpoint never stops it); --stop-source stops it once the copy runs. The archive\n" +
			"stays on the source. Both agents take the same credentials; --cacert may hold both CAs.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, err := splitRef(args[0])
			if err != nil {
				return err
			}
			if from == "" || to == "" {
				return fmt.Errorf("--from and --to are required")
			}
			src, err := client.withServer(from).newClient()
			if err != nil {
				return err
			}
			dst, err := client.withServer(to).newClient()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			start := time.Now()
			paths, err := runCheckpoint(ctx, src, ref, timeout, os.Stderr)
			if err != nil {
				return err
			}
			name := filepath.Base(paths[0])
			fmt.Fprintf(os.Stderr, "checkpointed on %s: %s\n", from, name)
			resp, err := src.do(ctx, http.MethodGet, []string{"checkpoints", name}, nil)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("download %s from %s: %w", name, from, statusError(resp))
			}
			if target.pod == "" {
				target.pod = ref[0] + "/" + ref[1]
			}
			if target.name == "" {
				target.name = ref[2]
			}
			segs, err := target.segments()
			if err != nil {
				return err
			}
			var query url.Values
			var body io.Reader = resp.Body
			if via != "" {
				pushed, err := pushArchive(ctx, resp.Body, via, name, identity)
				if err != nil {
					return err
				}
				fmt.Fprintf(os.Stderr, "pushed %s\n", pushed)
				query, body = url.Values{"image": {pushed}}, nil
			}
			stop := startTicker(os.Stderr, "restoring on "+to)
			restored, err := runRestore(ctx, dst, segs, query, body)
			stop()
			if err != nil {
				return fmt.Errorf("restore on %s: %w", to, err)
			}
			fmt.Printf("migrated %s to %s as %s/%s/%s (%.12s) in %s\n", args[0], to, restored.Namespace, restored.Pod,
				restored.Container, restored.ID, time.Since(start).Round(time.Millisecond))
			if !stopSource {
				return nil
			}
			if err := stopContainer(ctx, src, ref); err != nil {
				return fmt.Errorf("the copy runs on %s, but stopping the source failed: %w", to, err)
			}
			fmt.Printf("stopped %s on %s\n", args[0], from)
			return nil
		},
	}
	client.addFlags(cmd.Flags())
	cmd.Flags().Lookup("server").Hidden = true
	cmd.Flags().StringVar(&from, "from", "", "URL of the agent that runs the container")
	cmd.Flags().StringVar(&to, "to", "", "URL of the agent to restore on")
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "checkpoint timeout (0 = the source's default)")
	cmd.Flags().StringVar(&target.pod, "pod", "", "restore into this NAMESPACE/POD (default: the same)")
	cmd.Flags().StringVar(&target.name, "name", "", "container name on the destination (default: the same)")
	cmd.Flags().StringVar(&via, "via", "", "move the checkpoint as an image through REGISTRY/REPO[:TAG] (pushed from here, pulled by the destination)")
	cmd.Flags().StringVar(&identity, "identity", "", "age identity file, for --via with a source that encrypts its archives")
	cmd.Flags().BoolVar(&stopSource, "stop-source", false, "stop the source container once the copy runs (default: leave it running)")
	return cmd
}

// withServer returns a copy of the options aimed at another server.
func (o clientOptions) withServer(url string) *clientOptions {
	o.server = url
	return &o
}

// stopContainer asks an agent to stop a container.
func stopContainer(ctx context.Context, c *apiClient, ref [3]string) error {
	resp, err := c.do(ctx, http.MethodPost, []string{"stop", ref[0], ref[1], ref[2]}, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return statusError(resp)
	}
	return nil
}
