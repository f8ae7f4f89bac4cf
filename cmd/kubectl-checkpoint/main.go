// Command kubectl-checkpoint is a kubectl plugin: `kubectl checkpoint POD`
// checkpoints a pod's container on its node, and `kubectl checkpoint
// ls|get|restore` manage the archives of the ckpt agent on that node. It
// uses the user's kubeconfig (client-go) and ckpt's API client
// (pkg/client). See docs/kubernetes.md.
package main

import (
	"fmt"
	"os"
)

func main() {
	if err := newRootCommand(os.Stdout, os.Stderr).Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}
