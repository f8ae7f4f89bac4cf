package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"filippo.io/age"
	"github.com/spf13/cobra"

	"github.com/ckpt-dev/ckpt/internal/archive"
	"github.com/ckpt-dev/ckpt/pkg/client"
)

func init() { register(newRestoreCommand) }

// restoreTarget is --pod NS/NAME and --name CTR; empty keeps the archive's.
type restoreTarget struct {
	pod  string // NS/NAME
	name string
}

func (t restoreTarget) ref() (client.Ref, error) {
	var r client.Ref
	if t.pod != "" {
		var ok bool
		r.Namespace, r.Pod, ok = strings.Cut(t.pod, "/")
		if !ok || r.Namespace == "" || r.Pod == "" {
			return r, fmt.Errorf("--pod %q: want NAMESPACE/NAME", t.pod)
		}
	}
	r.Container = t.name
	return r, nil
}

func newRestoreCommand(g *globalOptions) *cobra.Command {
	var co clientOptions
	var target restoreTarget
	var identity string
	var lazy bool
	cmd := &cobra.Command{
		Use:   "restore ARCHIVE|IMAGE [--pod NS/NAME] [--name CTR] [--lazy]",
		Short: "Restore a container (or a whole pod) from a checkpoint archive or image; it resumes where it was checkpointed",
		Long: "ARCHIVE is the name of an archive on the server (see `ckpt checkpoints ls`) or a local file,\n" +
			"which is streamed to the server. An encrypted local file is decrypted here with --identity;\n" +
			"the plain archive travels over the (TLS) connection and is never stored in clear.\n" +
			"IMAGE is a checkpoint image reference: one in this machine's store (<root-dir>) is streamed\n" +
			"like a file; any other is the server's to find in its store or pull from its registry.\n" +
			"A pod archive (`ckpt checkpoint NS/POD`) restores the whole pod into a new sandbox\n" +
			"(POST /restore/NS/POD); --pod renames it.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := co.newClient()
			if err != nil {
				return err
			}
			ref, err := target.ref()
			if err != nil {
				return err
			}
			src := client.RestoreSource{Lazy: lazy}
			label := "restoring " + args[0]
			pod := false
			if st, err := os.Stat(args[0]); err == nil && st.Mode().IsRegular() {
				ids, err := loadIdentities(identity)
				if err != nil {
					return err
				}
				rc, format, err := archive.Open(args[0], ids)
				if err != nil {
					return err
				}
				defer rc.Close()
				src.Body, src.Size = rc, -1
				if format == archive.FormatTar {
					src.Size = st.Size() // sent as is: a bar with a total
				}
				src.Body, pod = archive.PeekPod(rc)
				label = "uploading " + args[0]
			} else if isArchiveName(args[0]) {
				src.Archive = args[0]
				if pod, err = isPodArchiveOnServer(cmd.Context(), c, args[0]); err != nil {
					return err
				}
			} else if rc := localImageArchive(cmd.Context(), g, args[0]); rc != nil {
				defer rc.Close()
				src.Body, src.Size = rc, -1
				src.Body, pod = archive.PeekPod(rc)
				label = "uploading " + args[0]
			} else {
				src.Image = args[0]
			}
			p := newProgress(cmd.ErrOrStderr(), label, -1)
			src.Progress = p.set
			if !pod && src.Image != "" {
				// The server finds the image; a pod image is refused on the
				// container route with this hint, and restored on the pod's.
				restored, err := c.Restore(cmd.Context(), ref, src)
				if err == nil || !strings.Contains(err.Error(), "this is a pod archive") {
					elapsed := p.finish()
					if err != nil {
						return err
					}
					fmt.Fprintf(cmd.OutOrStdout(), "restored %s/%s/%s (%.12s) %s in %s\n", restored.Namespace, restored.Pod, restored.Container,
						restored.ID, restored.State, elapsed.Round(time.Millisecond))
					return nil
				}
				pod = true
			}
			if pod {
				if target.name != "" || lazy {
					p.finish()
					return fmt.Errorf("%s is a pod archive: --name and --lazy are for containers", args[0])
				}
				restored, err := c.RestorePod(cmd.Context(), ref.Namespace, ref.Pod, src)
				elapsed := p.finish()
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "restored pod %s/%s in %s\n", restored.Namespace, restored.Pod, elapsed.Round(time.Millisecond))
				for _, r := range restored.Containers {
					fmt.Fprintf(cmd.OutOrStdout(), "  %s (%.12s) %s\n", r.Container, r.ID, r.State)
				}
				return nil
			}
			restored, err := c.Restore(cmd.Context(), ref, src)
			elapsed := p.finish()
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "restored %s/%s/%s (%.12s) %s in %s\n", restored.Namespace, restored.Pod, restored.Container,
				restored.ID, restored.State, elapsed.Round(time.Millisecond))
			return nil
		},
	}
	co.addFlags(g, cmd.Flags())
	cmd.Flags().StringVar(&target.pod, "pod", "", "restore into this NAMESPACE/POD (default: the archive's)")
	cmd.Flags().StringVar(&target.name, "name", "", "container name (default: the archive's)")
	cmd.Flags().StringVar(&identity, "identity", "", "age identity file to decrypt a local encrypted archive")
	cmd.Flags().BoolVar(&lazy, "lazy", false, "run the container as soon as its non-memory state is restored; memory follows on demand (see `ckpt ps`)")
	return cmd
}

// isPodArchiveOnServer asks the server whether its archive name is of a pod.
func isPodArchiveOnServer(ctx context.Context, c *client.Client, name string) (bool, error) {
	list, err := c.Archives(ctx)
	if err != nil {
		return false, err
	}
	for _, a := range list {
		if a.Name == name {
			return a.Kind == "pod", nil
		}
	}
	return false, nil // the server names the problem
}

func loadIdentities(path string) ([]age.Identity, error) {
	if path == "" {
		return nil, nil
	}
	return archive.ParseIdentitiesFile(path)
}
