package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ckpt-dev/ckpt/internal/runtime/embedded"
)

func init() { register(newFailureLogsCommand) }

func newFailureLogsCommand(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "failure-logs [CONTAINER-ID|FILE]",
		Short: "Show the runc and CRIU logs kept from failed checkpoints and restores (embedded runtime, on the node)",
		Long: `Without an argument, lists the kept logs, newest first. With a container ID
(or its first characters), prints that container's newest log; with a file
name from the list, prints that log. The newest 5 per container are kept.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			logs, err := embedded.ListFailureLogs(g.stateDir())
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if len(args) == 0 {
				tw := table(out)
				fmt.Fprintln(tw, "CONTAINER\tTIME\tSIZE\tFILE")
				for _, l := range logs {
					fmt.Fprintf(tw, "%.12s\t%s\t%d\t%s\n", l.Container, l.Time.UTC().Format("2006-01-02T15:04:05Z"), l.Size, filepath.Base(l.Path))
				}
				return tw.Flush()
			}
			for _, l := range logs { // newest first
				if strings.HasPrefix(l.Container, args[0]) || filepath.Base(l.Path) == args[0] || l.Path == args[0] {
					f, err := os.Open(l.Path)
					if err != nil {
						return err
					}
					defer f.Close()
					_, err = io.Copy(out, f)
					return err
				}
			}
			return fmt.Errorf("no kept log matches %q (run `ckpt failure-logs` to list them)", args[0])
		},
	}
}
