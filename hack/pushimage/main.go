// Command pushimage pushes `docker save` tarballs to a plain-HTTP registry on
// the loopback, for runtimes that cannot import images (CRI-O).
//
//	go run ./hack/pushimage -registry 127.0.0.1:5000 _output/images/counter.tar ...
//
// Each image keeps its repository and tag and loses its registry host:
// localhost/counter:latest goes to 127.0.0.1:5000/counter:latest, which
// CRI-O pulls as localhost/counter:latest with a registries.conf that maps
// the "localhost" prefix there.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func main() {
	registry := flag.String("registry", "", "registry host:port (plain HTTP; loopback only)")
	flag.Parse()
	if *registry == "" || flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: pushimage -registry 127.0.0.1:PORT IMAGE.tar...")
		os.Exit(2)
	}
	if !strings.HasPrefix(*registry, "127.") && !strings.HasPrefix(*registry, "localhost:") {
		fmt.Fprintf(os.Stderr, "pushimage: %s: only loopback registries\n", *registry)
		os.Exit(2)
	}
	for _, path := range flag.Args() {
		if err := push(*registry, path); err != nil {
			fmt.Fprintf(os.Stderr, "pushimage: %s: %v\n", path, err)
			os.Exit(1)
		}
	}
}

func push(registry, path string) error {
	m, err := tarball.LoadManifest(func() (io.ReadCloser, error) { return os.Open(path) })
	if err != nil {
		return err
	}
	for _, desc := range m {
		for _, tag := range desc.RepoTags {
			src, err := name.NewTag(tag)
			if err != nil {
				return fmt.Errorf("tag %q: %w", tag, err)
			}
			img, err := tarball.ImageFromPath(path, &src)
			if err != nil {
				return err
			}
			dst, err := name.NewTag(registry+"/"+src.RepositoryStr()+":"+src.TagStr(), name.Insecure)
			if err != nil {
				return err
			}
			if err := remote.Write(dst, img); err != nil {
				return fmt.Errorf("push %s: %w", dst, err)
			}
			fmt.Printf("%s -> %s\n", tag, dst)
		}
	}
	return nil
}
