package image

import (
	"testing"
)

// FuzzApplyLayer feeds arbitrary bytes as a layer on top of a base layer
// that holds symlinks pointing out of the rootfs. Whatever happens, nothing
// outside the rootfs may change.
func FuzzApplyLayer(f *testing.F) {
	seeds := [][]entry{
		{file("a", "1"), dir("d"), file("d/x", "x")},
		{file("../escape", "x")},
		{file("out/victim", "pwned")},
		{file("abs/victim", "pwned"), hardlink("h", "abs/victim")},
		{hardlink("h", "out/victim")},
		{whiteout("out/.wh.victim")},
		{whiteout("out/.wh..wh..opq")},
		{whiteout(".wh..wh..opq"), file("n", "n")},
		{symlink("d", "../outside"), file("d/escape", "x")},
		{file("in/f", "x"), whiteout("in/.wh.f")},
		{{name: "dev", typ: '3', major: 1, minor: 3}},
	}
	for _, s := range seeds {
		f.Add(tarBytes(f, s...))
	}
	f.Add([]byte("not a tar"))
	base := tarBytes(f, symlink("out", "../outside"), symlink("abs", "/"), dir("in"), file("in/keep", "k"))
	f.Fuzz(func(t *testing.T, layer []byte) {
		_, _, outside := applyTo(t, Limits{MaxSize: 1 << 20, MaxEntries: 1000}, base, layer)
		checkOutside(t, outside)
	})
}
