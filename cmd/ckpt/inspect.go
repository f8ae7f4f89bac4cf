package main

import (
	"fmt"
	"os"
	"sync"
	"time"

	"filippo.io/age"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/ckpt-dev/ckpt/internal/archive"
	"github.com/ckpt-dev/ckpt/internal/inspect"
)

func init() { register(newInspectCommand) }

// readFlags are shared by inspect, memsearch, memdump and diff.
type readFlags struct {
	identities []string
	tempDir    string
}

func (r *readFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringArrayVar(&r.identities, "identity", nil, "age identity file to decrypt .age archives (repeatable)")
	cmd.Flags().StringVar(&r.tempDir, "temp-dir", "", "parent of the private temporary directory (default $TMPDIR)")
}

func (r *readFlags) options() (inspect.Options, error) {
	var ids []age.Identity
	for _, path := range r.identities {
		got, err := archive.ParseIdentitiesFile(path)
		if err != nil {
			return inspect.Options{}, err
		}
		ids = append(ids, got...)
	}
	opts := inspect.Options{Identities: ids, TempDir: r.tempDir}
	if stderrTerminal() {
		opts.Progress = newProgress()
	}
	return opts, nil
}

func stderrTerminal() bool {
	_, err := unix.IoctlGetTermios(int(os.Stderr.Fd()), unix.TCGETS)
	return err == nil
}

// newProgress reports page images read on stderr, at most twice a second,
// once the read has lasted a second.
func newProgress() func(read, total int64) {
	var mu sync.Mutex
	start := time.Now()
	var last time.Time
	return func(read, total int64) {
		mu.Lock()
		defer mu.Unlock()
		now := time.Now()
		if now.Sub(start) < time.Second || now.Sub(last) < 500*time.Millisecond {
			return
		}
		last = now
		fmt.Fprintf(os.Stderr, "\r\033[Kread %s of memory pages (%s listed so far)", inspect.HumanBytes(read), inspect.HumanBytes(total))
	}
}

func clearProgress(opts inspect.Options) {
	if opts.Progress != nil {
		fmt.Fprint(os.Stderr, "\r\033[K")
	}
}

func newInspectCommand(g *globalOptions) *cobra.Command {
	var (
		rf     readFlags
		v      inspect.View
		all    bool
		format string
	)
	cmd := &cobra.Command{
		Use:   "inspect ARCHIVE|IMAGE...",
		Short: "Show what checkpoint archives hold",
		Long: "Show the container, sizes and CRIU statistics of checkpoint archives written by ckpt,\n" +
			"containerd, CRI-O or Podman (.tar, .tar.zst, .tar.age, .tar.zst.age), and on request\n" +
			"the process tree, command lines, environment, open files, sockets, mounts and memory.\n" +
			"Archives are streamed once; nothing is extracted outside a private temporary directory.\n" +
			"An argument that is no file is a checkpoint image reference (local, or pulled).\n" +
			"The json format is documented in docs/inspect.md.",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if all {
				v = inspect.All()
			}
			switch format {
			case "tree", "json", "table":
			default:
				return fmt.Errorf("unknown format %q (tree, json or table)", format)
			}
			opts, err := rf.options()
			if err != nil {
				return err
			}
			opts.Cmdline, opts.Env = v.Cmdline, v.Env
			var cs []*inspect.Checkpoint
			for _, arg := range args {
				path, cleanup, err := archivePath(cmd.Context(), g, arg, rf.tempDir)
				if err != nil {
					return err
				}
				c, err := inspect.Open(path, opts)
				cleanup()
				clearProgress(opts)
				if err != nil {
					return err
				}
				cs = append(cs, c)
			}
			return inspect.Render(cmd.OutOrStdout(), cs, v, format)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&v.PsTree, "ps-tree", false, "show the process tree")
	f.BoolVar(&v.Cmdline, "ps-tree-cmd", false, "show the process tree with command lines (read from memory)")
	f.BoolVar(&v.Env, "ps-tree-env", false, "show the process tree with environment variables (read from memory)")
	f.BoolVar(&v.Files, "files", false, "show open files of each process")
	f.BoolVar(&v.Sockets, "sockets", false, "show open sockets of each process")
	f.BoolVar(&v.Mounts, "mounts", false, "show the container's mounts")
	f.BoolVar(&v.Stats, "stats", false, "show every CRIU dump statistic")
	f.BoolVar(&v.Memory, "memory", false, "show the memory size of each process")
	f.BoolVar(&all, "all", false, "show everything")
	f.StringVar(&format, "format", "tree", "output format: tree, json or table")
	rf.add(cmd)
	return cmd
}
