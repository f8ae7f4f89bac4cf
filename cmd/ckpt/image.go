package main

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ckpt-dev/ckpt/internal/ckptimage"
	"github.com/ckpt-dev/ckpt/internal/image"
)

func init() { register(newImageCommand) }

// imageProgressMin is the compressed layer size from which import reports
// progress.
const imageProgressMin = 4 << 20

// g.imageStore (backend.go) opens <root-dir>/ckpt/images.

func newImageCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "image",
		Short: "Manage the local images that the embedded runtime runs",
		Long: "Images to run are imported from files (`docker save` tarballs, OCI archives, OCI image\n" +
			"layout directories) and kept unpacked under <root-dir>/ckpt/images. Checkpoint images\n" +
			"(from-checkpoint, push, pull, save) are kept as an OCI layout beside them.",
	}
	cmd.AddCommand(newImageImportCommand(g), newImageLsCommand(g), newImageRmCommand(g))
	cmd.AddCommand(checkpointImageCommands(g)...)
	return cmd
}

func newImageImportCommand(g *globalOptions) *cobra.Command {
	var quiet bool
	cmd := &cobra.Command{
		Use:   "import FILE...",
		Short: "Import images from docker save tarballs, OCI archives or OCI layout directories",
		Long: "An OCI archive of a checkpoint image (`ckpt image save`) goes to the checkpoint images;\n" +
			"everything else is unpacked for the embedded runtime to run.",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := g.imageStore()
			if err != nil {
				return err
			}
			if !quiet {
				s.Progress = imageProgress(cmd.ErrOrStderr())
			}
			for _, f := range args {
				if done, err := importCheckpointImages(g, cmd.OutOrStdout(), f); done || err != nil {
					if err != nil {
						return err
					}
					continue
				}
				imgs, err := s.Import(cmd.Context(), f)
				for _, img := range imgs {
					names := "<none>"
					if len(img.Names) > 0 {
						names = strings.Join(img.Names, ", ")
					}
					fmt.Fprintf(cmd.OutOrStdout(), "Imported %s %s\n", names, img.ID)
				}
				if err != nil {
					return err
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "do not report layer progress")
	return cmd
}

// imageProgress shows a spinner for each big layer being unpacked, on a
// terminal only; small images import quietly.
func imageProgress(w io.Writer) func(image.Progress) {
	if !isTerminal(w) {
		return nil
	}
	var cur *progress
	return func(p image.Progress) {
		if p.Size < imageProgressMin {
			return
		}
		if cur != nil {
			cur.finish()
			cur = nil
		}
		if !p.Done {
			cur = newProgress(w, fmt.Sprintf("%s: unpacking layer %d/%d (%s compressed)", p.Image, p.Layer, p.Layers, humanBytes(p.Size)), -1)
		}
	}
}

// imageEntry is one image as `image ls -o json|yaml` prints it.
type imageEntry struct {
	ID      string    `json:"id"`
	Names   []string  `json:"names"`
	Size    int64     `json:"size"`
	Created time.Time `json:"created"`
	// Checkpoint names the checkpointed container of a checkpoint image.
	Checkpoint string `json:"checkpoint,omitempty"`
}

func newImageLsCommand(g *globalOptions) *cobra.Command {
	var quiet, noTrunc bool
	var format outputFormat
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List local images",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := g.imageStore()
			if err != nil {
				return err
			}
			imgs, err := s.List()
			if err != nil {
				return err
			}
			ckpts, err := listCheckpointImages(g)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			entries := make([]imageEntry, 0, len(imgs))
			for _, img := range imgs {
				entries = append(entries, imageEntry{ID: img.ID, Names: img.Names, Size: img.Size, Created: img.Created})
			}
			for _, e := range ckpts {
				entries = append(entries, imageEntry{ID: e.Digest, Names: []string{e.Name}, Size: e.Size, Created: e.Created, Checkpoint: e.Container})
			}
			if done, err := format.structured(out, entries); done {
				return err
			}
			wide := format == "wide"
			id := func(img image.Image) string {
				if noTrunc || wide {
					return img.ID
				}
				return shortImageID(img.ID)
			}
			ckptID := func(e ckptimage.Entry) string {
				if noTrunc || wide {
					return e.Digest
				}
				return shortImageID(e.Digest)
			}
			if quiet {
				for _, img := range imgs {
					fmt.Fprintln(out, id(img))
				}
				for _, e := range ckpts {
					fmt.Fprintln(out, ckptID(e))
				}
				return nil
			}
			tw := table(out)
			fmt.Fprintln(tw, "NAME\tID\tSIZE\tCREATED")
			for _, img := range imgs {
				names := img.Names
				if len(names) == 0 {
					names = []string{"<none>"}
				}
				created := "unknown"
				if !img.Created.IsZero() && img.Created.Unix() != 0 {
					created = ago(img.Created) + " ago"
					if wide {
						created = img.Created.UTC().Format(time.RFC3339)
					}
				}
				for _, n := range names {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", n, id(img), humanBytes(img.Size), created)
				}
			}
			for _, e := range ckpts {
				created := "unknown"
				if !e.Created.IsZero() {
					created = ago(e.Created) + " ago"
					if wide {
						created = e.Created.UTC().Format(time.RFC3339)
					}
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", e.Name+" (checkpoint of "+e.Container+")", ckptID(e), humanBytes(e.Size), created)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print IDs only")
	cmd.Flags().BoolVar(&noTrunc, "no-trunc", false, "print full IDs")
	cmd.Flags().VarP(&format, "output", "o", "output format: json, yaml or wide")
	return cmd
}

func newImageRmCommand(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:     "rm REF...",
		Aliases: []string{"remove"},
		Short:   "Remove local images (by name, short name or ID prefix), with all their names",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := g.imageStore()
			if err != nil {
				return err
			}
			inUse, err := g.imagesInUse(cmd.Context())
			if err != nil {
				return err
			}
			for _, ref := range args {
				img, err := s.Resolve(ref)
				var nf *image.NotFoundError
				if errors.As(err, &nf) {
					e, found, cerr := removeCheckpointImage(g, ref)
					if cerr != nil {
						return cerr
					}
					if found {
						fmt.Fprintf(cmd.OutOrStdout(), "Removed %s %s\n", e.Name, e.Digest)
						continue
					}
				}
				if err != nil {
					return err
				}
				if users := inUse[img.ID]; len(users) > 0 {
					return fmt.Errorf("image %s is used by %s: remove those containers first (ckpt rm)", ref, strings.Join(users, ", "))
				}
				if img, err = s.Remove(ref); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "Removed %s\n", img.ID)
			}
			return nil
		},
	}
}

// shortImageID is the first 12 hex digits of an ID.
func shortImageID(id string) string {
	id = strings.TrimPrefix(id, "sha256:")
	if len(id) > 12 {
		id = id[:12]
	}
	return id
}
