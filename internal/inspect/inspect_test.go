package inspect

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"filippo.io/age"

	"github.com/ckpt-dev/ckpt/internal/archive"
)

func TestFixtures(t *testing.T) {
	tests := []struct {
		path, name, engine, image, runtime string
		pids                               []uint32
		commands                           []string
		cmdline                            []string // of the first process
		files                              int      // all processes, cwd and root included
		mounts                             int
	}{
		{containerdFixture, "counter", "containerd", "localhost/busybox-counter:latest", "io.containerd.runc.v2",
			[]uint32{12, 23}, []string{"counter.sh", "sleep"}, []string{"/bin/sh", "/bin/counter.sh"}, 11, 10},
		{podmanFixture, "pct1", "Podman", "localhost/counter-imported:latest", "runc",
			[]uint32{1, 10}, []string{"counter.sh", "sleep"}, []string{"/bin/sh", "/bin/counter.sh"}, 11, 11},
	}
	for _, tc := range tests {
		t.Run(filepath.Base(tc.path), func(t *testing.T) {
			c, err := Open(tc.path, Options{Cmdline: true, Env: true})
			if err != nil {
				t.Fatal(err)
			}
			k := c.Container
			if k.Name != tc.name || k.Engine != tc.engine || k.Image != tc.image || k.Runtime != tc.runtime || k.ID == "" || k.Created == nil {
				t.Errorf("container = %+v", k)
			}
			var pids []uint32
			var cmds []string
			files := 0
			c.Walk(func(p *Process) {
				pids = append(pids, p.PID)
				cmds = append(cmds, p.Command)
				files += len(p.Files)
				if p.Memory == nil || p.Memory.Dumped == 0 || p.Memory.Virtual < p.Memory.Dumped {
					t.Errorf("pid %d memory = %+v", p.PID, p.Memory)
				}
			})
			if !slices.Equal(pids, tc.pids) || !slices.Equal(cmds, tc.commands) {
				t.Errorf("processes %v %v, want %v %v", pids, cmds, tc.pids, tc.commands)
			}
			if got := c.Processes[0].Cmdline; !slices.Equal(got, tc.cmdline) {
				t.Errorf("cmdline %q, want %q", got, tc.cmdline)
			}
			if !slices.ContainsFunc(c.Processes[0].Env, func(e string) bool { return strings.HasPrefix(e, "PATH=") }) {
				t.Errorf("env %q lacks PATH", c.Processes[0].Env)
			}
			if files != tc.files || len(c.Mounts) != tc.mounts {
				t.Errorf("%d files, %d mounts; want %d, %d", files, len(c.Mounts), tc.files, tc.mounts)
			}
			if c.Statistics == nil || c.Statistics.FrozenTimeUS == 0 || c.Statistics.PagesWritten == 0 {
				t.Errorf("statistics = %+v", c.Statistics)
			}
			if c.Sizes.MemoryPages == 0 || c.Sizes.Checkpoint <= c.Sizes.MemoryPages || c.Sizes.RootfsDiff == 0 {
				t.Errorf("sizes = %+v", c.Sizes)
			}
		})
	}
}

// TestMatchesCheckpointctl compares the process tree and the counts of
// files, sockets and mounts with what the real checkpointctl reports.
func TestMatchesCheckpointctl(t *testing.T) {
	bin, err := exec.LookPath("checkpointctl")
	if err != nil {
		t.Skip("checkpointctl not installed (hack/install-deps.sh installs v1.6.0)")
	}
	for _, path := range []string{containerdFixture, podmanFixture} {
		t.Run(filepath.Base(path), func(t *testing.T) {
			compareWithCheckpointctl(t, bin, path)
		})
	}
}

// ctlNode is the part of checkpointctl's JSON that is compared.
type ctlNode struct {
	PID      uint32    `json:"pid"`
	Command  string    `json:"command"`
	Children []ctlNode `json:"children"`
}

func compareWithCheckpointctl(t *testing.T, bin, path string) {
	t.Helper()
	out, err := exec.Command(bin, "inspect", "--all", "--format", "json", path).Output()
	if err != nil {
		t.Fatalf("checkpointctl inspect: %v", err)
	}
	var ctl []struct {
		ProcessTree     ctlNode `json:"process_tree"`
		FileDescriptors []struct {
			PID       uint32            `json:"pid"`
			OpenFiles []json.RawMessage `json:"open_files"`
		} `json:"file_descriptors"`
		Sockets []struct {
			OpenSockets []json.RawMessage `json:"open_sockets"`
		} `json:"sockets"`
		Mounts []json.RawMessage `json:"mounts"`
	}
	if err := json.Unmarshal(out, &ctl); err != nil || len(ctl) != 1 {
		t.Fatalf("checkpointctl json: %v\n%s", err, out)
	}
	c, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var conv func(p *Process) ctlNode
	conv = func(p *Process) ctlNode {
		n := ctlNode{PID: p.PID, Command: p.Command}
		for _, ch := range p.Children {
			n.Children = append(n.Children, conv(ch))
		}
		return n
	}
	if len(c.Processes) != 1 {
		t.Fatalf("%d root processes", len(c.Processes))
	}
	mine, _ := json.Marshal(conv(c.Processes[0]))
	theirs, _ := json.Marshal(ctl[0].ProcessTree)
	if !bytes.Equal(mine, theirs) {
		t.Errorf("process tree:\n ckpt          %s\n checkpointctl %s", mine, theirs)
	}
	var files, sockets int
	for _, fd := range ctl[0].FileDescriptors {
		files += len(fd.OpenFiles)
	}
	for _, sk := range ctl[0].Sockets {
		sockets += len(sk.OpenSockets)
	}
	var myFiles, mySockets int
	c.Walk(func(p *Process) { myFiles += len(p.Files); mySockets += len(p.Sockets) })
	if myFiles != files || mySockets != sockets || len(c.Mounts) != len(ctl[0].Mounts) {
		t.Errorf("files/sockets/mounts: ckpt %d/%d/%d, checkpointctl %d/%d/%d", myFiles, mySockets, len(c.Mounts), files, sockets, len(ctl[0].Mounts))
	}
}

func TestEncodings(t *testing.T) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	other, _ := age.GenerateX25519Identity()
	plain, err := os.ReadFile(containerdFixture)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		compress, encrypt bool
		format            archive.Format
	}{
		{false, false, archive.FormatTar},
		{true, false, archive.FormatZstd},
		{false, true, archive.FormatAge},
		{true, true, archive.FormatZstdAge},
	}
	for _, tc := range tests {
		t.Run(string(tc.format), func(t *testing.T) {
			var buf bytes.Buffer
			var rs []age.Recipient
			if tc.encrypt {
				rs = []age.Recipient{id.Recipient()}
			}
			w, _, err := archive.NewEncodingWriter(&buf, tc.compress, rs)
			if err != nil {
				t.Fatal(err)
			}
			w.Write(plain)
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			path := writeFile(t, buf.Bytes())
			c, res, err := Search(path, Options{Identities: []age.Identity{id}}, SearchOptions{Literal: "counter.log", Context: 8})
			if err != nil {
				t.Fatal(err)
			}
			if c.Format != string(tc.format) || c.Container.Name != "counter" || len(res.Matches) == 0 {
				t.Errorf("format %s, name %s, %d matches", c.Format, c.Container.Name, len(res.Matches))
			}
			if !tc.encrypt {
				return
			}
			if _, err := Open(path, Options{}); !errors.Is(err, archive.ErrNoIdentity) {
				t.Errorf("without identity: %v", err)
			}
			if _, err := Open(path, Options{Identities: []age.Identity{other}}); !errors.Is(err, archive.ErrWrongIdentity) {
				t.Errorf("with a wrong identity: %v", err)
			}
		})
	}
}

// syntheticMemory replaces pid 12's pages in the containerd fixture: two
// regions, the first larger than one chunk.
func syntheticMemory(t *testing.T, pages []byte, regs ...[2]uint64) []member {
	return mutate(t, containerdFixture, func(m *member) bool {
		switch m.hdr.Name {
		case "checkpoint/pagemap-12.img":
			m.data = pagemapImage(t, 1, regs...)
		case "checkpoint/pages-1.img":
			m.data = pages
		}
		return true
	})
}

func TestSearch(t *testing.T) {
	ps := int(pageSize)
	const r1, r2 = 0x100000, 0x900000
	n1 := (chunkSize + 2*ps) / ps // region 1 spans a chunk border
	pages := make([]byte, (n1+2)*ps)
	put := func(off int, s string) { copy(pages[off:], s) }
	put(100, "MARKER-one")           // plain
	put(chunkSize-4, "MARKER-chunk") // across the chunk border
	put(n1*ps-3, "MARK")             // across the gap between regions: no hit
	put(n1*ps+1, "ER-gap")           //
	put(n1*ps+2*ps-6, "MARKER")      // at the very end, short trailing context
	members := syntheticMemory(t, pages, [2]uint64{r1, uint64(n1)}, [2]uint64{r2, 2})
	path := writeFile(t, tarBytes(t, members))

	tests := []struct {
		name  string
		opts  SearchOptions
		addrs []uint64
		trunc bool
	}{
		{"literal", SearchOptions{Literal: "MARKER", Context: 4}, []uint64{r1 + 100, r1 + chunkSize - 4, r2 + uint64(2*ps-6)}, false},
		{"regex", SearchOptions{Regex: regexp.MustCompile(`MARKER-[a-z]+`)}, []uint64{r1 + 100, r1 + chunkSize - 4}, false},
		{"max", SearchOptions{Literal: "MARKER", Max: 1}, []uint64{r1 + 100}, true},
		{"other pid", SearchOptions{Literal: "MARKER", PID: 23}, nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, res, err := Search(path, Options{}, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			var addrs []uint64
			for _, m := range res.Matches {
				if m.PID == 12 {
					addrs = append(addrs, m.addr)
				}
			}
			if !slices.Equal(addrs, tc.addrs) || res.Truncated != tc.trunc {
				t.Errorf("hits at %x (truncated %v), want %x (%v)", addrs, res.Truncated, tc.addrs, tc.trunc)
			}
		})
	}
	_, res, err := Search(path, Options{}, SearchOptions{Literal: "MARKER-chunk", Context: 4})
	if err != nil || len(res.Matches) != 1 {
		t.Fatalf("%v %+v", err, res)
	}
	if m := res.Matches[0]; m.Before != "...." || m.Match != "MARKER-chunk" || m.After != "...." || m.Command != "counter.sh" {
		t.Errorf("match = %+v", m)
	}
	if _, _, err := Search(path, Options{}, SearchOptions{Literal: "x", PID: 999}); err == nil {
		t.Error("search of a missing PID succeeded")
	}
}

func TestDump(t *testing.T) {
	ps := int(pageSize)
	pages := bytes.Repeat([]byte("abcdefgh"), 3*ps/8)
	path := writeFile(t, tarBytes(t, syntheticMemory(t, pages, [2]uint64{0x10000, 2}, [2]uint64{0x40000, 1})))
	var raw bytes.Buffer
	_, regions, err := Dump(path, Options{}, 12, DumpRaw, &raw)
	if err != nil {
		t.Fatal(err)
	}
	want := []DumpRegion{{"0x10000", int64(2 * ps), 0}, {"0x40000", int64(ps), int64(2 * ps)}}
	if !bytes.Equal(raw.Bytes(), pages) || !slices.Equal(regions, want) {
		t.Errorf("raw dump: %d bytes, regions %+v", raw.Len(), regions)
	}
	var hex bytes.Buffer
	if _, _, err := Dump(path, Options{}, 12, DumpHex, &hex); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(hex.String(), "0000000000010000  61 62 63 64 65 66 67 68 61 62 63 64 65 66 67 68  |abcdefghabcdefgh|\n") ||
		!strings.Contains(hex.String(), "\n0000000000040000  ") {
		t.Errorf("hex dump starts %q", hex.String()[:200])
	}
	if _, _, err := Dump(path, Options{}, 999, DumpRaw, &raw); err == nil {
		t.Error("dump of a missing PID succeeded")
	}
}

// TestPagesBeforePagemap: a page image that comes before its pagemap is
// spooled to the private root and still searched.
func TestPagesBeforePagemap(t *testing.T) {
	ms := readMembers(t, containerdFixture)
	var pages []member
	var rest []member
	for _, m := range ms {
		if strings.HasPrefix(m.hdr.Name, "checkpoint/pages-") {
			pages = append(pages, m)
		} else {
			rest = append(rest, m)
		}
	}
	path := writeFile(t, tarBytes(t, append(pages, rest...)))
	_, res, err := Search(path, Options{}, SearchOptions{Literal: "counter.log"})
	if err != nil {
		t.Fatal(err)
	}
	_, want, err := Search(containerdFixture, Options{}, SearchOptions{Literal: "counter.log"})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Matches) == 0 || len(res.Matches) != len(want.Matches) {
		t.Errorf("%d hits reordered, %d in order", len(res.Matches), len(want.Matches))
	}
}

func TestHostileArchives(t *testing.T) {
	bad := func(fn func(m *member) bool, extra ...member) []member {
		return append(mutate(t, containerdFixture, fn), extra...)
	}
	keep := func(*member) bool { return true }
	replace := func(name string, data []byte) func(*member) bool {
		return func(m *member) bool {
			if m.hdr.Name == name {
				m.data = data
			}
			return true
		}
	}
	tests := []struct {
		name    string
		members []member
		want    error
	}{
		{"dot-dot name", bad(keep, regMember("../escape", []byte("x"))), archive.ErrEscape},
		{"absolute name", bad(keep, regMember("/etc/escape", []byte("x"))), archive.ErrAbsolute},
		{"symlink", bad(keep, member{tar.Header{Name: "checkpoint/evil.img", Typeflag: tar.TypeSymlink, Linkname: "/etc/passwd"}, nil}), archive.ErrType},
		{"duplicate image", bad(keep, regMember("checkpoint/pstree.img", []byte("x"))), archive.ErrDuplicate},
		{"huge image", bad(keep, regMember("checkpoint/huge.img", make([]byte, maxImageBytes+1))), archive.ErrTooLarge},
		{"garbage pstree", bad(replace("checkpoint/pstree.img", []byte("garbage!garbage!"))), ErrCorrupt},
		{"truncated core", bad(replace("checkpoint/core-12.img", []byte{0x54, 0x56, 0x0e, 0x01, 0xff, 0xff, 0xff, 0x7f, 1, 2})), ErrCorrupt},
		{"wrong magic", bad(replace("checkpoint/pstree.img", readMember(t, containerdFixture, "checkpoint/inventory.img"))), ErrCorrupt},
		{"pagemap larger than pages", bad(replace("checkpoint/pagemap-12.img", pagemapImage(t, 1, [2]uint64{0x10000, 1 << 40}))), ErrCorrupt},
		{"unsorted pagemap", bad(replace("checkpoint/pagemap-12.img", pagemapImage(t, 1, [2]uint64{0x20000, 1}, [2]uint64{0x10000, 1}))), ErrCorrupt},
		{"two pagemaps, one page image", bad(replace("checkpoint/pagemap-23.img", pagemapImage(t, 1, [2]uint64{0x10000, 17}))), ErrCorrupt},
		{"pstree cycle", bad(replace("checkpoint/pstree.img", pstreeImage(t, [2]uint32{12, 23}, [2]uint32{23, 12}))), ErrCorrupt},
		{"pstree orphan", bad(replace("checkpoint/pstree.img", pstreeImage(t, [2]uint32{12, 0}, [2]uint32{23, 99}))), ErrCorrupt},
		{"pstree duplicate", bad(replace("checkpoint/pstree.img", pstreeImage(t, [2]uint32{12, 0}, [2]uint32{12, 0}))), ErrCorrupt},
		{"no pstree", bad(func(m *member) bool { return m.hdr.Name != "checkpoint/pstree.img" }), ErrCorrupt},
		{"no config", bad(func(m *member) bool { return m.hdr.Name != "config.dump" }), ErrCorrupt},
		{"bad spec", bad(replace("spec.dump", []byte("{"))), ErrCorrupt},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tmp := t.TempDir()
			path := writeFile(t, tarBytes(t, tc.members))
			_, _, err := Search(path, Options{TempDir: tmp, Cmdline: true}, SearchOptions{Literal: "x"})
			if !errors.Is(err, tc.want) {
				t.Errorf("error %v, want %v", err, tc.want)
			}
			if left, _ := os.ReadDir(tmp); len(left) != 0 {
				t.Errorf("temporary root left behind: %v", left)
			}
		})
	}
}

func readMember(t testing.TB, path, name string) []byte {
	for _, m := range readMembers(t, path) {
		if m.hdr.Name == name {
			return m.data
		}
	}
	t.Fatalf("%s not in %s", name, path)
	return nil
}

func TestManifestChecked(t *testing.T) {
	// An archive written by ckpt carries checksums.sha256; a changed page
	// image must be caught.
	var buf bytes.Buffer
	w := archive.NewWriter(&buf)
	for _, m := range readMembers(t, containerdFixture) {
		if m.hdr.Typeflag != tar.TypeReg {
			continue
		}
		if err := w.AddBytes(m.hdr.Name, m.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	good := buf.Bytes()
	if _, _, err := Search(writeFile(t, good), Options{}, SearchOptions{Literal: "counter"}); err != nil {
		t.Fatalf("intact archive: %v", err)
	}
	i := bytes.Index(good, []byte("/tmp/counter.log"))
	if i < 0 {
		t.Fatal("no marker in the page image")
	}
	bad := slices.Clone(good)
	bad[i] = 'X'
	if _, _, err := Search(writeFile(t, bad), Options{}, SearchOptions{Literal: "counter"}); !errors.Is(err, archive.ErrChecksum) {
		t.Errorf("tampered pages: %v, want %v", err, archive.ErrChecksum)
	}
}

func TestRenderAndDiff(t *testing.T) {
	a, err := Open(containerdFixture, Options{Cmdline: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, format := range []string{"tree", "json", "table"} {
		var out bytes.Buffer
		if err := Render(&out, []*Checkpoint{a}, All(), format); err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"counter", "/bin/counter.sh", "sleep", "/dev/null", "/etc/hosts"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("%s output lacks %q", format, want)
			}
		}
	}
	var out bytes.Buffer
	Render(&out, []*Checkpoint{a}, View{}, "json")
	var back []Checkpoint
	if err := json.Unmarshal(out.Bytes(), &back); err != nil || len(back) != 1 || back[0].Processes != nil || back[0].Statistics == nil {
		t.Errorf("default json: %v %s", err, out.String())
	}
	if err := Render(&out, nil, View{}, "yaml"); err == nil {
		t.Error("unknown format accepted")
	}

	if d := Diff(a, a); len(d) != 0 {
		t.Errorf("diff of a checkpoint with itself: %+v", d)
	}
	b, _ := Open(containerdFixture, Options{Cmdline: true})
	b.Processes[0].Children[0].Cmdline = []string{"sleep", "2"}
	b.Processes[0].Files = b.Processes[0].Files[1:]
	b.Processes[0].Children = append(b.Processes[0].Children, &Process{PID: 30, PPID: 12, Command: "cat", State: "Alive",
		Sockets: []Socket{{FD: 3, Kind: "INETSK", Family: "IPV4", Protocol: "TCP", Src: "127.0.0.1", SrcPort: 80}}})
	got := Diff(a, b)
	want := []Change{
		{Kind: "process", Op: "changed", PID: 23},
		{Kind: "process", Op: "added", PID: 30},
		{Kind: "file", Op: "removed", PID: 12, FD: "0"},
		{Kind: "socket", Op: "added", PID: 30, FD: "3"},
	}
	if len(got) != len(want) {
		t.Fatalf("diff = %+v", got)
	}
	for i := range want {
		if got[i].Kind != want[i].Kind || got[i].Op != want[i].Op || got[i].PID != want[i].PID || got[i].FD != want[i].FD {
			t.Errorf("change %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	out.Reset()
	RenderDiff(&out, got)
	if !strings.Contains(out.String(), "~ [23] sleep ppid=12 state=Alive cmdline=sleep 1 -> sleep ppid=12 state=Alive cmdline=sleep 2") {
		t.Errorf("diff output:\n%s", out.String())
	}
}
