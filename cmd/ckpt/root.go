package main

import (
	"os"

	"github.com/spf13/cobra"
)

// globalOptions are shared by every subcommand.
type globalOptions struct {
	rootDir string
}

// defaultRootDir is the kubelet's root dir, or $CKPT_ROOT_DIR.
func defaultRootDir() string {
	if d := os.Getenv("CKPT_ROOT_DIR"); d != "" {
		return d
	}
	return "/var/lib/kubelet"
}

func newRootCommand() *cobra.Command {
	g := &globalOptions{}
	root := &cobra.Command{
		Use:           "ckpt",
		Short:         "Checkpoint, restore and inspect containers on a node",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.rootDir, "root-dir", defaultRootDir(),
		"directory for ckpt's state ($CKPT_ROOT_DIR); archives go to <root-dir>/checkpoints, the agent's local socket is <root-dir>/ckpt.sock")
	for _, add := range subcommands {
		root.AddCommand(add(g))
	}
	return root
}

// subcommands is filled by each subcommand's file in init, so that files can
// be added without editing this one.
var subcommands []func(*globalOptions) *cobra.Command

func register(f func(*globalOptions) *cobra.Command) { subcommands = append(subcommands, f) }
