package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/ckpt-dev/ckpt/internal/runtime/embedded"
)

func init() { register(newPsCommand) }

// psEntry is one container as `ps -o json|yaml` prints it.
type psEntry struct {
	ID        string    `json:"id"`
	Namespace string    `json:"namespace"`
	Pod       string    `json:"pod"`
	Container string    `json:"container"`
	Image     string    `json:"image"`
	ImageID   string    `json:"imageID,omitempty"`
	State     string    `json:"state"`
	Pid       int       `json:"pid,omitempty"`
	Created   time.Time `json:"created"`
	// ExitCode and Reason (OOMKilled) of an exited container.
	ExitCode *int   `json:"exitCode,omitempty"`
	Reason   string `json:"reason,omitempty"`
	// Restarts by the pod's restart policy, and how the run before ended.
	Restarts     int    `json:"restarts"`
	Ready        bool   `json:"ready"`
	LastExitCode *int   `json:"lastExitCode,omitempty"`
	LastReason   string `json:"lastReason,omitempty"`
	// Memory is the memory of a lazily restored container.
	Memory *embedded.MemoryState `json:"memory,omitempty"`
}

// exit renders how the container (or, while it runs, its last run) ended.
func (e psEntry) exit() string {
	code, reason := e.ExitCode, e.Reason
	if code == nil {
		code, reason = e.LastExitCode, e.LastReason
	}
	if code == nil {
		return "-"
	}
	s := fmt.Sprint(*code)
	if reason != "" {
		s += " (" + reason + ")"
	}
	return s
}

func newPsCommand(g *globalOptions) *cobra.Command {
	var out outputFormat
	cmd := &cobra.Command{
		Use:   "ps",
		Short: "List the pods and containers of the embedded runtime",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			rt, err := g.embeddedRuntime()
			if err != nil {
				return err
			}
			list, err := rt.List(cmd.Context())
			if err != nil {
				return err
			}
			entries := make([]psEntry, 0, len(list))
			for _, c := range list {
				e := psEntry{ID: c.ID, Namespace: c.Namespace, Pod: c.Pod, Container: c.Name, Image: c.Image,
					ImageID: c.ImageID, State: string(c.State), Created: c.CreatedAt, Memory: rt.Memory(c.ID)}
				if c.Pid > 0 && c.State == "running" {
					e.Pid = c.Pid
				}
				if c.State == "exited" {
					code := c.ExitCode
					e.ExitCode, e.Reason = &code, c.ExitReason
				}
				e.Restarts, e.LastExitCode, e.LastReason, e.Ready = c.Restarts, c.LastExitCode, c.LastExitReason, c.Ready
				entries = append(entries, e)
			}
			w := cmd.OutOrStdout()
			if done, err := out.structured(w, entries); done {
				return err
			}
			tw := table(w)
			wide := out == "wide"
			if wide {
				fmt.Fprintln(tw, "NAMESPACE\tPOD\tCONTAINER\tID\tIMAGE\tIMAGE ID\tSTATE\tPID\tCREATED\tMEMORY\tEXIT\tRESTARTS\tREADY")
			} else {
				fmt.Fprintln(tw, "NAMESPACE\tPOD\tCONTAINER\tID\tIMAGE\tSTATE\tPID\tCREATED\tMEMORY\tEXIT\tRESTARTS\tREADY")
			}
			for _, e := range entries {
				pid := "-"
				if e.Pid > 0 {
					pid = fmt.Sprint(e.Pid)
				}
				if wide {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%v\n", e.Namespace, e.Pod, e.Container, e.ID, e.Image,
						e.ImageID, e.State, pid, e.Created.UTC().Format(time.RFC3339), memoryColumn(e.Memory), e.exit(), e.Restarts, e.Ready)
					continue
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%.12s\t%s\t%s\t%s\t%s ago\t%s\t%s\t%d\t%v\n", e.Namespace, e.Pod, e.Container, e.ID, e.Image,
					e.State, pid, ago(e.Created), memoryColumn(e.Memory), e.exit(), e.Restarts, e.Ready)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().VarP(&out, "output", "o", "output format: json, yaml or wide")
	return cmd
}

// memoryColumn describes a lazily restored container's memory: "-" for
// any other container.
func memoryColumn(m *embedded.MemoryState) string {
	switch {
	case m == nil:
		return "-"
	case m.State == embedded.MemoryComplete:
		return fmt.Sprintf("complete (%s after restore)", m.Complete.Sub(m.Since).Round(time.Millisecond))
	case m.State == embedded.MemoryFailed:
		return "failed: " + m.Error
	}
	return fmt.Sprintf("loading (%d MiB served)", m.Bytes>>20)
}
