package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/term"
)

// isTerminal: progress is drawn only when stderr is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// spinner shows what and the elapsed time on a terminal until stop.
func (o *options) spinner(what string) (stop func(ok bool)) {
	if !isTerminal(o.stderr) {
		return func(bool) {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	start := time.Now()
	go func() {
		defer wg.Done()
		frames := `|/-\`
		for i := 0; ; i++ {
			fmt.Fprintf(o.stderr, "\r%c %s (%s)", frames[i%len(frames)], what, time.Since(start).Round(time.Second))
			select {
			case <-done:
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	return func(ok bool) {
		close(done)
		wg.Wait()
		mark := "done"
		if !ok {
			mark = "failed"
		}
		fmt.Fprintf(o.stderr, "\r%s: %s after %s\n", what, mark, time.Since(start).Round(time.Millisecond))
	}
}

// progress draws a download's bytes on a terminal.
func (o *options) progress(what string) func(done, total int64) {
	if !isTerminal(o.stderr) {
		return nil
	}
	var last time.Time
	return func(done, total int64) {
		if time.Since(last) < 100*time.Millisecond && done != total {
			return
		}
		last = time.Now()
		if total > 0 {
			fmt.Fprintf(o.stderr, "\r%s: %d/%d MiB (%d%%)", what, done>>20, total>>20, done*100/total)
		} else {
			fmt.Fprintf(o.stderr, "\r%s: %d MiB", what, done>>20)
		}
	}
}

func (o *options) endProgress() {
	if isTerminal(o.stderr) {
		fmt.Fprintln(o.stderr)
	}
}
