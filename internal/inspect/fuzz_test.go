package inspect

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzOpen feeds arbitrary bytes to the archive reader: it must return an
// error or a result, never panic, and leave nothing in its temporary root.
func FuzzOpen(f *testing.F) {
	for _, p := range []string{containerdFixture, podmanFixture} {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
		f.Add(data[:len(data)/2])
	}
	f.Add([]byte{})
	f.Add([]byte("not a tar at all"))
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		path := filepath.Join(dir, "a.tar")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		tmp := filepath.Join(dir, "tmp")
		if err := os.Mkdir(tmp, 0o700); err != nil {
			t.Fatal(err)
		}
		Search(path, Options{TempDir: tmp, Cmdline: true, Env: true}, SearchOptions{Literal: "count", Context: 8})
		if left, _ := os.ReadDir(tmp); len(left) != 0 {
			t.Fatalf("temporary root left behind: %v", left)
		}
	})
}

// imageTargets are the CRIU images inspect decodes, replaced one at a time
// in an otherwise valid archive.
var imageTargets = []string{
	"checkpoint/pstree.img", "checkpoint/core-12.img", "checkpoint/ids-12.img",
	"checkpoint/fdinfo-2.img", "checkpoint/files.img", "checkpoint/fs-12.img",
	"checkpoint/mm-12.img", "checkpoint/pagemap-12.img", "stats-dump",
	"config.dump", "spec.dump",
}

// FuzzImages fuzzes the decoders of each image inspect reads.
func FuzzImages(f *testing.F) {
	members := readMembers(f, containerdFixture)
	for i, name := range imageTargets {
		for _, m := range members {
			if m.hdr.Name == name {
				f.Add(uint8(i), m.data)
				if len(m.data) > 8 {
					f.Add(uint8(i), m.data[:len(m.data)-3])
				}
			}
		}
	}
	f.Fuzz(func(t *testing.T, which uint8, data []byte) {
		name := imageTargets[int(which)%len(imageTargets)]
		ms := make([]member, 0, len(members))
		for _, m := range members {
			if m.hdr.Name == name {
				m.data = data
			}
			ms = append(ms, m)
		}
		path := writeFile(t, tarBytes(t, ms))
		c, _, err := Search(path, Options{Cmdline: true, Env: true}, SearchOptions{Literal: "count"})
		if err == nil && c == nil {
			t.Fatal("no error and no checkpoint")
		}
	})
}

// FuzzFraming fuzzes the image framing check that guards go-criu.
func FuzzFraming(f *testing.F) {
	f.Add(readMember(f, containerdFixture, "checkpoint/pstree.img"))
	f.Add([]byte{0x54, 0x56, 0x0e, 0x01, 0xff, 0xff, 0xff, 0x7f})
	f.Fuzz(func(t *testing.T, data []byte) {
		checkFraming(data)
	})
}
