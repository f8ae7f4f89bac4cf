package e2e

import (
	"archive/tar"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// lazyMiB is the memory the counter holds in the lazy tests: enough that
// most of its pages are lazy.
const lazyMiB = 64

// memsums returns the "memsum" lines a counter printed, in order.
func memsums(t *testing.T, logPath string) []string {
	t.Helper()
	b, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if _, sum, ok := strings.Cut(line, " stdout F memsum "); ok {
			out = append(out, strings.TrimSpace(sum))
		}
	}
	return out
}

// waitMemsum waits for the n-th memsum line of a log.
func waitMemsum(t *testing.T, logPath string, n int) string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if s := memsums(t, logPath); len(s) >= n {
			return s[n-1]
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no memsum line %d in %s", n, logPath)
	return ""
}

// memoryColumn returns the MEMORY column of a container's `ckpt ps` line
// up to the end of the line (it may hold spaces: "loading (3 MiB served)"),
// or "" when the container was not restored lazily.
func (a *agent) memoryColumn(pod, ctr string) string {
	line := a.psLine(pod, ctr)
	for _, state := range []string{"loading", "complete", "failed"} {
		if i := strings.LastIndex(line, "  "+state); i >= 0 {
			return strings.TrimSpace(line[i:])
		}
	}
	return "" // not a lazy restore
}

func (a *agent) pidOf(pod, ctr string) int {
	a.t.Helper()
	f := strings.Fields(a.psLine(pod, ctr))
	if len(f) < 7 {
		a.t.Fatalf("no ps line for %s/%s", pod, ctr)
	}
	pid, err := strconv.Atoi(f[6])
	if err != nil {
		out, _ := a.ckptErr("ps")
		logs, _ := filepath.Glob(filepath.Join(a.rootDir, "ckpt", "containers", f[3]+"*", "*.log"))
		var tails strings.Builder
		for _, l := range logs {
			b, _ := os.ReadFile(l)
			if len(b) > 2000 {
				b = b[len(b)-2000:]
			}
			fmt.Fprintf(&tails, "--- %s\n%s\n", l, b)
		}
		a.t.Fatalf("pid of %s/%s: %q\n%s\n%s", pod, ctr, f[6], out, tails.String())
	}
	return pid
}

// TestLazyRestore restores lazily and in place (agent flag
// --restore-in-place), asks the restored counter for the checksum of its
// memory at once (lazy pages fault in on demand), removes the archive while
// pages may still be served, and checks the counter continues with no gap
// and the same memory.
func TestLazyRestore(t *testing.T) {
	a := newAgent(t, withArgs("--restore-in-place"))
	a.addPod("counter", counterManifest("counter", map[string]string{"COUNTER_MEM_MIB": strconv.Itoa(lazyMiB)}))
	orig := a.waitRunning("counter-n1", "counter")
	want := waitMemsum(t, a.containerLog(orig), 1)
	if m := a.memoryColumn("counter-n1", "counter"); m != "" {
		t.Fatalf("a container that was not restored lazily shows memory %q, want -", m)
	}
	for _, tc := range []struct{ name, pod, query string }{
		{"lazy", "counter-lazy", "&lazy=true"},
		{"in place", "counter-inplace", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for i := 0; i < 2; i++ {
				path, resp := a.checkpoint("default/counter-n1/counter", "")
				if path == "" {
					t.Fatalf("run %d: checkpoint: %d %s", i, resp.status, resp.body)
				}
				k := archivedCount(t, path)
				// The restored container's shim serves the pages from the
				// archive file it holds open; the name need not stay.
				copyName := "checkpoint-copy-" + strings.TrimPrefix(filepath.Base(path), "checkpoint-")
				copyFile(t, path, filepath.Join(filepath.Dir(path), copyName), 0o600)
				resp, err := a.do("POST", fmt.Sprintf("/restore/default/%s/counter?archive=%s%s", tc.pod, copyName, tc.query), testToken)
				if err != nil {
					t.Fatal(err)
				}
				if resp.status != 201 {
					log, _ := os.ReadFile(a.logPath)
					t.Fatalf("run %d: restore: %d %s\n%s", i, resp.status, resp.body, log)
				}
				r := decodeRestored(t, resp.body)
				if r.State != "running" {
					t.Fatalf("run %d: restored %+v", i, r)
				}
				if err := os.Remove(filepath.Join(filepath.Dir(path), copyName)); err != nil {
					t.Fatal(err)
				}
				if tc.query == "" {
					// In place, memory is complete before the process runs.
					if m := a.memoryColumn(tc.pod, "counter"); !strings.HasPrefix(m, "complete") {
						t.Fatalf("run %d: in-place restore answered with memory %q, want complete", i, m)
					}
				}
				if err := syscall.Kill(a.pidOf(tc.pod, "counter"), syscall.SIGUSR1); err != nil {
					t.Fatal(err)
				}
				log := a.containerLog(r.ID[:12])
				resumesAt(t, log, k)
				if got := waitMemsum(t, log, 1); got != want {
					t.Fatalf("run %d: restored memory checksum %s, want %s", i, got, want)
				}
				a.waitFor(func() bool { return strings.HasPrefix(a.memoryColumn(tc.pod, "counter"), "complete") },
					"memory of the restored container complete")
				keepsCounting(t, log)
				a.rmContainer(r.ID)
			}
		})
	}
}

// TestRestoreCorruptPages corrupts the page image of an archive inside
// the tar (so its checksum no longer matches) and restores it lazily and
// in place (a plain restore of a published archive, --restore-in-place):
// the container must
// end up stopped with the cause named, never left running on bad memory.
func TestRestoreCorruptPages(t *testing.T) {
	a := newAgent(t, withArgs("--restore-in-place"))
	a.addPod("counter", counterManifest("counter", map[string]string{"COUNTER_MEM_MIB": strconv.Itoa(lazyMiB)}))
	a.waitRunning("counter-n1", "counter")
	path, resp := a.checkpoint("default/counter-n1/counter", "")
	if path == "" {
		t.Fatalf("checkpoint: %d %s", resp.status, resp.body)
	}
	bad := filepath.Join(filepath.Dir(path), "checkpoint-bad-"+strings.TrimPrefix(filepath.Base(path), "checkpoint-"))
	copyFile(t, path, bad, 0o600)
	off, size := memberSpan(t, bad, "checkpoint/pages-1.img")
	f, err := os.OpenFile(bad, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Flip one byte in the last page: ballast, a lazy page.
	var b [1]byte
	f.ReadAt(b[:], off+size-100)
	b[0] ^= 0xff
	f.WriteAt(b[:], off+size-100)
	f.Close()
	for _, tc := range []struct {
		name, pod, query string
	}{
		{"lazy", "counter-lazy", "&lazy=true"},
		{"in place", "counter-inplace", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := a.do("POST", fmt.Sprintf("/restore/default/%s/counter?archive=%s%s", tc.pod, filepath.Base(bad), tc.query), testToken)
			if err != nil {
				t.Fatal(err)
			}
			if resp.status != 201 {
				// Failing before the container runs is a clean stop too.
				if !strings.Contains(resp.body, "checksum") {
					t.Fatalf("restore of a corrupt archive: %d %s, want a checksum error", resp.status, resp.body)
				}
				if line := a.psLine(tc.pod, "counter"); strings.Contains(line, " running ") {
					t.Fatalf("failed restore left a container running: %s", line)
				}
				return
			}
			if tc.query == "" {
				t.Fatalf("in-place restore of a corrupt archive succeeded: %s", resp.body)
			}
			r := decodeRestored(t, resp.body)
			a.waitFor(func() bool { return strings.HasPrefix(a.memoryColumn(tc.pod, "counter"), "failed:") },
				"lazy restore of a corrupt archive failed")
			mem := a.memoryColumn(tc.pod, "counter")
			t.Logf("memory of the corrupt restore: %s", mem)
			if !strings.Contains(mem, "checksum") {
				t.Fatalf("memory of the corrupt restore: %q, want the checksum mismatch", mem)
			}
			a.waitFor(func() bool { return !strings.Contains(a.psLine(tc.pod, "counter"), " running ") },
				"the container on corrupt memory stopped")
			a.rmContainer(r.ID)
		})
	}
}

// memberSpan returns where a member's content lies in a tar file.
func memberSpan(t *testing.T, path, name string) (int64, int64) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err != nil {
			t.Fatalf("%s has no %s: %v", path, name, err)
		}
		if strings.TrimPrefix(hdr.Name, "./") == name {
			off, _ := f.Seek(0, io.SeekCurrent)
			return off, hdr.Size
		}
	}
}

func decodeRestored(t *testing.T, body string) restored {
	t.Helper()
	var r restored
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		t.Fatalf("restore answer %q: %v", body, err)
	}
	return r
}
