package main

import (
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ckpt-dev/ckpt/internal/runtime/embedded"
)

func init() { register(newPsCommand) }

func newPsCommand(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "ps",
		Short: "List the pods and containers of the embedded runtime",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			rt, err := g.embeddedRuntime()
			if err != nil {
				return err
			}
			list, err := rt.List(cmd.Context())
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAMESPACE\tPOD\tCONTAINER\tID\tIMAGE\tSTATE\tPID\tCREATED\tMEMORY")
			for _, c := range list {
				pid := "-"
				if c.Pid > 0 && c.State == "running" {
					pid = fmt.Sprint(c.Pid)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%.12s\t%s\t%s\t%s\t%s ago\t%s\n", c.Namespace, c.Pod, c.Name, c.ID, c.Image,
					c.State, pid, time.Since(c.CreatedAt).Round(time.Second), memoryColumn(rt.Memory(c.ID)))
			}
			return tw.Flush()
		},
	}
}

// memoryColumn describes a lazily restored container's memory: "-" for
// any other container.
func memoryColumn(m *embedded.MemoryState) string {
	switch {
	case m == nil:
		return "-"
	case m.State == embedded.MemoryComplete:
		return fmt.Sprintf("complete (%s after restore)", m.Complete.Sub(m.Since).Round(time.Millisecond))
	case m.State == embedded.MemoryFailed:
		return "failed: " + m.Error
	}
	return fmt.Sprintf("loading (%d MiB served)", m.Bytes>>20)
}
