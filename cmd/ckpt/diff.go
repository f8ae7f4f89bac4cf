package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/ckpt-dev/ckpt/internal/inspect"
)

func init() { register(newDiffCommand) }

func newDiffCommand(*globalOptions) *cobra.Command {
	var (
		rf     readFlags
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "diff A B",
		Short: "Show processes, open files and sockets that changed between two checkpoints",
		Long: "Compare two checkpoints of the same container: processes (by PID, with command line,\n" +
			"parent and state), open files and sockets (by PID and descriptor) that appeared (+),\n" +
			"vanished (-) or changed (~) from A to B.",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts, err := rf.options()
			if err != nil {
				return err
			}
			done := withProgress(&opts)
			opts.Cmdline = true
			var cs [2]*inspect.Checkpoint
			for i, path := range args {
				if cs[i], err = inspect.Open(path, opts); err != nil {
					done()
					return err
				}
			}
			done()
			if a, b := cs[0].Container, cs[1].Container; a.ID != b.ID {
				fmt.Fprintf(os.Stderr, "warning: %s is container %.12s (%s), %s is %.12s (%s)\n", args[0], a.ID, a.Name, args[1], b.ID, b.Name)
			}
			changes := inspect.Diff(cs[0], cs[1])
			if asJSON {
				if changes == nil {
					changes = []inspect.Change{}
				}
				e := json.NewEncoder(cmd.OutOrStdout())
				e.SetIndent("", "  ")
				return e.Encode(struct {
					A       string           `json:"a"`
					B       string           `json:"b"`
					Changes []inspect.Change `json:"changes"`
				}{args[0], args[1], changes})
			}
			inspect.RenderDiff(cmd.OutOrStdout(), changes)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the changes as JSON")
	rf.add(cmd)
	return cmd
}
