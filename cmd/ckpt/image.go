package main

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
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
		Args:  cobra.MinimumNArgs(1),
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

// imageProgress reports big layers only, so small images import quietly.
func imageProgress(w io.Writer) func(image.Progress) {
	var start time.Time
	return func(p image.Progress) {
		if p.Size < imageProgressMin {
			return
		}
		if !p.Done {
			start = time.Now()
			fmt.Fprintf(w, "%s: unpacking layer %d/%d (%s compressed)\n", p.Image, p.Layer, p.Layers, humanSize(p.Size))
			return
		}
		fmt.Fprintf(w, "%s: layer %d/%d done in %s\n", p.Image, p.Layer, p.Layers, time.Since(start).Round(time.Millisecond))
	}
}

func newImageLsCommand(g *globalOptions) *cobra.Command {
	var quiet, noTrunc bool
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
			id := func(img image.Image) string {
				if noTrunc {
					return img.ID
				}
				return shortImageID(img.ID)
			}
			ckptID := func(e ckptimage.Entry) string {
				if noTrunc {
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
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tID\tSIZE\tCREATED")
			now := time.Now()
			for _, img := range imgs {
				names := img.Names
				if len(names) == 0 {
					names = []string{"<none>"}
				}
				for _, n := range names {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", n, id(img), humanSize(img.Size), imageCreated(img.Created, now))
				}
			}
			for _, e := range ckpts {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", e.Name+" (checkpoint of "+e.Container+")", ckptID(e), humanSize(e.Size), imageCreated(e.Created, now))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print IDs only")
	cmd.Flags().BoolVar(&noTrunc, "no-trunc", false, "print full IDs")
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

// humanSize prints bytes in decimal units, as docker does.
func humanSize(n int64) string {
	const unit = 1000
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	f, i := float64(n), 0
	units := []string{"kB", "MB", "GB", "TB", "PB", "EB"}
	for f /= unit; f >= unit && i < len(units)-1; i++ {
		f /= unit
	}
	return fmt.Sprintf("%.3g%s", f, units[i])
}

// imageCreated prints how long ago t was, or the date when long ago.
func imageCreated(t, now time.Time) string {
	if t.IsZero() || t.Unix() == 0 {
		return "unknown"
	}
	d := now.Sub(t)
	switch {
	case d < 0:
		return t.UTC().Format(time.DateTime)
	case d < time.Minute:
		return "less than a minute ago"
	case d < time.Hour:
		return imageAgo(int(d.Minutes()), "minute")
	case d < 48*time.Hour:
		return imageAgo(int(d.Hours()), "hour")
	case d < 30*24*time.Hour:
		return imageAgo(int(d.Hours()/24), "day")
	}
	return t.UTC().Format(time.DateOnly)
}

func imageAgo(n int, unit string) string {
	if n == 1 {
		return "1 " + unit + " ago"
	}
	return fmt.Sprintf("%d %ss ago", n, unit)
}
