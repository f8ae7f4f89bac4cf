package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"filippo.io/age"
	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/ckpt-dev/ckpt/internal/archive"
	"github.com/ckpt-dev/ckpt/internal/inspect"
	"github.com/ckpt-dev/ckpt/internal/trust"
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
	return opts, nil
}

// withProgress shows the memory pages read of a long read on stderr (a
// terminal only) until the returned func is called.
func withProgress(opts *inspect.Options) (done func()) {
	p := newProgress(os.Stderr, "reading memory pages", -1)
	if p.bar == nil {
		return func() {}
	}
	opts.Progress = p.set
	return func() { p.finish() }
}

func newInspectCommand(g *globalOptions) *cobra.Command {
	var (
		rf          readFlags
		v           inspect.View
		all         bool
		format      string
		out         outputFormat
		trustedKeys string
	)
	cmd := &cobra.Command{
		Use:   "inspect ARCHIVE|IMAGE...",
		Short: "Show what checkpoint archives hold",
		Long: "Show the container, sizes, CRIU statistics and signature of checkpoint archives written by ckpt,\n" +
			"(a pod archive shows each of its containers),\n" +
			"containerd, CRI-O or Podman (.tar, .tar.zst, .tar.age, .tar.zst.age), and on request\n" +
			"the process tree, command lines, environment, open files, sockets, mounts and memory.\n" +
			"Archives are streamed once; nothing is extracted outside a private temporary directory.\n" +
			"The json format is documented in docs/inspect.md.",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if all || out == "wide" {
				v = inspect.All()
			}
			if out == "json" || out == "yaml" {
				format = "json"
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
			if trustedKeys != "" {
				if opts.TrustedKeys, err = inspectKeyring(g, trustedKeys); err != nil {
					return err
				}
			}
			var cs []*inspect.Checkpoint
			for _, arg := range args {
				path, cleanup, err := archivePath(cmd.Context(), g, arg, rf.tempDir)
				if err != nil {
					return err
				}
				done := withProgress(&opts)
				got, err := inspect.OpenAll(path, opts)
				done()
				cleanup()
				if err != nil {
					return err
				}
				cs = append(cs, got...)
			}
			if out != "yaml" {
				return inspect.Render(cmd.OutOrStdout(), cs, v, format)
			}
			var buf bytes.Buffer
			if err := inspect.Render(&buf, cs, v, "json"); err != nil {
				return err
			}
			y, err := yaml.JSONToYAML(buf.Bytes())
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(y)
			return err
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
	f.VarP(&out, "output", "o", "json, yaml, or wide (everything, as a tree); overrides --format")
	f.StringVar(&trustedKeys, "trusted-keys", "", "say whether the signing key is one of these (authorized_keys format, as serve's --restore-trusted-keys); this node's key counts as trusted")
	rf.add(cmd)
	return cmd
}

// inspectKeyring is what a restore on this node would trust: the keys of
// path and the node's own public key, if it has one.
func inspectKeyring(g *globalOptions, path string) (*trust.Keyring, error) {
	keys := trust.NewKeyring()
	if err := keys.ReadKeysFile(path); err != nil {
		return nil, err
	}
	own, err := trust.ReadPublicKeyFile(filepath.Join(g.rootDir, "pki", trust.PubKeyFile))
	if err == nil {
		keys.Add(own)
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	return keys, nil
}
