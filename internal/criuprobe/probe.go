// Package criuprobe proves that CRIU can dump what real applications hold:
// a TCP listener, a UDP socket, a unix socket pair and an established TCP
// connection. `criu check` passes on kernels where CRIU 4.1 cannot dump any
// INET socket, so only a real dump tells.
package criuprobe

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

const childEnv = "CKPT_CRIU_PROBE_CHILD"

// RunChildIfRequested turns the process into the probe's socket holder when
// Probe started it. Call it first thing in main.
func RunChildIfRequested() {
	if os.Getenv(childEnv) != "1" {
		return
	}
	if err := holdSockets(); err != nil {
		fmt.Fprintln(os.Stderr, "criu probe child:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func holdSockets() error {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return err
	}
	client, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		return err
	}
	server, err := ln.Accept()
	if err != nil {
		return err
	}
	udp, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		return err
	}
	pair, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		return err
	}
	ready := os.NewFile(3, "ready")
	fmt.Fprintln(ready, "ready")
	ready.Close()
	// Keep everything referenced while CRIU dumps us.
	keep := []any{ln, client, server, udp, pair}
	for {
		time.Sleep(time.Hour)
		_ = keep
	}
}

// Probe dumps a process holding every kind of socket with criu, leaving it
// running, and kills it afterwards. The error names what CRIU could not dump.
func Probe(ctx context.Context, criu string) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("criu probe: %w", err)
	}
	dir, err := os.MkdirTemp("", "ckpt-criu-probe-")
	if err != nil {
		return fmt.Errorf("criu probe: %w", err)
	}
	defer os.RemoveAll(dir)

	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("criu probe: %w", err)
	}
	defer r.Close()
	child := exec.Command(self)
	// Go listens with MPTCP by default, which CRIU cannot dump; real
	// applications use plain TCP.
	child.Env = append(os.Environ(), childEnv+"=1", "GODEBUG=multipathtcp=0")
	child.ExtraFiles = []*os.File{w}
	child.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	errBuf := &strings.Builder{}
	child.Stderr = errBuf
	if err := child.Start(); err != nil {
		w.Close()
		return fmt.Errorf("criu probe: start socket holder: %w", err)
	}
	w.Close()
	defer func() {
		child.Process.Kill()
		child.Wait()
	}()
	if line, _ := bufio.NewReader(r).ReadString('\n'); line != "ready\n" {
		return fmt.Errorf("criu probe: socket holder failed: %s", strings.TrimSpace(errBuf.String()))
	}

	args := []string{"dump", "-t", fmt.Sprint(child.Process.Pid), "-D", dir, "-o", "dump.log", "-v4",
		"--leave-running", "--tcp-established"}
	out, err := exec.CommandContext(ctx, criu, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s cannot dump a process with TCP, UDP and unix sockets (%v): %s", criu, err, dumpError(dir, out))
	}
	if err := syscall.Kill(child.Process.Pid, 0); err != nil {
		return fmt.Errorf("criu probe: the dumped process did not keep running: %w", err)
	}
	return nil
}

// dumpError picks CRIU's error lines from its log.
func dumpError(dir string, out []byte) string {
	b, _ := os.ReadFile(filepath.Join(dir, "dump.log"))
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		// CRIU prints this on every run where root lacks CAP_SYS_RESOURCE.
		if strings.Contains(l, "Error (") && !strings.Contains(l, "RLIMIT_NOFILE for self") {
			lines = append(lines, strings.TrimSpace(l))
		}
	}
	if len(lines) == 0 {
		return strings.TrimSpace(string(out))
	}
	if len(lines) > 3 {
		lines = lines[:3]
	}
	msg := strings.Join(lines, "; ")
	if strings.Contains(msg, "Operation not supported") && strings.Contains(msg, "sockets") {
		msg += " (CRIU older than 4.2 cannot dump INET sockets on kernels >= 6.16: run hack/install-deps.sh)"
	}
	return msg
}
