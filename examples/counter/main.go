// counter prints an increasing counter once a second, to stdout and to a log
// file it keeps open, so that checkpoint and restore can be checked to the
// exact step. Environment:
//
//	COUNTER_MEM_MIB   hold this many MiB of touched, non-zero memory
//	COUNTER_MARKER    keep this string in memory (for memory search)
//	COUNTER_LOG       file to append to (default /counter.log)
//	COUNTER_INTERVAL  time between lines (default 1s)
//
// With COUNTER_MEM_MIB set it prints "memsum <sha256 of the memory held>"
// once the memory is filled and again on every SIGUSR1, so that a restored
// copy can prove its memory is the checkpointed one.
package main

import (
	"crypto/sha256"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

var (
	ballast [][]byte
	marker  []byte
)

func main() {
	if mib, _ := strconv.Atoi(os.Getenv("COUNTER_MEM_MIB")); mib > 0 {
		for i := 0; i < mib; i++ {
			b := make([]byte, 1<<20)
			for j := range b {
				b[j] = byte(j*7 + i + 1)
			}
			ballast = append(ballast, b)
		}
	}
	if mib, _ := strconv.Atoi(os.Getenv("COUNTER_FILE_MIB")); mib > 0 {
		// Changed files in the root filesystem: each checkpoint carries
		// them in rootfs-diff.tar, taken while the container is frozen.
		if err := os.WriteFile("/files.bin", make([]byte, mib<<20), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "counter:", err)
			os.Exit(1)
		}
	}
	marker = []byte("marker:" + os.Getenv("COUNTER_MARKER"))
	interval := time.Second
	if d, err := time.ParseDuration(os.Getenv("COUNTER_INTERVAL")); err == nil && d > 0 {
		interval = d
	}
	logPath := os.Getenv("COUNTER_LOG")
	if logPath == "" {
		logPath = "/counter.log"
	}
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, "counter:", err)
		os.Exit(1)
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	sum := make(chan os.Signal, 1)
	signal.Notify(sum, syscall.SIGUSR1)
	if len(ballast) > 0 {
		fmt.Printf("memsum %x\n", memsum())
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for i := 0; ; i++ {
		line := fmt.Sprintf("count %d\n", i)
		os.Stdout.WriteString(line)
		logFile.WriteString(line)
	wait:
		for {
			select {
			case <-stop:
				fmt.Printf("counter stopped at %d (%d bytes of marker held)\n", i, len(marker))
				return
			case <-sum:
				fmt.Printf("memsum %x\n", memsum())
			case <-tick.C:
				break wait
			}
		}
	}
}

// memsum is the SHA-256 of the memory the counter holds.
func memsum() []byte {
	h := sha256.New()
	for _, b := range ballast {
		h.Write(b)
	}
	return h.Sum(nil)
}
