package main

import (
	"context"
	"path/filepath"

	"github.com/ckpt-dev/ckpt/internal/image"
	"github.com/ckpt-dev/ckpt/internal/inspect"
	"github.com/ckpt-dev/ckpt/internal/runtime/embedded"
)

// stateDir is where the embedded runtime and the image store live.
func (g *globalOptions) stateDir() string { return filepath.Join(g.rootDir, "ckpt") }

func (g *globalOptions) imageStore() (*image.Store, error) {
	return image.Open(filepath.Join(g.stateDir(), "images"))
}

// imageResolver adapts the image store to what the embedded runtime needs.
type imageResolver struct{ store *image.Store }

func (r imageResolver) Resolve(ref string) (embedded.Image, error) {
	img, err := r.store.Resolve(ref)
	if err != nil {
		return embedded.Image{}, err
	}
	name := ref
	if len(img.Names) > 0 {
		name = img.Names[0]
	}
	return embedded.Image{
		ID: img.ID, Name: name, RootFS: img.RootFS,
		Env: img.Config.Env, Entrypoint: img.Config.Entrypoint, Cmd: img.Config.Cmd,
		WorkingDir: img.Config.WorkingDir,
	}, nil
}

// checkImages is the CRIU image check of every embedded restore.
func checkImages(imagesDir, rootfs string, caps []string) error {
	return inspect.ValidateCRIUImages(imagesDir, inspect.ImageRules{Root: rootfs, Capabilities: caps})
}

// embeddedRuntime opens the built-in runtime on this root dir.
func (g *globalOptions) embeddedRuntime() (*embedded.Runtime, error) {
	store, err := g.imageStore()
	if err != nil {
		return nil, err
	}
	return embedded.New(embedded.Config{StateDir: g.stateDir(), CheckImages: checkImages}, imageResolver{store})
}

// imagesInUse maps image IDs to the containers whose root filesystems
// stack on them.
func (g *globalOptions) imagesInUse(ctx context.Context) (map[string][]string, error) {
	rt, err := g.embeddedRuntime()
	if err != nil {
		return nil, nil // no runtime here (no runc or CRIU): no containers either
	}
	list, err := rt.List(ctx)
	if err != nil {
		return nil, err
	}
	users := map[string][]string{}
	for _, c := range list {
		users[c.ImageID] = append(users[c.ImageID], c.Namespace+"/"+c.Pod+"/"+c.Name)
	}
	return users, nil
}
