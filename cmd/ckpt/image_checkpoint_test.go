package main

import "testing"

func TestViaReference(t *testing.T) {
	for _, c := range []struct{ via, archive, want string }{
		{"127.0.0.1:5000/ckpt/counter", "checkpoint-web_default-counter-2026-12-01T20:10:00Z.tar", "127.0.0.1:5000/ckpt/counter:web_default-counter-2026-12-01T20-10-00Z"},
		{"127.0.0.1:5000/ckpt/counter", "checkpoint-web_default-counter-2026-12-01T20:10:00Z.tar.zst.age", "127.0.0.1:5000/ckpt/counter:web_default-counter-2026-12-01T20-10-00Z"},
		{"127.0.0.1:5000/ckpt/counter:keep", "checkpoint-x.tar", "127.0.0.1:5000/ckpt/counter:keep"},
		{"registry.example/a/b", ".tar", "registry.example/a/b:latest"},
	} {
		got, err := viaReference(c.via, c.archive)
		if err != nil || got != c.want {
			t.Errorf("viaReference(%q, %q) = %q, %v; want %q", c.via, c.archive, got, err, c.want)
		}
	}
	if _, err := viaReference("Not A Repo", "x.tar"); err == nil {
		t.Error("accepted a bad --via")
	}
}

func TestIsArchiveName(t *testing.T) {
	for arg, want := range map[string]bool{
		"checkpoint-web_default-counter-2026-12-01T20:10:00Z.tar": true,
		"foo.tar.zst":               true,
		"checkpoint-x":              true,
		"127.0.0.1:5000/ckpt/c:1":   false,
		"localhost/counter-ckpt:v1": false,
		"counter-ckpt":              false,
		"registry.example/x.tar:v1": false,
	} {
		if got := isArchiveName(arg); got != want {
			t.Errorf("isArchiveName(%q) = %v, want %v", arg, got, want)
		}
	}
}
