package main

import (
	"github.com/spf13/cobra"

	"github.com/ckpt-dev/ckpt/internal/runtime/embedded"
)

func init() { register(newCaptureFrozenCommand) }

// newCaptureFrozenCommand is CRIU's post-dump hook of the embedded runtime.
func newCaptureFrozenCommand(*globalOptions) *cobra.Command {
	var c embedded.FrozenCapture
	cmd := &cobra.Command{
		Use:    "capture-frozen",
		Short:  "Capture a frozen container's file changes (run by CRIU; not for direct use)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE:   func(*cobra.Command, []string) error { return embedded.RunFrozenCapture(c) },
	}
	f := cmd.Flags()
	for _, fl := range []struct {
		p          *string
		name, help string
	}{
		{&c.Upper, "upper", "overlay upper dir"},
		{&c.Diff, "diff", "rootfs-diff.tar to write"},
		{&c.Deleted, "deleted", "deleted.files to write"},
		{&c.Log, "log", "container log"},
		{&c.LogSize, "log-size", "file for the log's size"},
	} {
		f.StringVar(fl.p, fl.name, "", fl.help)
		cmd.MarkFlagRequired(fl.name)
	}
	f.StringArrayVar(&c.Volumes, "volume", nil, "an emptyDir to capture, NAME=DIR (repeatable)")
	return cmd
}
