package main

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/ckpt-dev/ckpt/pkg/client"
)

func init() { register(newMigrateCommand) }

// newMigrateCommand checkpoints a container on one agent and restores it on
// another, streaming the archive between them without a local copy.
func newMigrateCommand(g *globalOptions) *cobra.Command {
	var co clientOptions
	var from, to string
	var copts client.CheckpointOptions
	var target restoreTarget
	var stopSource bool
	var via, identity string
	var live bool
	var linkTimeout time.Duration
	cmd := &cobra.Command{
		Use:   "migrate NAMESPACE/POD/CONTAINER --from URL --to URL [--live]",
		Short: "Checkpoint a container on one node and restore it on another",
		Long: "migrate checkpoints the container through the source agent's kubelet API, streams the\n" +
			"archive from the source's GET /checkpoints/{name} into the destination's POST /restore,\n" +
			"or, with --via REGISTRY/REPO, builds a checkpoint image of it here, pushes it, and has the\n" +
			"destination pull and restore it (for nodes that cannot reach each other; the image stays),\n" +
			"and prints where it runs now. By default the source container keeps running (a\n" +
			"checkpoint never stops it); --stop-source stops it once the copy runs. The archive\n" +
			"stays on the source. Both agents take the same credentials; --cacert may hold both CAs.\n\n" +
			"--live migrates post-copy: the source is dumped without its memory, the destination runs at\n" +
			"once and pulls the pages from the source through both agents' HTTPS, and the source ends\n" +
			"when every page has moved. If the link breaks before that, the copy on the destination is\n" +
			"stopped and the source runs on (see docs/restore.md).",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, err := client.ParseRef(args[0])
			if err != nil {
				return err
			}
			if from == "" || to == "" {
				return fmt.Errorf("--from and --to are required")
			}
			src, err := co.withServer(from).newClient()
			if err != nil {
				return err
			}
			dst, err := co.withServer(to).newClient()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			stderr := cmd.ErrOrStderr()
			if target.pod == "" {
				target.pod = ref.Namespace + "/" + ref.Pod
			}
			if target.name == "" {
				target.name = ref.Container
			}
			if live {
				if via != "" || stopSource {
					return fmt.Errorf("--live moves the pages between the agents and always ends the source: no --via or --stop-source")
				}
				into, err := target.ref()
				if err != nil {
					return err
				}
				m := liveMigration{from: from, to: to, linkTimeout: linkTimeout}
				res, err := m.run(ctx, src, dst, ref, into, copts)
				if err != nil {
					return fmt.Errorf("migrate %s live: %w", args[0], err)
				}
				r := res.restored
				fmt.Fprintf(cmd.OutOrStdout(), "migrated %s live to %s as %s/%s/%s (%.12s) in %s: %.1f MiB of images, then %.1f MiB of pages; the source ended\n",
					args[0], to, r.Namespace, r.Pod, r.Container, r.ID, res.took.Round(time.Millisecond), float64(res.archive)/(1<<20), float64(res.pages)/(1<<20))
				return nil
			}
			start := time.Now()
			path, err := runCheckpoint(ctx, src, ref, copts, stderr)
			if err != nil {
				return err
			}
			name := filepath.Base(path)
			fmt.Fprintf(stderr, "checkpointed on %s: %s\n", from, name)
			p := newProgress(stderr, "copying to "+to, -1)
			d, err := src.Get(ctx, name, client.GetOptions{Progress: p.set})
			if err != nil {
				p.finish()
				return err
			}
			defer d.Close()
			into, err := target.ref()
			if err != nil {
				p.finish()
				return err
			}
			rsrc := client.RestoreSource{Body: d, Size: d.Size}
			if via != "" {
				p.finish()
				pushed, err := pushArchive(ctx, d, via, name, identity)
				if err != nil {
					return err
				}
				fmt.Fprintf(stderr, "pushed %s\n", pushed)
				rsrc = client.RestoreSource{Image: pushed}
				p = newProgress(stderr, "restoring on "+to, -1)
			}
			restored, err := dst.Restore(ctx, into, rsrc)
			p.finish()
			if err != nil {
				return fmt.Errorf("restore on %s: %w", to, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "migrated %s to %s as %s/%s/%s (%.12s) in %s\n", args[0], to, restored.Namespace, restored.Pod,
				restored.Container, restored.ID, time.Since(start).Round(time.Millisecond))
			if !stopSource {
				return nil
			}
			if err := src.Stop(ctx, ref); err != nil {
				return fmt.Errorf("the copy runs on %s, but stopping the source failed: %w", to, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "stopped %s on %s\n", args[0], from)
			return nil
		},
	}
	co.addFlags(g, cmd.Flags())
	cmd.Flags().Lookup("server").Hidden = true
	cmd.Flags().Lookup("context").Hidden = true
	cmd.Flags().StringVar(&from, "from", "", "URL of the agent that runs the container")
	cmd.Flags().StringVar(&to, "to", "", "URL of the agent to restore on")
	cmd.Flags().DurationVar(&copts.Timeout, "timeout", 0, "checkpoint timeout (0 = the source's default)")
	cmd.Flags().BoolVar(&copts.TCPEstablished, "tcp-established", false, "checkpoint established TCP connections too")
	cmd.Flags().StringVar(&target.pod, "pod", "", "restore into this NAMESPACE/POD (default: the same)")
	cmd.Flags().StringVar(&target.name, "name", "", "container name on the destination (default: the same)")
	cmd.Flags().StringVar(&via, "via", "", "move the checkpoint as an image through REGISTRY/REPO[:TAG] (pushed from here, pulled by the destination)")
	cmd.Flags().StringVar(&identity, "identity", "", "age identity file, for --via with a source that encrypts its archives")
	cmd.Flags().BoolVar(&live, "live", false, "migrate post-copy: the destination runs at once and pulls the memory from the source")
	cmd.Flags().DurationVar(&linkTimeout, "link-timeout", 0, "with --live: how long the link may stay silent before the migration counts it broken (0: the agents' default, 10s)")
	cmd.Flags().BoolVar(&stopSource, "stop-source", false, "stop the source container once the copy runs (default: leave it running)")
	return cmd
}
