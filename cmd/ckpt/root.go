package main

import (
	"fmt"
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
	strictGroups(root)
	return root
}

// strictGroups makes a command group (`ckpt image`, `ckpt checkpoints`)
// refuse an unknown subcommand with an error: cobra shows the help and
// exits 0 for it otherwise.
func strictGroups(cmd *cobra.Command) {
	for _, c := range cmd.Commands() {
		strictGroups(c)
	}
	if cmd.HasParent() && cmd.HasSubCommands() && !cmd.Runnable() {
		cmd.Args = cobra.ArbitraryArgs
		cmd.RunE = func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("unknown command %q for %q", args[0], cmd.CommandPath())
			}
			return cmd.Help()
		}
	}
}

// subcommands is filled by each subcommand's file in init, so that files can
// be added without editing this one.
var subcommands []func(*globalOptions) *cobra.Command

func register(f func(*globalOptions) *cobra.Command) { subcommands = append(subcommands, f) }
