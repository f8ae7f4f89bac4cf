package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ckpt-dev/ckpt/internal/checkpoint"
	"github.com/ckpt-dev/ckpt/internal/inspect"
)

func init() { register(newCheckpointsCommand) }

func newCheckpointsCommand(*globalOptions) *cobra.Command {
	var client clientOptions
	cmd := &cobra.Command{
		Use:   "checkpoints",
		Short: "List, download and delete the archives of a ckpt server",
	}
	client.addFlags(cmd.PersistentFlags())

	var jsonOut bool
	ls := &cobra.Command{
		Use:   "ls",
		Short: "List archives (name, container, size, age, sha256)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := client.newClient()
			if err != nil {
				return err
			}
			resp, err := c.do(cmd.Context(), http.MethodGet, []string{"checkpoints"}, nil)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return statusError(resp)
			}
			var body struct{ Items []checkpoint.ArchiveInfo }
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
				return fmt.Errorf("decode archive list: %w", err)
			}
			if jsonOut {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(body.Items)
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tNAMESPACE\tPOD\tCONTAINER\tSIZE\tAGE\tSHA256")
			for _, a := range body.Items {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%.12s\n", a.Name, a.Namespace, a.Pod, a.Container,
					inspect.HumanBytes(a.Size), time.Since(a.Created).Round(time.Second), a.SHA256)
			}
			return tw.Flush()
		},
	}
	ls.Flags().BoolVar(&jsonOut, "json", false, "print JSON")

	var out string
	get := &cobra.Command{
		Use:   "get NAME [-o FILE]",
		Short: "Download an archive (to NAME in the current directory, or -o FILE; - for stdout)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := client.newClient()
			if err != nil {
				return err
			}
			resp, err := c.do(cmd.Context(), http.MethodGet, []string{"checkpoints", args[0]}, nil)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return statusError(resp)
			}
			if out == "-" {
				_, err := io.Copy(os.Stdout, resp.Body)
				return err
			}
			if out == "" {
				out = filepath.Base(args[0])
			}
			return downloadTo(out, resp.Body, resp.ContentLength)
		},
	}
	get.Flags().StringVarP(&out, "output", "o", "", "file to write")

	rm := &cobra.Command{
		Use:   "rm NAME...",
		Short: "Delete archives",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := client.newClient()
			if err != nil {
				return err
			}
			for _, name := range args {
				resp, err := c.do(cmd.Context(), http.MethodDelete, []string{"checkpoints", name}, nil)
				if err != nil {
					return err
				}
				if resp.StatusCode != http.StatusOK {
					defer resp.Body.Close()
					return statusError(resp)
				}
				resp.Body.Close()
				fmt.Println("deleted", name)
			}
			return nil
		},
	}
	cmd.AddCommand(ls, get, rm)
	return cmd
}

// downloadTo writes r to path (0600, never replacing a file) with progress
// on a terminal; a partial file is removed on failure.
func downloadTo(path string, r io.Reader, size int64) (err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(path)
		}
	}()
	stop := startTicker(os.Stderr, "downloading "+filepath.Base(path))
	n, err := io.Copy(f, r)
	elapsed := stop()
	if err != nil {
		return fmt.Errorf("download %s: %w", path, err)
	}
	if size >= 0 && n != size {
		return fmt.Errorf("download %s: got %d of %d bytes", path, n, size)
	}
	fmt.Fprintf(os.Stderr, "wrote %s (%s in %s)\n", path, inspect.HumanBytes(n), elapsed.Round(time.Millisecond))
	return f.Sync()
}
