// Command debimage builds a container image from Debian 12 packages (see
// internal/testutil/debimage) and prints the path of the image archive,
// which `ckpt image import` reads:
//
//	go run ./hack/debimage -name localhost/redis:deb12 -pkg redis-server \
//		-exclude adduser -entrypoint /usr/bin/redis-server
//
// Downloads and images are cached under /opt/ckpt/debimage (-cache).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/ckpt-dev/ckpt/internal/testutil/debimage"
)

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	var s debimage.Spec
	var pkgs, exclude, env listFlag
	var entrypoint, cache string
	flag.StringVar(&s.Name, "name", "", "image reference, e.g. localhost/redis:deb12")
	flag.Var(&pkgs, "pkg", "Debian package to install with its dependencies (repeatable)")
	flag.Var(&exclude, "exclude", "package never installed, even when depended on (repeatable)")
	flag.Var(&env, "env", "K=V environment of the image (repeatable)")
	flag.StringVar(&entrypoint, "entrypoint", "", "entrypoint, words separated by spaces")
	flag.StringVar(&cache, "cache", "", "cache directory (default $CKPT_DEBIMAGE_CACHE or "+debimage.DefaultCacheDir+")")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "debimage: unexpected argument %q\n", flag.Arg(0))
		os.Exit(2)
	}
	s.Packages, s.Exclude, s.Env = pkgs, exclude, env
	s.Entrypoint = strings.Fields(entrypoint)
	b := debimage.Builder{CacheDir: cache, Logf: func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }}
	path, err := b.Build(context.Background(), s)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(path)
}
