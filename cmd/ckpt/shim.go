package main

import (
	"time"

	"github.com/spf13/cobra"

	"github.com/ckpt-dev/ckpt/internal/runtime/embedded"
)

func init() { register(newShimCommand) }

// newShimCommand is the per-container shim the embedded runtime starts.
func newShimCommand(*globalOptions) *cobra.Command {
	var o embedded.ShimOptions
	cmd := &cobra.Command{
		Use:    "shim",
		Short:  "Per-container shim (started by ckpt serve; not for direct use)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE:   func(*cobra.Command, []string) error { return embedded.RunShim(o) },
	}
	f := cmd.Flags()
	f.StringVar(&o.ID, "id", "", "container ID")
	f.StringVar(&o.Dir, "dir", "", "container directory")
	f.StringVar(&o.RuncRoot, "runc-root", "", "runc state root")
	f.StringVar(&o.Runc, "runc", "runc", "runc binary")
	f.StringVar(&o.Criu, "criu", "criu", "criu binary")
	f.StringVar(&o.Restore, "restore", "", "restore from the CRIU images in this directory")
	f.StringArrayVar(&o.Forward, "forward", nil, "serve a hostPort into the container's network namespace (proto:hostIP:hostPort:containerPort)")
	f.BoolVar(&o.TCPEstablished, "tcp-established", false, "restore established TCP connections")
	f.BoolVar(&o.Lazy, "lazy", false, "restore memory lazily from the archive on fd 4")
	f.BoolVar(&o.Verify, "verify", false, "resume the restored tasks only once the page images are verified")
	return cmd
}

func init() { register(newMemoryWaitCommand) }

// newMemoryWaitCommand is CRIU's pre-resume hook of an in-place restore.
func newMemoryWaitCommand(*globalOptions) *cobra.Command {
	var dir, id, state string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:    "memory-wait",
		Short:  "Wait until a restored container's memory is complete (CRIU hook; not for direct use)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE:   func(*cobra.Command, []string) error { return embedded.WaitState(dir, state, id, timeout) },
	}
	cmd.Flags().StringVar(&dir, "dir", "", "container directory")
	cmd.Flags().StringVar(&state, "state", "memory.json", "the state file in the container directory")
	cmd.Flags().StringVar(&id, "id", "", "container ID")
	cmd.Flags().DurationVar(&timeout, "timeout", 10*time.Minute, "give up (and kill the restored tasks) after this long")
	return cmd
}
