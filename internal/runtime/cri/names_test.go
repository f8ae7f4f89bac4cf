package cri

import (
	"archive/tar"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/ckpt-dev/ckpt/internal/runtime"
)

// writeTar writes members (name -> content, sorted by name) as a tar file.
func writeTar(t testing.TB, members map[string]string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "archive.tar")
	if err := os.WriteFile(path, tarBytes(t, members), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func tarBytes(t testing.TB, members map[string]string) []byte {
	t.Helper()
	var names []string
	for n := range members {
		names = append(names, n)
	}
	sort.Strings(names)
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, n := range names {
		if err := tw.WriteHeader(&tar.Header{Name: n, Mode: 0o600, Size: int64(len(members[n])), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(members[n])); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestArchiveNames(t *testing.T) {
	big := string(bytes.Repeat([]byte(" "), maxDumpBytes+1))
	for _, tc := range []struct {
		name    string
		members map[string]string
		want    runtime.Ref
		err     error
	}{{
		name: "CRI-O",
		members: map[string]string{
			"config.dump": `{"name":"k8s_counter_web_default_u_0"}`,
			"spec.dump": `{"annotations":{"io.container.manager":"cri-o","io.kubernetes.pod.name":"web",` +
				`"io.kubernetes.pod.namespace":"prod","io.kubernetes.cri-o.Metadata":"{\"name\":\"counter\",\"attempt\":2}"}}`,
		},
		want: runtime.Ref{Namespace: "prod", Pod: "web", Container: "counter"},
	}, {
		name: "containerd",
		members: map[string]string{
			"config.dump": `{"name":"counter"}`,
			"spec.dump": `{"annotations":{"io.kubernetes.cri.sandbox-name":"web","io.kubernetes.cri.sandbox-namespace":"default",` +
				`"io.kubernetes.cri.container-name":"app"}}`,
			"checkpoint/pages-1.img": "x",
		},
		want: runtime.Ref{Namespace: "default", Pod: "web", Container: "app"},
	}, {
		name:    "only config.dump's name",
		members: map[string]string{"config.dump": `{"name":"counter"}`, "spec.dump": `{}`},
		want:    runtime.Ref{Container: "counter"},
	}, {
		name:    "CRI-O without metadata",
		members: map[string]string{"spec.dump": `{"annotations":{"io.container.manager":"cri-o","io.kubernetes.pod.name":"web"}}`},
		want:    runtime.Ref{Pod: "web"},
	}, {
		name:    "no dumps",
		members: map[string]string{"checkpoint/inventory.img": "x"},
	}, {
		name:    "spec.dump not JSON",
		members: map[string]string{"spec.dump": `{"annotations":`},
		err:     runtime.ErrInvalid,
	}, {
		name:    "spec.dump too large",
		members: map[string]string{"spec.dump": big},
		err:     runtime.ErrInvalid,
	}, {
		name:    "escaping member",
		members: map[string]string{"../spec.dump": `{}`},
		err:     errUntyped,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := archiveNames(writeTar(t, tc.members))
			switch {
			case tc.err == nil && err != nil:
				t.Fatalf("error %v", err)
			case tc.err == errUntyped && err == nil, tc.err != nil && tc.err != errUntyped && !errors.Is(err, tc.err):
				t.Fatalf("error %v, want %v", err, tc.err)
			}
			if tc.err == nil && got != tc.want {
				t.Errorf("names %+v, want %+v", got, tc.want)
			}
		})
	}
}

func FuzzArchiveNames(f *testing.F) {
	f.Add(tarBytes(f, map[string]string{"config.dump": `{"name":"c"}`, "spec.dump": `{"annotations":{"io.container.manager":"cri-o"}}`}))
	f.Add([]byte("not a tar"))
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "a.tar")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		_, _ = archiveNames(path) // must not panic or read without bound
	})
}
