package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/ckpt-dev/ckpt/internal/archive"
	"github.com/ckpt-dev/ckpt/internal/ckptimage"
)

// pushArchive builds a checkpoint image of an archive stream in a private
// temporary directory and pushes it to via (REGISTRY/REPO, tagged after the
// archive unless via has a tag). It returns the pushed reference by digest.
func pushArchive(ctx context.Context, src io.Reader, via, archiveName, identity string) (string, error) {
	dest, err := viaReference(via, archiveName)
	if err != nil {
		return "", err
	}
	ids, err := loadIdentities(identity)
	if err != nil {
		return "", err
	}
	tarStream, _, err := archive.Decode(src, ids)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", archiveName, err)
	}
	defer tarStream.Close()
	work, err := os.MkdirTemp("", "ckpt-migrate-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(work)
	b, err := ckptimage.Build(tarStream, work, archive.Limits{})
	if err != nil {
		return "", fmt.Errorf("%s: %w", archiveName, err)
	}
	defer b.Close()
	o, stop := remoteOptions(os.Stderr, "pushing", false)
	pushed, err := ckptimage.PushImage(ctx, b.Image, dest, o)
	stop()
	return pushed, err
}

var badTagChars = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

// viaReference is via with a tag: its own, or one made of the archive name
// (checkpoint-web_default-counter-2026-12-01T20:10:00Z.tar becomes
// web_default-counter-2026-12-01T20-10-00Z).
func viaReference(via, archiveName string) (string, error) {
	if _, err := name.ParseReference(via, name.StrictValidation); err == nil {
		return via, nil // has a tag or a digest
	}
	if _, err := name.NewRepository(via); err != nil {
		return "", fmt.Errorf("--via %q: want REGISTRY/REPO[:TAG]: %w", via, err)
	}
	tag := strings.TrimPrefix(archiveName, "checkpoint-")
	for _, suf := range []string{".tar.zst.age", ".tar.age", ".tar.zst", ".tar"} {
		tag = strings.TrimSuffix(tag, suf)
	}
	tag = strings.TrimLeft(badTagChars.ReplaceAllString(tag, "-"), ".-")
	if len(tag) > 128 {
		tag = tag[len(tag)-128:]
	}
	if tag == "" {
		tag = "latest"
	}
	return via + ":" + tag, nil
}
