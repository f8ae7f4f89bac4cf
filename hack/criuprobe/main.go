// Command criuprobe proves that a CRIU binary dumps TCP, UDP and unix sockets
// and established connections here. hack/install-deps.sh runs it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/ckpt-dev/ckpt/internal/criuprobe"
)

func main() {
	criuprobe.RunChildIfRequested()
	criu := flag.String("criu", "criu", "the criu binary to prove")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := criuprobe.Probe(ctx, *criu); err != nil {
		fmt.Fprintln(os.Stderr, "criuprobe:", err)
		os.Exit(1)
	}
	fmt.Println("criu dumps TCP (listening and established), UDP and unix sockets: ok")
}
