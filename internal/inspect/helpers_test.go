package inspect

import (
	"archive/tar"
	"bytes"
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/pagemap"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pstree"
	"google.golang.org/protobuf/proto"
)

const (
	containerdFixture = "testdata/containerd-2.4.2-cri-counter.tar"
	podmanFixture     = "testdata/podman-4.3.1-export-counter.tar"
)

// member is one tar member held in memory (fixtures are small).
type member struct {
	hdr  tar.Header
	data []byte
}

func readMembers(t testing.TB, path string) []member {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []member
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, member{*h, data})
	}
}

func tarBytes(t testing.TB, ms []member) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, m := range ms {
		h := m.hdr
		if h.Typeflag == tar.TypeReg || h.Typeflag == 0 {
			h.Size = int64(len(m.data))
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(m.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func writeFile(t testing.TB, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "a.tar")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// mutate returns a copy of a fixture's members with fn applied to each
// (fn returns false to drop a member).
func mutate(t testing.TB, path string, fn func(m *member) bool) []member {
	var out []member
	for _, m := range readMembers(t, path) {
		if fn(&m) {
			out = append(out, m)
		}
	}
	return out
}

func regMember(name string, data []byte) member {
	return member{tar.Header{Name: name, Mode: 0o600, Typeflag: tar.TypeReg, Size: int64(len(data))}, data}
}

// criuImage encodes a CRIU image with the given magic and entries.
func criuImage(t testing.TB, magicName string, msgs ...proto.Message) []byte {
	t.Helper()
	var b bytes.Buffer
	var w [4]byte
	binary.LittleEndian.PutUint32(w[:], uint32(criuMagic.ByName["IMG_COMMON"]))
	b.Write(w[:])
	binary.LittleEndian.PutUint32(w[:], uint32(criuMagic.ByName[magicName]))
	b.Write(w[:])
	for _, m := range msgs {
		data, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		binary.LittleEndian.PutUint32(w[:], uint32(len(data)))
		b.Write(w[:])
		b.Write(data)
	}
	return b.Bytes()
}

// pagemapImage encodes a pagemap image: head, then one entry per region.
func pagemapImage(t testing.TB, pagesID uint32, regs ...[2]uint64) []byte {
	msgs := []proto.Message{&pagemap.PagemapHead{PagesId: proto.Uint32(pagesID)}}
	for _, r := range regs {
		msgs = append(msgs, &pagemap.PagemapEntry{Vaddr: proto.Uint64(r[0]), CompatNrPages: proto.Uint32(uint32(r[1])), NrPages: proto.Uint64(r[1]), Flags: proto.Uint32(pePresent)})
	}
	return criuImage(t, "PAGEMAP", msgs...)
}

func pstreeImage(t testing.TB, pidPpid ...[2]uint32) []byte {
	var msgs []proto.Message
	for _, p := range pidPpid {
		msgs = append(msgs, &pstree.PstreeEntry{Pid: proto.Uint32(p[0]), Ppid: proto.Uint32(p[1]), Pgid: proto.Uint32(p[0]), Sid: proto.Uint32(p[0])})
	}
	return criuImage(t, "PSTREE", msgs...)
}
