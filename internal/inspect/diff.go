package inspect

import (
	"fmt"
	"io"
	"sort"
	"strings"
)

// Change is one difference between two checkpoints.
type Change struct {
	Kind   string `json:"kind"` // "process", "file" or "socket"
	Op     string `json:"op"`   // "added", "removed" or "changed"
	PID    uint32 `json:"pid"`
	FD     string `json:"fd,omitempty"` // files and sockets
	Before string `json:"before,omitempty"`
	After  string `json:"after,omitempty"`
}

// Diff lists the processes, open files and sockets that appeared (added),
// vanished (removed) or changed from a to b, ordered by kind, PID and FD.
func Diff(a, b *Checkpoint) []Change {
	var out []Change
	pa, pb := procMap(a), procMap(b)
	for _, pid := range unionKeys(pa, pb) {
		x, y := pa[pid], pb[pid]
		switch {
		case x == nil:
			out = append(out, Change{Kind: "process", Op: "added", PID: pid, After: procText(y)})
		case y == nil:
			out = append(out, Change{Kind: "process", Op: "removed", PID: pid, Before: procText(x)})
		case procText(x) != procText(y):
			out = append(out, Change{Kind: "process", Op: "changed", PID: pid, Before: procText(x), After: procText(y)})
		}
	}
	for _, kind := range []string{"file", "socket"} {
		ea, eb := fdMap(a, kind), fdMap(b, kind)
		for _, k := range unionKeys(ea, eb) {
			x, okx := ea[k]
			y, oky := eb[k]
			c := Change{Kind: kind, PID: k.pid, FD: k.fd, Before: x, After: y}
			switch {
			case !okx:
				c.Op = "added"
			case !oky:
				c.Op = "removed"
			case x != y:
				c.Op = "changed"
			default:
				continue
			}
			out = append(out, c)
		}
	}
	return out
}

type fdKey struct {
	pid uint32
	fd  string
}

func (k fdKey) less(o fdKey) bool {
	if k.pid != o.pid {
		return k.pid < o.pid
	}
	// Numeric FDs in numeric order, then cwd and root.
	if len(k.fd) != len(o.fd) {
		return len(k.fd) < len(o.fd)
	}
	return k.fd < o.fd
}

func procMap(c *Checkpoint) map[uint32]*Process {
	m := map[uint32]*Process{}
	c.Walk(func(p *Process) { m[p.PID] = p })
	return m
}

func procText(p *Process) string {
	s := fmt.Sprintf("%s ppid=%d state=%s", p.Command, p.PPID, p.State)
	if len(p.Cmdline) > 0 {
		s += " cmdline=" + strings.Join(p.Cmdline, " ")
	}
	return s
}

func fdMap(c *Checkpoint, kind string) map[fdKey]string {
	m := map[fdKey]string{}
	c.Walk(func(p *Process) {
		if kind == "file" {
			for _, f := range p.Files {
				m[fdKey{p.PID, f.FD}] = f.Type + " " + f.Path
			}
			return
		}
		for _, s := range p.Sockets {
			m[fdKey{p.PID, fmt.Sprint(s.FD)}] = s.Kind + " " + socketText(s)
		}
	})
	return m
}

func unionKeys[K comparable, V any](a, b map[K]V) []K {
	var keys []K
	for k := range a {
		keys = append(keys, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Slice(keys, func(i, j int) bool {
		switch x := any(keys[i]).(type) {
		case uint32:
			return x < any(keys[j]).(uint32)
		case fdKey:
			return x.less(any(keys[j]).(fdKey))
		}
		return false
	})
	return keys
}

// RenderDiff writes changes for people, grouped by kind.
func RenderDiff(w io.Writer, changes []Change) {
	if len(changes) == 0 {
		fmt.Fprintln(w, "no differences in processes, open files or sockets")
		return
	}
	titles := map[string]string{"process": "Processes", "file": "Open files", "socket": "Sockets"}
	marks := map[string]string{"added": "+", "removed": "-", "changed": "~"}
	last := ""
	for _, c := range changes {
		if c.Kind != last {
			fmt.Fprintln(w, titles[c.Kind])
			last = c.Kind
		}
		where := fmt.Sprintf("[%d]", c.PID)
		if c.FD != "" {
			where += " fd " + c.FD
		}
		switch c.Op {
		case "added":
			fmt.Fprintf(w, "  %s %s %s\n", marks[c.Op], where, c.After)
		case "removed":
			fmt.Fprintf(w, "  %s %s %s\n", marks[c.Op], where, c.Before)
		default:
			fmt.Fprintf(w, "  %s %s %s -> %s\n", marks[c.Op], where, c.Before, c.After)
		}
	}
}
