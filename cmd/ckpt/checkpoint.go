package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

func init() { register(newCheckpointCommand) }

func newCheckpointCommand(*globalOptions) *cobra.Command {
	var (
		client         clientOptions
		timeout        time.Duration
		tcpEstablished bool
	)
	cmd := &cobra.Command{
		Use:   "checkpoint NAMESPACE/POD/CONTAINER",
		Short: "Checkpoint a running container through a ckpt (or kubelet) server",
		Long: `Asks the server to checkpoint one container (POST /checkpoint/NS/POD/CTR)
and prints the path of the archive it wrote on the server's node.`,
		Example: `  ckpt checkpoint default/web/app --cacert /var/lib/kubelet/pki/ckpt.crt --token-file token
  ckpt checkpoint default/web/app --server http://127.0.0.1:10255 --timeout 5m`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, err := splitRef(args[0])
			if err != nil {
				return err
			}
			c, err := client.newClient()
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			paths, err := runCheckpoint(ctx, c, ref, timeout, tcpEstablished, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			for _, p := range paths {
				fmt.Fprintln(cmd.OutOrStdout(), p)
			}
			return nil
		},
	}
	client.addFlags(cmd.Flags())
	cmd.Flags().BoolVar(&tcpEstablished, "tcp-established", false, "also checkpoint established TCP connections (CRIU --tcp-established; ckpt servers only)")
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "how long the server may take, sent in whole seconds (rounded up); 0 = the server's default (2m on a kubelet)")
	return cmd
}

// splitRef splits NS/POD/CTR. Names are validated by the server; here only
// the shape is checked, and "." or ".." segments that a URL would resolve
// into another path are refused.
func splitRef(s string) ([3]string, error) {
	parts := strings.Split(s, "/")
	if len(parts) != 3 {
		return [3]string{}, fmt.Errorf("%q: want NAMESPACE/POD/CONTAINER", s)
	}
	for _, p := range parts {
		if p == "" || p == "." || p == ".." {
			return [3]string{}, fmt.Errorf("%q: want NAMESPACE/POD/CONTAINER", s)
		}
	}
	return [3]string{parts[0], parts[1], parts[2]}, nil
}

// timeoutSeconds renders a timeout as the API's whole seconds, rounding up
// so that 500ms does not become "0" (the server's default).
func timeoutSeconds(d time.Duration) (string, error) {
	if d < 0 {
		return "", fmt.Errorf("--timeout %s: must not be negative", d)
	}
	return strconv.FormatInt(int64(math.Ceil(d.Seconds())), 10), nil
}

// maxCheckpointBody bounds the success answer ({"items":[path]}).
const maxCheckpointBody = 1 << 20

func runCheckpoint(ctx context.Context, c *apiClient, ref [3]string, timeout time.Duration, tcpEstablished bool, stderr io.Writer) ([]string, error) {
	query := url.Values{}
	if tcpEstablished {
		query.Set("tcpEstablished", "true")
	}
	if timeout != 0 {
		secs, err := timeoutSeconds(timeout)
		if err != nil {
			return nil, err
		}
		query.Set("timeout", secs)
	}
	what := strings.Join(ref[:], "/")
	if timeout > 0 {
		// The server gives up after timeout; allow it a minute to answer.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout+time.Minute)
		defer cancel()
	}
	stopTicker := startTicker(stderr, "checkpointing "+what)
	resp, err := c.do(ctx, http.MethodPost, []string{"checkpoint", ref[0], ref[1], ref[2]}, query)
	elapsed := stopTicker()
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", what, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("checkpoint %s: %w", what, statusError(resp))
	}
	var out struct {
		Items []string `json:"items"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxCheckpointBody)).Decode(&out); err != nil {
		return nil, fmt.Errorf("checkpoint %s: read answer: %w", what, err)
	}
	if len(out.Items) == 0 {
		return nil, fmt.Errorf("checkpoint %s: the server answered no archive path", what)
	}
	if isTerminal(stderr) {
		fmt.Fprintf(stderr, "checkpointed %s in %s\n", what, elapsed.Round(100*time.Millisecond))
	}
	return out.Items, nil
}

// startTicker shows "label… 12s" on stderr, updated every second, when
// stderr is a terminal; otherwise it prints nothing. The returned func
// clears the line and returns the elapsed time.
func startTicker(w io.Writer, label string) (stop func() time.Duration) {
	start := time.Now()
	if !isTerminal(w) {
		return func() time.Duration { return time.Since(start) }
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			fmt.Fprintf(w, "\r\x1b[K%s… %s", label, time.Since(start).Truncate(time.Second))
			select {
			case <-done:
				fmt.Fprint(w, "\r\x1b[K")
				return
			case <-t.C:
			}
		}
	}()
	return func() time.Duration {
		close(done)
		<-finished
		return time.Since(start)
	}
}

// isTerminal reports whether w is a terminal (a tty answers TCGETS).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
