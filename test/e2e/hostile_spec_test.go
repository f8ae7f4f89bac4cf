package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// procOf is what the checks read of a restored (or the original) process.
type procOf struct {
	pid    int
	status map[string]string // /proc/PID/status
	mounts []string          // mount points, from /proc/PID/mountinfo
	cgroup []string          // paths of /proc/PID/cgroup
	ns     map[string]string // /proc/PID/ns/* link targets
}

func readProc(t *testing.T, pid int) procOf {
	t.Helper()
	p := procOf{pid: pid, status: map[string]string{}, ns: map[string]string{}}
	dir := fmt.Sprintf("/proc/%d", pid)
	b, err := os.ReadFile(dir + "/status")
	if err != nil {
		t.Fatalf("process %d: %v", pid, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			p.status[k] = strings.TrimSpace(v)
		}
	}
	b, _ = os.ReadFile(dir + "/mountinfo")
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 {
			p.mounts = append(p.mounts, f[4])
		}
	}
	b, _ = os.ReadFile(dir + "/cgroup")
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if parts := strings.SplitN(line, ":", 3); len(parts) == 3 {
			p.cgroup = append(p.cgroup, parts[2])
		}
	}
	for _, n := range []string{"pid", "net", "mnt", "user", "ipc", "uts"} {
		p.ns[n], _ = os.Readlink(dir + "/ns/" + n)
	}
	return p
}

func (p procOf) hasMount(dest string) bool {
	for _, m := range p.mounts {
		if m == dest {
			return true
		}
	}
	return false
}

func capMask(t *testing.T, hex string) uint64 {
	v, err := strconv.ParseUint(hex, 16, 64)
	if err != nil {
		t.Fatalf("capability mask %q: %v", hex, err)
	}
	return v
}

// specCase is one hostile spec.dump: edit changes it; want lists words of
// which the 400 must name one; gone checks a restored container.
type specCase struct {
	name string
	edit func(s map[string]any)
	want []string
	gone func(t *testing.T, got, orig procOf)
}

func linuxOf(s map[string]any) map[string]any {
	l, _ := s["linux"].(map[string]any)
	if l == nil {
		l = map[string]any{}
		s["linux"] = l
	}
	return l
}

func hostileSpecCases(markers string) []specCase {
	var cases []specCase
	for _, kind := range []string{"prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"} {
		kind := kind
		cases = append(cases, specCase{
			name: "hook-" + strings.ToLower(kind),
			edit: func(s map[string]any) {
				marker := filepath.Join(markers, kind)
				s["hooks"] = map[string]any{kind: []any{map[string]any{
					"path": "/bin/sh", "args": []any{"sh", "-c", "id > " + marker + "; touch " + marker}}}}
			},
			want: []string{"hook"},
		})
	}
	for _, m := range []struct{ name, src, dest string }{
		{"root", "/", "/host"}, {"proc", "/proc", "/hostproc"}, {"var-run", "/var/run", "/hostrun"},
		{"containerd-socket", "/run/containerd/containerd.sock", "/containerd.sock"},
	} {
		m := m
		cases = append(cases, specCase{
			name: "bind-" + m.name,
			edit: func(s map[string]any) {
				mounts, _ := s["mounts"].([]any)
				s["mounts"] = append(mounts, map[string]any{"destination": m.dest, "type": "bind", "source": m.src, "options": []any{"rbind", "rw"}})
			},
			want: []string{"mount", m.src},
			gone: func(t *testing.T, got, _ procOf) {
				if got.hasMount(m.dest) {
					t.Errorf("the host's %s is mounted at %s in the restored container", m.src, m.dest)
				}
			},
		})
	}
	for _, ns := range []struct{ spec, proc string }{{"pid", "pid"}, {"network", "net"}, {"mount", "mnt"}, {"user", "user"}} {
		ns := ns
		cases = append(cases, specCase{
			name: "hostns-" + ns.proc,
			edit: func(s map[string]any) {
				l := linuxOf(s)
				list, _ := l["namespaces"].([]any)
				found := false
				for _, e := range list {
					if m, ok := e.(map[string]any); ok && m["type"] == ns.spec {
						m["path"] = "/proc/1/ns/" + ns.proc
						found = true
					}
				}
				if !found {
					list = append(list, map[string]any{"type": ns.spec, "path": "/proc/1/ns/" + ns.proc})
				}
				l["namespaces"] = list
			},
			want: []string{"namespace"},
			gone: func(t *testing.T, got, orig procOf) {
				host, _ := os.Readlink("/proc/1/ns/" + ns.proc)
				if ns.proc == "user" {
					// No user namespace: the container shares the host's,
					// as the original did; it must not have moved.
					if got.ns["user"] != orig.ns["user"] {
						t.Errorf("user namespace %s, the original's is %s", got.ns["user"], orig.ns["user"])
					}
					return
				}
				if got.ns[ns.proc] == host {
					t.Errorf("the restored process is in the host's %s namespace (%s)", ns.proc, host)
				}
			},
		})
	}
	cases = append(cases,
		specCase{
			name: "device-mem",
			edit: func(s map[string]any) {
				l := linuxOf(s)
				l["devices"] = []any{map[string]any{"path": "/dev/hostmem", "type": "c", "major": 1, "minor": 1, "fileMode": 0o666}}
				res, _ := l["resources"].(map[string]any)
				if res == nil {
					res = map[string]any{}
					l["resources"] = res
				}
				res["devices"] = []any{map[string]any{"allow": true, "access": "rwm"}}
			},
			want: []string{"device"},
			gone: func(t *testing.T, got, _ procOf) {
				if _, err := os.Lstat(fmt.Sprintf("/proc/%d/root/dev/hostmem", got.pid)); err == nil {
					t.Error("/dev/hostmem (the host's /dev/mem) exists in the restored container")
				}
			},
		},
		specCase{
			name: "cap-sys-admin",
			edit: func(s map[string]any) { addCaps(s, "CAP_SYS_ADMIN") },
			want: []string{"capabilit", "CAP_SYS_ADMIN"},
			gone: checkCaps,
		},
		specCase{
			name: "cap-all",
			edit: func(s map[string]any) { addCaps(s, allCaps...) },
			want: []string{"capabilit", "CAP_"},
			gone: checkCaps,
		},
		specCase{
			name: "seccomp-unconfined",
			edit: func(s map[string]any) { delete(linuxOf(s), "seccomp") },
			want: []string{"seccomp"},
			gone: func(t *testing.T, got, orig procOf) {
				if got.status["Seccomp"] != orig.status["Seccomp"] {
					t.Errorf("Seccomp: %s, the original's %s", got.status["Seccomp"], orig.status["Seccomp"])
				}
			},
		},
		specCase{
			name: "masked-paths-removed",
			edit: func(s map[string]any) {
				l := linuxOf(s)
				delete(l, "maskedPaths")
				delete(l, "readonlyPaths")
			},
			want: []string{"masked", "readonly"},
			gone: func(t *testing.T, got, orig procOf) {
				for _, p := range []string{"/proc/kcore", "/proc/keys", "/proc/sys", "/proc/sysrq-trigger"} {
					if orig.hasMount(p) && !got.hasMount(p) {
						t.Errorf("%s is masked or read-only in the original, not in the restored container", p)
					}
				}
			},
		},
		specCase{
			name: "cgroup-outside",
			edit: func(s map[string]any) { linuxOf(s)["cgroupsPath"] = "/system.slice/evil" },
			want: []string{"cgroup"},
			gone: func(t *testing.T, got, orig procOf) {
				top := func(p string) string { f := strings.Split(strings.TrimPrefix(p, "/"), "/"); return f[0] }
				for i, p := range got.cgroup {
					if strings.Contains(p, "evil") || (i < len(orig.cgroup) && top(p) != top(orig.cgroup[i])) {
						t.Errorf("cgroup %s, outside ckpt's (the original: %s)", p, orig.cgroup[i])
					}
				}
			},
		},
		specCase{
			name: "rootfs-outside",
			edit: func(s map[string]any) { s["root"] = map[string]any{"path": "/", "readonly": false} },
			want: []string{"root"},
			gone: func(t *testing.T, got, _ procOf) {
				var host, in syscall.Stat_t
				syscall.Stat("/", &host)
				syscall.Stat(fmt.Sprintf("/proc/%d/root/", got.pid), &in)
				if host.Dev == in.Dev && host.Ino == in.Ino {
					t.Error("the restored container's root is the host's /")
				}
			},
		},
	)
	return cases
}

var allCaps = []string{"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
	"CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST",
	"CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO",
	"CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
	"CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE",
	"CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
	"CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE"}

func addCaps(s map[string]any, caps ...string) {
	p, _ := s["process"].(map[string]any)
	c, _ := p["capabilities"].(map[string]any)
	if c == nil {
		c = map[string]any{}
		p["capabilities"] = c
	}
	for _, set := range []string{"bounding", "effective", "permitted", "inheritable", "ambient"} {
		list, _ := c[set].([]any)
		for _, cp := range caps {
			list = append(list, cp)
		}
		c[set] = list
	}
}

// checkCaps: the restored process holds no capability the original did
// not, and never CAP_SYS_ADMIN.
func checkCaps(t *testing.T, got, orig procOf) {
	for _, set := range []string{"CapEff", "CapPrm", "CapBnd", "CapInh", "CapAmb"} {
		g, o := capMask(t, got.status[set]), capMask(t, orig.status[set])
		if g&^o != 0 || g&(1<<21) != 0 {
			t.Errorf("%s %016x, the original's %016x", set, g, o)
		}
	}
}

// TestHostileSpecsRefusedOrNeutralised restores archives whose spec.dump
// asks for the host (hooks, host mounts, host namespaces, devices,
// capabilities, no seccomp or masks, a cgroup or root outside ckpt's), with
// recomputed checksums and no signature, on a node that allows unsigned
// archives: the spec rules must hold anyway. Each goes through POST
// /restore and through `ckpt restore`; each is refused with 400 naming the
// rule, or restored without the hostile part. No hook may run on the host.
func TestHostileSpecsRefusedOrNeutralised(t *testing.T) {
	a := newAgent(t, withArgs("--restore-allow-unsigned"))
	a.addPod("src", counterManifest("src", nil))
	a.waitRunning("src", "counter")
	path, resp := a.checkpoint("default/src/counter", "")
	if path == "" {
		t.Fatalf("checkpoint: %d %s", resp.status, resp.body)
	}
	base := readMembers(t, path)
	if !hasMember(base, "pod.json") && os.Getenv("CKPT_E2E_HOSTILE_SPEC") == "" {
		// Archives without the Pod are restored from their spec.dump (the
		// restore of issue 13 builds its own spec from pod.json): hooks run.
		t.Skip("this agent restores spec.dump as it is (its archives hold no pod.json); CKPT_E2E_HOSTILE_SPEC=1 runs the corpus anyway")
	}
	origPid, _ := strconv.Atoi(strings.Fields(a.psLine("src", "counter"))[6])
	orig := readProc(t, origPid)
	markers := t.TempDir()
	tokenFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tokenFile, []byte(testToken), 0o600)
	files := t.TempDir()

	var summary []string
	for _, c := range hostileSpecCases(markers) {
		data := resealed(t, editSpec(t, base, c.edit), nil, nil)
		for _, via := range []string{"api", "cli"} {
			t.Run(c.name+"/"+via, func(t *testing.T) {
				pod := "h-" + c.name + "-" + via
				status, body, pid, id := restoreVia(t, a, via, pod, data, files, tokenFile)
				outcome := ""
				switch {
				case status == http.StatusBadRequest:
					outcome = "refused"
					named := false
					for _, w := range c.want {
						named = named || strings.Contains(strings.ToLower(body), strings.ToLower(w))
					}
					if !named {
						t.Errorf("refused with %q, which names none of %v", body, c.want)
					}
				case status == http.StatusCreated:
					outcome = "restored"
					got := readProc(t, pid)
					for _, n := range []string{"pid", "net", "mnt"} {
						if host, _ := os.Readlink("/proc/1/ns/" + n); got.ns[n] == host {
							t.Errorf("the restored process shares the host's %s namespace", n)
						}
					}
					if c.gone != nil {
						c.gone(t, got, orig)
					}
					a.rmContainer(id)
				default:
					outcome = fmt.Sprintf("answered %d", status)
					t.Errorf("answer %d %q: want 400 naming the rule, or a restore without the hostile part", status, body)
				}
				if entries, _ := os.ReadDir(markers); len(entries) > 0 {
					t.Errorf("a hook ran on the host: %s", entries[0].Name())
					for _, e := range entries {
						os.Remove(filepath.Join(markers, e.Name()))
					}
				}
				summary = append(summary, fmt.Sprintf("%-28s %-4s %s: %.160s", c.name, via, outcome, strings.TrimSpace(body)))
			})
		}
	}
	t.Log("outcomes:\n" + strings.Join(summary, "\n"))
}

func hasMember(members []member, name string) bool {
	for _, m := range members {
		if m.hdr.Name == name {
			return true
		}
	}
	return false
}

// restoreVia restores data into pod through the API or the CLI and returns
// the status (the CLI's success is 201, its error 400 when it says so),
// the answer, and the restored process and container.
func restoreVia(t *testing.T, a *agent, via, pod string, data []byte, dir, tokenFile string) (int, string, int, string) {
	t.Helper()
	if via == "api" {
		got, err := a.post("/restore/default/"+pod+"/counter", testToken, bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		if got.status != http.StatusCreated {
			return got.status, got.body, 0, ""
		}
		var r struct {
			ID  string `json:"id"`
			Pid int    `json:"pid"`
		}
		json.Unmarshal([]byte(got.body), &r)
		return got.status, got.body, r.Pid, r.ID
	}
	file := filepath.Join(dir, pod+".tar")
	os.WriteFile(file, data, 0o600)
	out, err := a.ckptErr("restore", file, "--server", a.url(""), "--token-file", tokenFile, "--pod", "default/"+pod)
	if err != nil {
		status := 0
		if strings.Contains(out, "server answered 400 ") {
			status = http.StatusBadRequest
		}
		return status, out, 0, ""
	}
	f := strings.Fields(a.psLine(pod, "counter"))
	if len(f) < 7 {
		t.Fatalf("ckpt restore said %q, but ps does not list the container", out)
	}
	pid, _ := strconv.Atoi(f[6])
	return http.StatusCreated, out, pid, f[3]
}
