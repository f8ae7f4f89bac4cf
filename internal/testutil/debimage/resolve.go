package debimage

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Suite is the Debian release images are built from.
const Suite = "bookworm"

const keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"

// listsMaxAge is how old the private package lists may be before a
// resolution (only done on a cache miss) refreshes them.
const listsMaxAge = 24 * time.Hour

// apt runs apt-get and apt-cache with a private state under dir: its own
// sources (Debian 12 from the host's mirror), lists and caches, no
// preferences and an empty dpkg status, so the host's apt is never touched
// and never shapes the result.
type apt struct {
	dir string
}

func (a apt) opts() []string {
	return []string{
		"-o", "Dir::Etc::sourcelist=" + filepath.Join(a.dir, "sources.list"),
		"-o", "Dir::Etc::sourceparts=-",
		"-o", "Dir::Etc::preferencesparts=" + filepath.Join(a.dir, "preferences.d"),
		"-o", "Dir::State::Lists=" + filepath.Join(a.dir, "lists"),
		"-o", "Dir::Cache=" + filepath.Join(a.dir, "cache"),
		"-o", "Dir::State::status=/dev/null",
		"-o", "APT::Sandbox::User=root",
		"-o", "Acquire::Languages=none",
	}
}

func (a apt) run(ctx context.Context, dir, tool string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, tool, append(a.opts(), args...)...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s %s: %w: %s", tool, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// mirror is the host's Debian mirror, or deb.debian.org.
func mirror() string {
	for _, f := range []string{"/etc/apt/sources.list.d/debian.sources", "/etc/apt/sources.list"} {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n") {
			fs := strings.Fields(line)
			switch {
			case len(fs) >= 2 && fs[0] == "URIs:" && strings.HasSuffix(fs[1], "/debian"):
				return fs[1]
			case len(fs) >= 3 && fs[0] == "deb" && !strings.HasPrefix(fs[1], "[") && strings.HasSuffix(fs[1], "/debian"):
				return fs[1]
			}
		}
	}
	return "http://deb.debian.org/debian"
}

// update writes the private sources and refreshes the lists when they are
// missing or old.
func (a apt) update(ctx context.Context) error {
	if _, err := os.Stat(keyring); err != nil {
		return fmt.Errorf("%w: %s is missing (install debian-archive-keyring)", ErrNoApt, keyring)
	}
	for _, d := range []string{"lists/partial", "cache/archives/partial", "preferences.d"} {
		if err := os.MkdirAll(filepath.Join(a.dir, d), 0o755); err != nil {
			return err
		}
	}
	m := mirror()
	security := strings.TrimSuffix(m, "/debian") + "/debian-security"
	sources := fmt.Sprintf("deb [signed-by=%[1]s] %[2]s %[4]s main\ndeb [signed-by=%[1]s] %[2]s %[4]s-updates main\ndeb [signed-by=%[1]s] %[3]s %[4]s-security main\n",
		keyring, m, security, Suite)
	sl := filepath.Join(a.dir, "sources.list")
	old, _ := os.ReadFile(sl)
	stamp := filepath.Join(a.dir, "lists", ".updated")
	if st, err := os.Stat(stamp); err == nil && string(old) == sources && time.Since(st.ModTime()) < listsMaxAge {
		return nil
	}
	if err := os.WriteFile(sl, []byte(sources), 0o644); err != nil {
		return err
	}
	if _, err := a.run(ctx, a.dir, "apt-get", "-qq", "update"); err != nil {
		return err
	}
	return os.WriteFile(stamp, nil, 0o644)
}

// resolve returns the packages to install for want: want and their
// Depends and Pre-Depends, recursively, taking the first alternative of an
// or-group and the first provider of a virtual package (unless another
// provider is already chosen). Packages in exclude are left out together
// with what only they need.
func (a apt) resolve(ctx context.Context, want, exclude []string) ([]string, error) {
	skip := map[string]bool{}
	for _, p := range exclude {
		skip[p] = true
	}
	chosen := map[string]bool{}
	var queue []string
	add := func(p string) {
		if !chosen[p] && !skip[p] {
			chosen[p] = true
			queue = append(queue, p)
		}
	}
	for _, p := range want {
		add(p)
	}
	for len(queue) > 0 {
		batch := queue
		queue = nil
		out, err := a.run(ctx, a.dir, "apt-cache", append([]string{"depends", "--important"}, batch...)...)
		if err != nil {
			return nil, err
		}
		blocks, err := parseDepends(out)
		if err != nil {
			return nil, err
		}
		for _, p := range batch {
			if _, ok := blocks[p]; !ok {
				return nil, fmt.Errorf("package %s: apt-cache depends said nothing about it", p)
			}
		}
		for _, b := range blocks {
			for _, group := range b {
				if p := pick(group, chosen, skip); p != "" {
					add(p)
				}
			}
		}
	}
	names := make([]string, 0, len(chosen))
	for p := range chosen {
		names = append(names, p)
	}
	sort.Strings(names)
	return names, nil
}

// alt is one alternative of a dependency: a package, or a virtual package
// with its providers.
type alt struct {
	name      string
	virtual   bool
	providers []string
}

// pick chooses the package that satisfies an or-group: none if an
// alternative or one of its providers is already chosen (or the
// alternative is excluded), else the first real alternative, else the
// first provider of a virtual one. It returns "" when there is nothing to
// add.
func pick(group []alt, chosen, skip map[string]bool) string {
	for _, a := range group {
		if chosen[a.name] || skip[a.name] {
			return ""
		}
		for _, c := range a.providers {
			if chosen[c] {
				return ""
			}
		}
	}
	for _, a := range group {
		if !a.virtual {
			return a.name
		}
	}
	for _, a := range group {
		if len(a.providers) > 0 {
			return a.providers[0]
		}
	}
	return ""
}

// parseDepends reads `apt-cache depends --important` output:
//
//	redis-server
//	  Depends: libc6
//	 |Depends: debconf
//	  Depends: <debconf-2.0>
//	    cdebconf
//	    debconf
//
// into, per package, its dependencies as or-groups.
func parseDepends(out []byte) (map[string][][]alt, error) {
	blocks := map[string][][]alt{}
	var cur string
	var group []alt // the or-group being read
	open := false   // the last alternative ended with "|"
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.TrimSpace(line) == "":
			continue
		case !strings.HasPrefix(line, " "):
			cur = strings.TrimSpace(line)
			if _, ok := blocks[cur]; !ok {
				blocks[cur] = nil
			}
			group, open = nil, false
		case strings.HasPrefix(line, "    "):
			// a package providing the previous alternative
			if len(group) == 0 {
				return nil, fmt.Errorf("apt-cache depends: provider line %q without a dependency", line)
			}
			last := &group[len(group)-1]
			last.providers = append(last.providers, archless(strings.TrimSpace(line)))
			if !open {
				blocks[cur][len(blocks[cur])-1] = group
			}
		default:
			orNext := strings.HasPrefix(line, " |")
			kind, name, ok := strings.Cut(strings.TrimLeft(line, " |"), ": ")
			if !ok {
				return nil, fmt.Errorf("apt-cache depends: unexpected line %q", line)
			}
			if kind != "Depends" && kind != "PreDepends" {
				continue
			}
			if cur == "" {
				return nil, fmt.Errorf("apt-cache depends: dependency before any package: %q", line)
			}
			a := alt{name: archless(name)}
			if strings.HasPrefix(name, "<") && strings.HasSuffix(name, ">") {
				a = alt{name: archless(name[1 : len(name)-1]), virtual: true}
			}
			if !open {
				group = nil
			}
			group = append(group, a)
			open = orNext
			if !open {
				blocks[cur] = append(blocks[cur], group)
			}
		}
	}
	return blocks, sc.Err()
}

// archless drops a multi-arch qualifier (":any", ":amd64").
func archless(name string) string {
	n, _, _ := strings.Cut(name, ":")
	return n
}
