package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ckpt-dev/ckpt/internal/runtime"
)

func init() { register(newRmCommand) }

func newRmCommand(g *globalOptions) *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "rm [--all] ID|NAMESPACE/POD/CONTAINER...",
		Short: "Stop and remove containers of the embedded runtime",
		Long: "Stop (SIGTERM, then SIGKILL) and remove containers. A container that a pod manifest\n" +
			"still lists is created again by a running agent; remove the manifest first.",
		RunE: func(cmd *cobra.Command, args []string) error {
			if all == (len(args) > 0) {
				return fmt.Errorf("give container IDs or NAMESPACE/POD/CONTAINER, or --all")
			}
			rt, err := g.embeddedRuntime()
			if err != nil {
				return err
			}
			list, err := rt.List(cmd.Context())
			if err != nil {
				return err
			}
			var targets []runtime.Container
			for _, c := range list {
				if all || matchesAny(c, args) {
					targets = append(targets, c)
				}
			}
			if len(targets) == 0 && !all {
				return fmt.Errorf("no container matches %s", strings.Join(args, " "))
			}
			for _, c := range targets {
				if err := rt.Remove(context.WithoutCancel(cmd.Context()), c.ID); err != nil {
					return err
				}
				fmt.Printf("removed %s/%s/%s (%.12s)\n", c.Namespace, c.Pod, c.Name, c.ID)
			}
			if all {
				// Sandboxes an interrupted pod start left without containers.
				return errors.Join(rt.RemoveEmptyPods(context.WithoutCancel(cmd.Context()), 0)...)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "remove every container")
	return cmd
}

func matchesAny(c runtime.Container, args []string) bool {
	for _, a := range args {
		if len(a) >= 6 && strings.HasPrefix(c.ID, a) {
			return true
		}
		if a == c.Namespace+"/"+c.Pod+"/"+c.Name {
			return true
		}
	}
	return false
}
