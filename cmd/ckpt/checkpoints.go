package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/ckpt-dev/ckpt/pkg/client"
)

func init() { register(newCheckpointsCommand) }

func newCheckpointsCommand(g *globalOptions) *cobra.Command {
	var co clientOptions
	cmd := &cobra.Command{
		Use:   "checkpoints",
		Short: "List, download and delete the archives of a ckpt server",
		Args:  cobra.NoArgs,
	}
	co.addFlags(g, cmd.PersistentFlags())

	var format outputFormat
	var jsonOut bool
	ls := &cobra.Command{
		Use:   "ls",
		Short: "List archives (name, container, size, age, sha256)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := co.newClient()
			if err != nil {
				return err
			}
			list, err := c.Archives(cmd.Context())
			if err != nil {
				return err
			}
			if jsonOut {
				format = "json"
			}
			if list == nil {
				list = []client.Archive{}
			}
			w := cmd.OutOrStdout()
			if done, err := format.structured(w, list); done {
				return err
			}
			tw := table(w)
			if format == "wide" {
				fmt.Fprintln(tw, "NAME\tNAMESPACE\tPOD\tCONTAINER\tSIZE\tCREATED\tSHA256\tPATH")
			} else {
				fmt.Fprintln(tw, "NAME\tNAMESPACE\tPOD\tCONTAINER\tSIZE\tAGE\tSHA256")
			}
			for _, a := range list {
				if a.Kind == "pod" {
					a.Container = "(whole pod)"
				}
				if format == "wide" {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", a.Name, a.Namespace, a.Pod, a.Container,
						a.Size, a.Created.UTC().Format(time.RFC3339), a.SHA256, a.Path)
					continue
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%.12s\n", a.Name, a.Namespace, a.Pod, a.Container,
					humanBytes(a.Size), ago(a.Created), a.SHA256)
			}
			return tw.Flush()
		},
	}
	ls.Flags().VarP(&format, "output", "o", "output format: json, yaml or wide")
	ls.Flags().BoolVar(&jsonOut, "json", false, "print JSON (same as -o json)")
	_ = ls.Flags().MarkDeprecated("json", "use -o json")

	var out string
	get := &cobra.Command{
		Use:   "get NAME [-o FILE]",
		Short: "Download an archive (to NAME in the current directory, or -o FILE; - for stdout)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := co.newClient()
			if err != nil {
				return err
			}
			if out == "" {
				out = filepath.Base(args[0])
			}
			p := newProgress(cmd.ErrOrStderr(), "downloading "+args[0], -1)
			d, err := c.Get(cmd.Context(), args[0], client.GetOptions{Progress: p.set})
			if err != nil {
				p.finish()
				return err
			}
			defer d.Close()
			if out == "-" {
				_, err := io.Copy(cmd.OutOrStdout(), d)
				p.finish()
				return err
			}
			n, err := downloadTo(out, d, d.Size)
			elapsed := p.finish()
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "wrote %s (%s in %s)\n", out, humanBytes(n), elapsed.Round(time.Millisecond))
			return nil
		},
	}
	get.Flags().StringVarP(&out, "output", "o", "", "file to write")

	rm := &cobra.Command{
		Use:   "rm NAME...",
		Short: "Delete archives",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := co.newClient()
			if err != nil {
				return err
			}
			for _, name := range args {
				if err := c.Delete(cmd.Context(), name); err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), "deleted", name)
			}
			return nil
		},
	}
	cmd.AddCommand(ls, get, rm)
	return cmd
}

// downloadTo writes r to path (0600, never replacing a file); a partial
// file is removed on failure.
func downloadTo(path string, r io.Reader, size int64) (n int64, err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return 0, err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(path)
		}
	}()
	n, err = io.Copy(f, r)
	if err != nil {
		return n, fmt.Errorf("download %s: %w", path, err)
	}
	if size >= 0 && n != size {
		return n, fmt.Errorf("download %s: got %d of %d bytes", path, n, size)
	}
	return n, f.Sync()
}
