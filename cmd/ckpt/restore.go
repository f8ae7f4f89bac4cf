package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"

	"filippo.io/age"
	"github.com/spf13/cobra"

	"github.com/ckpt-dev/ckpt/internal/archive"
	"github.com/ckpt-dev/ckpt/internal/server"
)

func init() { register(newRestoreCommand) }

type restoreTarget struct {
	pod  string // NS/NAME
	name string
}

func (t restoreTarget) segments() ([]string, error) {
	ns, pod := "_", "_" // "_": keep what the archive recorded
	if t.pod != "" {
		var ok bool
		ns, pod, ok = strings.Cut(t.pod, "/")
		if !ok || ns == "" || pod == "" {
			return nil, fmt.Errorf("--pod %q: want NAMESPACE/NAME", t.pod)
		}
	}
	name := "_"
	if t.name != "" {
		name = t.name
	}
	return []string{"restore", ns, pod, name}, nil
}

func newRestoreCommand(*globalOptions) *cobra.Command {
	var client clientOptions
	var target restoreTarget
	var identity string
	var lazy bool
	cmd := &cobra.Command{
		Use:   "restore ARCHIVE [--pod NS/NAME] [--name CTR] [--lazy]",
		Short: "Restore a container from a checkpoint archive; it resumes where it was checkpointed",
		Long: "ARCHIVE is the name of an archive on the server (see `ckpt checkpoints ls`) or a local file,\n" +
			"which is streamed to the server. An encrypted local file is decrypted here with --identity;\n" +
			"the plain archive travels over the (TLS) connection and is never stored in clear.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := client.newClient()
			if err != nil {
				return err
			}
			segs, err := target.segments()
			if err != nil {
				return err
			}
			var body io.Reader
			query := url.Values{}
			if st, err := os.Stat(args[0]); err == nil && st.Mode().IsRegular() {
				ids, err := loadIdentities(identity)
				if err != nil {
					return err
				}
				rc, _, err := archive.Open(args[0], ids)
				if err != nil {
					return err
				}
				defer rc.Close()
				body = rc
			} else {
				query.Set("archive", args[0])
			}
			if lazy {
				query.Set("lazy", "true")
			}
			stop := startTicker(os.Stderr, "restoring")
			restored, err := runRestore(cmd.Context(), c, segs, query, body)
			elapsed := stop()
			if err != nil {
				return err
			}
			fmt.Printf("restored %s/%s/%s (%.12s) %s in %s\n", restored.Namespace, restored.Pod, restored.Container,
				restored.ID, restored.State, elapsed.Round(1e6))
			return nil
		},
	}
	client.addFlags(cmd.Flags())
	cmd.Flags().StringVar(&target.pod, "pod", "", "restore into this NAMESPACE/POD (default: the archive's)")
	cmd.Flags().StringVar(&target.name, "name", "", "container name (default: the archive's)")
	cmd.Flags().StringVar(&identity, "identity", "", "age identity file to decrypt a local encrypted archive")
	cmd.Flags().BoolVar(&lazy, "lazy", false, "run the container as soon as its non-memory state is restored; memory follows on demand (see `ckpt ps`)")
	return cmd
}

func runRestore(ctx context.Context, c *apiClient, segs []string, query url.Values, body io.Reader) (server.RestoredContainer, error) {
	var out server.RestoredContainer
	resp, err := c.send(ctx, http.MethodPost, segs, query, body)
	if err != nil {
		return out, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return out, statusError(resp)
	}
	return out, json.NewDecoder(resp.Body).Decode(&out)
}

func loadIdentities(path string) ([]age.Identity, error) {
	if path == "" {
		return nil, nil
	}
	return archive.ParseIdentitiesFile(path)
}
