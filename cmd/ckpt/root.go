package main

import (
	"github.com/spf13/cobra"
)

// globalOptions are shared by every subcommand.
type globalOptions struct {
	rootDir string
}

func newRootCommand() *cobra.Command {
	g := &globalOptions{}
	root := &cobra.Command{
		Use:           "ckpt",
		Short:         "Checkpoint, restore and inspect containers on a node",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.rootDir, "root-dir", "/var/lib/kubelet", "directory for ckpt's state; archives go to <root-dir>/checkpoints")
	for _, add := range subcommands {
		root.AddCommand(add(g))
	}
	return root
}

// subcommands is filled by each subcommand's file in init, so that files can
// be added without editing this one.
var subcommands []func(*globalOptions) *cobra.Command

func register(f func(*globalOptions) *cobra.Command) { subcommands = append(subcommands, f) }
