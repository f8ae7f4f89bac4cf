package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"filippo.io/age"
	"github.com/spf13/cobra"

	"github.com/ckpt-dev/ckpt/internal/archive"
	"github.com/ckpt-dev/ckpt/internal/ckptimage"
	"github.com/ckpt-dev/ckpt/internal/server"
)

// checkpointImageDir is the OCI layout of checkpoint images, beside the
// unpacked images of the embedded runtime.
func (g *globalOptions) checkpointImageDir() string {
	return filepath.Join(g.stateDir(), "images", "checkpoint-images")
}

func (g *globalOptions) checkpointImages() (*ckptimage.Store, error) {
	return ckptimage.Open(g.checkpointImageDir())
}

// existingCheckpointImages opens the store only if it is there: a client
// must not create state directories just by looking.
func (g *globalOptions) existingCheckpointImages() (*ckptimage.Store, error) {
	if _, err := os.Stat(g.checkpointImageDir()); err != nil {
		return nil, err
	}
	return g.checkpointImages()
}

func checkpointImageCommands(g *globalOptions) []*cobra.Command {
	return []*cobra.Command{
		newImageFromCheckpointCommand(g), newImagePushCommand(g), newImagePullCommand(g), newImageSaveCommand(g),
	}
}

func newImageFromCheckpointCommand(g *globalOptions) *cobra.Command {
	var identity string
	cmd := &cobra.Command{
		Use:   "from-checkpoint ARCHIVE REF",
		Short: "Build a checkpoint image (one layer: the archive's members) from a checkpoint archive",
		Long: "ARCHIVE is a checkpoint archive file (.tar, .tar.zst, or .tar.age with --identity) written by\n" +
			"ckpt, the kubelet (containerd, CRI-O) or Podman. The image's annotations are the ones CRI-O\n" +
			"and containerd restore from, plus checkpointctl's org.criu.checkpoint.* set. It is kept in\n" +
			"<root-dir>/ckpt/images/checkpoint-images; `ckpt image push` sends it to a registry.",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ids, err := loadIdentities(identity)
			if err != nil {
				return err
			}
			s, err := g.checkpointImages()
			if err != nil {
				return err
			}
			e, err := buildCheckpointImage(s, args[0], ids, args[1])
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Built %s %s (checkpoint of %s, %s)\n", e.Name, e.Digest, e.Container, humanBytes(e.Size))
			return nil
		},
	}
	cmd.Flags().StringVar(&identity, "identity", "", "age identity file to decrypt an encrypted archive")
	return cmd
}

func buildCheckpointImage(s *ckptimage.Store, path string, ids []age.Identity, ref string) (ckptimage.Entry, error) {
	rc, _, err := archive.Open(path, ids)
	if err != nil {
		return ckptimage.Entry{}, err
	}
	defer rc.Close()
	work, err := s.TempDir()
	if err != nil {
		return ckptimage.Entry{}, err
	}
	b, err := ckptimage.Build(rc, work, archive.Limits{})
	if err != nil {
		return ckptimage.Entry{}, fmt.Errorf("%s: %w", path, err)
	}
	defer b.Close()
	return s.Add(b.Image, ref)
}

func newImagePushCommand(g *globalOptions) *cobra.Command {
	var quiet bool
	cmd := &cobra.Command{
		Use:   "push REF [DEST]",
		Short: "Push a checkpoint image to its registry (or to DEST)",
		Long: "Credentials come from ~/.docker/config.json (docker login). Plain HTTP is used only for a\n" +
			"registry on a loopback address (127.0.0.0/8, ::1, localhost); every other one needs TLS.",
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := g.checkpointImages()
			if err != nil {
				return err
			}
			dest := ""
			if len(args) == 2 {
				dest = args[1]
			}
			o, stop := remoteOptions(cmd.ErrOrStderr(), "pushing", quiet)
			pushed, err := s.Push(cmd.Context(), args[0], dest, o)
			stop()
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Pushed %s\n", pushed)
			return nil
		},
	}
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "no progress")
	return cmd
}

func newImagePullCommand(g *globalOptions) *cobra.Command {
	var quiet bool
	cmd := &cobra.Command{
		Use:   "pull REF",
		Short: "Pull a checkpoint image from a registry into the local store",
		Long: "The manifest is read first: an image that is not a checkpoint image is refused before its\n" +
			"layers move. Credentials and plain HTTP as for push.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := g.checkpointImages()
			if err != nil {
				return err
			}
			o, stop := remoteOptions(cmd.ErrOrStderr(), "pulling", quiet)
			e, err := s.Pull(cmd.Context(), args[0], o)
			stop()
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Pulled %s %s (checkpoint of %s, %s)\n", e.Name, e.Digest, e.Container, humanBytes(e.Size))
			return nil
		},
	}
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "no progress")
	return cmd
}

func newImageSaveCommand(g *globalOptions) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "save REF -o FILE",
		Short: "Write a checkpoint image as an OCI archive (for `ctr -n k8s.io images import`)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if output == "" {
				return errors.New("--output (-o) is required")
			}
			s, err := g.existingCheckpointImages()
			if errors.Is(err, fs.ErrNotExist) {
				return &ckptimage.NotFoundError{Ref: args[0]}
			}
			if err != nil {
				return err
			}
			if err := s.SaveFile(args[0], output); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Saved %s to %s\n", args[0], output)
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "file to write (0600)")
	return cmd
}

// remoteOptions shows progress on a terminal, and none in a pipe.
func remoteOptions(w io.Writer, verb string, quiet bool) (ckptimage.RemoteOptions, func()) {
	if quiet || !isTerminal(w) {
		return ckptimage.RemoteOptions{}, func() {}
	}
	p := newProgress(w, verb, -1)
	return ckptimage.RemoteOptions{Progress: p.set}, func() { p.finish() }
}

// listCheckpointImages adds the checkpoint images to `ckpt image ls`.
func listCheckpointImages(g *globalOptions) ([]ckptimage.Entry, error) {
	s, err := g.existingCheckpointImages()
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return s.List()
}

// removeCheckpointImage is `ckpt image rm` for a checkpoint image; found
// is false when there is none by that name.
func removeCheckpointImage(g *globalOptions, ref string) (ckptimage.Entry, bool, error) {
	s, err := g.existingCheckpointImages()
	if err != nil {
		return ckptimage.Entry{}, false, nil
	}
	e, err := s.Remove(ref)
	if errors.Is(err, ckptimage.ErrNotFound) {
		return e, false, nil
	}
	return e, err == nil, err
}

// isArchiveName says whether arg names an archive on a server (what
// `ckpt checkpoints ls` prints) rather than an image.
func isArchiveName(arg string) bool {
	if strings.Contains(arg, "/") {
		return false
	}
	for _, suf := range []string{".tar", ".tar.zst", ".tar.age", ".tar.zst.age"} {
		if strings.HasSuffix(arg, suf) {
			return true
		}
	}
	return strings.HasPrefix(arg, "checkpoint-")
}

// archivePath turns an inspect/memsearch argument into an archive file: a
// file as it is, or else a checkpoint image reference, from the local
// store or, when it names a registry, pulled into it.
func archivePath(ctx context.Context, g *globalOptions, arg, tempDir string) (string, func(), error) {
	if _, err := os.Stat(arg); err == nil || isArchiveName(arg) {
		return arg, func() {}, nil
	}
	if _, err := ckptimage.ParseReference(arg); err != nil {
		return arg, func() {}, nil // let the archive reader name the problem
	}
	// A name without a registry host (a mistyped relative path, say) is
	// looked up locally only, never on Docker Hub.
	pull := explicitRegistry(arg)
	if !pull {
		if _, err := os.Stat(g.checkpointImageDir()); err != nil {
			return arg, func() {}, nil // let the archive reader name the problem
		}
	}
	s, err := g.checkpointImages()
	if err != nil {
		return "", nil, err
	}
	o, stop := remoteOptions(os.Stderr, "pulling", false)
	defer stop()
	path, cleanup, err := s.ArchiveFile(ctx, arg, pull, o, tempDir)
	if errors.Is(err, ckptimage.ErrNotFound) && !pull {
		return "", nil, fmt.Errorf("%s: no such file, and no such checkpoint image in %s", arg, s.Dir())
	}
	return path, cleanup, err
}

// explicitRegistry says whether ref names its registry host
// (registry.example.com/x, 127.0.0.1:5000/x, localhost/x).
func explicitRegistry(ref string) bool {
	host, _, ok := strings.Cut(ref, "/")
	return ok && !strings.HasPrefix(host, ".") && (strings.ContainsAny(host, ".:") || host == "localhost")
}

// imageArchives lets the server restore from checkpoint images: from the
// agent's store, or pulled into it with the agent's own credentials.
type imageArchives struct{ s *ckptimage.Store }

func (i imageArchives) OpenImageArchive(ctx context.Context, ref string) (io.ReadCloser, error) {
	rc, e, err := i.s.OpenArchive(ctx, ref, true, ckptimage.RemoteOptions{})
	if errors.Is(err, ckptimage.ErrNotFound) {
		err = fmt.Errorf("%w: %w", server.ErrImageNotFound, err)
	}
	if err != nil || !e.Pulled {
		return rc, err
	}
	return &pulledArchive{ReadCloser: rc, s: i.s, e: e}, nil
}

// pulledArchive is the archive of an image pulled for one restore: if the
// restore fails (an untrusted signature, say), the image goes again.
type pulledArchive struct {
	io.ReadCloser
	s *ckptimage.Store
	e ckptimage.Entry
}

func (p *pulledArchive) RestoreFailed() { _ = p.s.Forget(p.e.Name, p.e.Digest) }

// localImageArchive opens the archive of a checkpoint image in this
// machine's store, or returns nil when it is not there.
func localImageArchive(ctx context.Context, g *globalOptions, ref string) io.ReadCloser {
	if _, err := ckptimage.ParseReference(ref); err != nil {
		return nil
	}
	s, err := g.existingCheckpointImages()
	if err != nil {
		return nil
	}
	rc, _, err := s.OpenArchive(ctx, ref, false, ckptimage.RemoteOptions{})
	if err != nil {
		return nil
	}
	return rc
}

// importCheckpointImages imports file into the checkpoint images if it is
// an OCI archive of one; done is false when it is not.
func importCheckpointImages(g *globalOptions, w io.Writer, file string) (done bool, err error) {
	if fi, err := os.Stat(file); err != nil || !fi.Mode().IsRegular() {
		return false, nil
	}
	s, err := g.checkpointImages()
	if err != nil {
		return false, err
	}
	es, ok, err := s.ImportArchive(file)
	for _, e := range es {
		fmt.Fprintf(w, "Imported %s %s (checkpoint of %s)\n", e.Name, e.Digest, e.Container)
	}
	return ok, err
}
