package main

import (
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
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
			fmt.Fprintln(tw, "NAMESPACE\tPOD\tCONTAINER\tID\tIMAGE\tSTATE\tPID\tCREATED\tEXIT")
			for _, c := range list {
				pid := "-"
				if c.Pid > 0 && c.State == "running" {
					pid = fmt.Sprint(c.Pid)
				}
				exit := "-"
				if c.State == "exited" {
					exit = fmt.Sprint(c.ExitCode)
					if c.ExitReason != "" {
						exit += " (" + c.ExitReason + ")"
					}
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%.12s\t%s\t%s\t%s\t%s ago\t%s\n", c.Namespace, c.Pod, c.Name, c.ID, c.Image,
					c.State, pid, time.Since(c.CreatedAt).Round(time.Second), exit)
			}
			return tw.Flush()
		},
	}
}
