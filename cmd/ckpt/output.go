package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	units "github.com/docker/go-units"
	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
	"sigs.k8s.io/yaml"
)

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// humanBytes is the one byte formatter of the CLI: binary units (KiB, MiB).
func humanBytes(n int64) string { return units.BytesSize(float64(n)) }

// progress shows one long operation on w while it runs: a bar when the
// size is known, a spinner with the elapsed time otherwise. It shows
// nothing when w is not a terminal.
type progress struct {
	bar   *progressbar.ProgressBar
	start time.Time
}

func newProgress(w io.Writer, label string, total int64) *progress {
	p := &progress{start: time.Now()}
	if !isTerminal(w) {
		return p
	}
	if total <= 0 {
		total = -1
	}
	p.bar = progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription(label),
		progressbar.OptionShowBytes(total > 0),
		progressbar.OptionUseIECUnits(true),
		progressbar.OptionSetElapsedTime(true),
		progressbar.OptionSetPredictTime(total > 0),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionSpinnerType(14),
		progressbar.OptionClearOnFinish(),
		progressbar.OptionSetRenderBlankState(true),
	)
	return p
}

// set is a client.Progress: done bytes of total (-1 unknown).
func (p *progress) set(done, total int64) {
	if p.bar == nil {
		return
	}
	if total > 0 && total != p.bar.GetMax64() {
		p.bar.ChangeMax64(total)
	}
	_ = p.bar.Set64(done)
}

// finish clears the display and returns the elapsed time.
func (p *progress) finish() time.Duration {
	if p.bar != nil {
		_ = p.bar.Exit()
		// Exit leaves the last state on the line; clear it.
		_ = p.bar.Clear()
	}
	return time.Since(p.start)
}

// outputFormat is -o: "" (a table), wide, json or yaml.
type outputFormat string

func (o *outputFormat) String() string { return string(*o) }
func (o *outputFormat) Type() string   { return "json|yaml|wide" }
func (o *outputFormat) Set(v string) error {
	switch v {
	case "", "wide", "json", "yaml":
		*o = outputFormat(v)
		return nil
	}
	return fmt.Errorf("%q: want json, yaml or wide", v)
}

// structured writes v as JSON or YAML and reports whether it did (false:
// the caller prints its table).
func (o outputFormat) structured(w io.Writer, v any) (bool, error) {
	switch o {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return true, enc.Encode(v)
	case "yaml":
		b, err := yaml.Marshal(v)
		if err != nil {
			return true, err
		}
		_, err = w.Write(b)
		return true, err
	}
	return false, nil
}

// table is a tab-aligned table on w.
func table(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0) }

// ago renders how long ago t was, as a table column.
func ago(t time.Time) string { return units.HumanDuration(time.Since(t)) }
