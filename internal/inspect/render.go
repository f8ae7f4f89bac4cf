package inspect

import (
	"encoding/json"
	"fmt"
	units "github.com/docker/go-units"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// View selects the parts of a Checkpoint that are shown.
type View struct {
	PsTree, Cmdline, Env, Files, Sockets, Mounts, Stats, Memory bool
}

// All is the view of --all.
func All() View { return View{true, true, true, true, true, true, true, true} }

// processes reports whether the view shows the process tree.
func (v View) processes() bool {
	return v.PsTree || v.Cmdline || v.Env || v.Files || v.Sockets || v.Memory
}

// Filter returns a copy of c with only what v shows; it is what the json
// format prints.
func (v View) Filter(c *Checkpoint) *Checkpoint {
	out := *c
	out.Processes, out.Mounts = nil, nil
	if v.Mounts {
		out.Mounts = c.Mounts
	}
	if !v.processes() {
		return &out
	}
	var cp func([]*Process) []*Process
	cp = func(ps []*Process) []*Process {
		var res []*Process
		for _, p := range ps {
			q := *p
			if !v.Cmdline {
				q.Cmdline = nil
			}
			if !v.Env {
				q.Env = nil
			}
			if !v.Files {
				q.Files = nil
			}
			if !v.Sockets {
				q.Sockets = nil
			}
			if !v.Memory {
				q.Memory = nil
			}
			q.Children = cp(p.Children)
			res = append(res, &q)
		}
		return res
	}
	out.Processes = cp(c.Processes)
	return &out
}

// Render writes checkpoints in format "tree", "json" or "table".
func Render(w io.Writer, cs []*Checkpoint, v View, format string) error {
	switch format {
	case "json":
		out := make([]*Checkpoint, len(cs))
		for i, c := range cs {
			out[i] = v.Filter(c)
		}
		e := json.NewEncoder(w)
		e.SetIndent("", "  ")
		return e.Encode(out)
	case "tree", "":
		for i, c := range cs {
			if i > 0 {
				fmt.Fprintln(w)
			}
			renderTree(w, c, v)
		}
		return nil
	case "table":
		return renderTable(w, cs, v)
	}
	return fmt.Errorf("unknown format %q (tree, json or table)", format)
}

// node is a line of the tree output.
type node struct {
	text     string
	children []*node
}

func (n *node) add(format string, a ...any) *node {
	c := &node{text: fmt.Sprintf(format, a...)}
	n.children = append(n.children, c)
	return c
}

func (n *node) print(w io.Writer, prefix string) {
	for i, c := range n.children {
		branch, next := "├── ", "│   "
		if i == len(n.children)-1 {
			branch, next = "└── ", "    "
		}
		fmt.Fprintf(w, "%s%s%s\n", prefix, branch, c.text)
		c.print(w, prefix+next)
	}
}

func renderTree(w io.Writer, c *Checkpoint, v View) {
	k := c.Container
	root := &node{text: k.Name}
	root.add("ID: %s", k.ID)
	root.add("Image: %s", k.Image)
	root.add("Runtime: %s", k.Runtime)
	root.add("Engine: %s", k.Engine)
	if k.Pod != "" {
		root.add("Pod: %s/%s", k.Namespace, k.Pod)
	}
	if pa := c.PodArchive; pa != nil {
		root.add("Pod archive: %s/%s (containers: %s)", pa.Namespace, pa.Pod, strings.Join(pa.Containers, ", "))
	}
	root.add("Created: %s", timeString(k.Created))
	root.add("Checkpointed: %s", timeString(k.Checkpointed))
	size := root.add("Checkpoint size: %s", HumanBytes(c.Sizes.Checkpoint))
	size.add("Memory pages size: %s", HumanBytes(c.Sizes.MemoryPages))
	root.add("Root FS diff size: %s", HumanBytes(c.Sizes.RootfsDiff))
	root.add("Signature: %s", signatureText(c.Signature))
	if s := c.Statistics; s != nil {
		st := root.add("CRIU dump statistics")
		if v.Stats {
			st.add("Freezing time: %s", micros(s.FreezingTimeUS))
		}
		st.add("Frozen time: %s", micros(s.FrozenTimeUS))
		if v.Stats {
			st.add("Memdump time: %s", micros(s.MemdumpTimeUS))
			st.add("Memwrite time: %s", micros(s.MemwriteTimeUS))
			st.add("Pages scanned: %d", s.PagesScanned)
			st.add("Pages skipped (in parent): %d", s.PagesSkipped)
		}
		st.add("Pages written: %d", s.PagesWritten)
	}
	if v.processes() {
		pt := root.add("Process tree")
		var add func(parent *node, ps []*Process)
		add = func(parent *node, ps []*Process) {
			for _, p := range ps {
				n := parent.add("[%d] %s", p.PID, p.Command)
				if p.State != "Alive" {
					n.text += " (" + p.State + ")"
				}
				if v.Cmdline && len(p.Cmdline) > 0 {
					n.add("Command line: %s", strings.Join(p.Cmdline, " "))
				}
				if v.Env && len(p.Env) > 0 {
					env := n.add("Environment variables")
					for _, e := range p.Env {
						env.add("%s", e)
					}
				}
				if v.Memory && p.Memory != nil {
					m := n.add("Memory")
					m.add("Dumped: %s", HumanBytes(p.Memory.Dumped))
					m.add("Virtual: %s in %d mappings", HumanBytes(p.Memory.Virtual), p.Memory.Mappings)
					m.add("Shared: %s", HumanBytes(p.Memory.Shared))
				}
				if v.Files && len(p.Files) > 0 {
					f := n.add("Open files")
					for _, file := range p.Files {
						f.add("[%s]  %s", fdLabel(file), file.Path)
					}
				}
				if v.Sockets && len(p.Sockets) > 0 {
					s := n.add("Open sockets")
					for _, sk := range p.Sockets {
						s.add("[%d %s]  %s", sk.FD, sk.Kind, socketText(sk))
					}
				}
				add(n, p.Children)
			}
		}
		add(pt, c.Processes)
	}
	if v.Mounts {
		m := root.add("Mounts")
		for _, mt := range c.Mounts {
			d := m.add("Destination: %s", mt.Destination)
			d.add("Type: %s", mt.Type)
			d.add("Source: %s", mt.Source)
		}
	}
	fmt.Fprintln(w, root.text)
	root.print(w, "")
}

// signatureText is the tree's line: state, key and trust, or the reason.
func signatureText(s Signature) string {
	switch {
	case !s.Signed:
		return "none (unsigned: not written by a ckpt node)"
	case !s.Valid:
		return "NOT VALID: " + s.Error
	}
	text := "valid, " + s.KeyType + " key " + s.Key
	if s.Trusted != nil {
		if *s.Trusted {
			text += " (trusted)"
		} else {
			text += " (NOT trusted)"
		}
	}
	return text
}

// signatureWord is the table's column.
func signatureWord(s Signature) string {
	switch {
	case !s.Signed:
		return "unsigned"
	case !s.Valid:
		return "invalid"
	case s.Trusted == nil:
		return "valid " + s.Key
	case *s.Trusted:
		return "trusted " + s.Key
	}
	return "untrusted " + s.Key
}

func fdLabel(f File) string {
	if f.FD == "cwd" || f.FD == "root" {
		return f.FD
	}
	return f.Type + " " + f.FD
}

func socketText(s Socket) string {
	var parts []string
	for _, p := range []string{s.Family, s.Protocol, s.Type, s.State} {
		if p != "" {
			parts = append(parts, p)
		}
	}
	text := strings.Join(parts, " ")
	if s.Kind == "INETSK" {
		text += fmt.Sprintf(" %s:%d -> %s:%d", s.Src, s.SrcPort, s.Dst, s.DstPort)
	} else if s.Src != "" {
		text += " " + s.Src
	}
	return text
}

func renderTable(w io.Writer, cs []*Checkpoint, v View) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CONTAINER\tIMAGE\tID\tRUNTIME\tENGINE\tCREATED\tCHECKPOINTED\tCHKPT SIZE\tROOTFS DIFF\tFROZEN\tPAGES WRITTEN\tSIGNATURE")
	for _, c := range cs {
		k := c.Container
		frozen, pages := "-", "-"
		if s := c.Statistics; s != nil {
			frozen, pages = micros(s.FrozenTimeUS), fmt.Sprint(s.PagesWritten)
		}
		fmt.Fprintf(tw, "%s\t%s\t%.12s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", k.Name, k.Image, k.ID, k.Runtime, k.Engine,
			timeString(k.Created), timeString(k.Checkpointed), HumanBytes(c.Sizes.Checkpoint), HumanBytes(c.Sizes.RootfsDiff), frozen, pages,
			signatureWord(c.Signature))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, c := range cs {
		if v.processes() {
			fmt.Fprintf(w, "\nProcesses of %s\n", c.Container.Name)
			tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			head := "PID\tPPID\tCOMMAND\tSTATE"
			if v.Memory {
				head += "\tDUMPED\tVIRTUAL\tSHARED"
			}
			if v.Cmdline {
				head += "\tCMDLINE"
			}
			fmt.Fprintln(tw, head)
			c.Walk(func(p *Process) {
				row := fmt.Sprintf("%d\t%d\t%s\t%s", p.PID, p.PPID, p.Command, p.State)
				if v.Memory {
					m := p.Memory
					if m == nil {
						m = &Memory{}
					}
					row += fmt.Sprintf("\t%s\t%s\t%s", HumanBytes(m.Dumped), HumanBytes(m.Virtual), HumanBytes(m.Shared))
				}
				if v.Cmdline {
					row += "\t" + strings.Join(p.Cmdline, " ")
				}
				fmt.Fprintln(tw, row)
			})
			tw.Flush()
		}
		if v.Files {
			fmt.Fprintln(w)
			tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "PID\tFD\tTYPE\tPATH")
			c.Walk(func(p *Process) {
				for _, f := range p.Files {
					fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", p.PID, f.FD, f.Type, f.Path)
				}
			})
			tw.Flush()
		}
		if v.Sockets {
			fmt.Fprintln(w)
			tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "PID\tFD\tKIND\tSOCKET")
			c.Walk(func(p *Process) {
				for _, s := range p.Sockets {
					fmt.Fprintf(tw, "%d\t%d\t%s\t%s\n", p.PID, s.FD, s.Kind, socketText(s))
				}
			})
			tw.Flush()
		}
		if v.Env {
			fmt.Fprintln(w)
			tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "PID\tENVIRONMENT")
			c.Walk(func(p *Process) {
				for _, e := range p.Env {
					fmt.Fprintf(tw, "%d\t%s\n", p.PID, e)
				}
			})
			tw.Flush()
		}
		if v.Mounts {
			fmt.Fprintln(w)
			tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "DESTINATION\tTYPE\tSOURCE")
			for _, m := range c.Mounts {
				fmt.Fprintf(tw, "%s\t%s\t%s\n", m.Destination, m.Type, m.Source)
			}
			tw.Flush()
		}
	}
	return nil
}

func timeString(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.Format(time.RFC3339)
}

func micros(us uint32) string {
	return (time.Duration(us) * time.Microsecond).String()
}

// HumanBytes formats a size with binary units ("1.5MiB"): go-units, the
// one byte formatter of ckpt's output.
func HumanBytes(n int64) string { return units.BytesSize(float64(n)) }
