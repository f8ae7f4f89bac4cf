// Command ckpt is a node agent for container checkpointing.
package main

import (
	"fmt"
	"os"

	"github.com/ckpt-dev/ckpt/internal/criuprobe"
)

func main() {
	criuprobe.RunChildIfRequested()
	if err := newRootCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "ckpt:", err)
		os.Exit(1)
	}
}
