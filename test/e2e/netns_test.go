package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// inNetns runs fn on a thread that has joined the network namespace of
// pid. Sockets fn creates stay in that namespace after it returns. If the
// thread cannot go back to its own namespace it is left locked, so that
// the Go runtime retires it.
func inNetns(pid int, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		self, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer self.Close()
		target, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", pid))
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("setns to the network namespace of %d: %w", pid, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns back: %w (fn: %v)", err, ferr)
			return // the thread stays locked and dies with the goroutine
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// loState reports the flags of lo in pid's network namespace.
func loState(pid int) (net.Flags, error) {
	var flags net.Flags
	err := inNetns(pid, func() error {
		lo, err := net.InterfaceByName("lo")
		if err != nil {
			return err
		}
		flags = lo.Flags
		return nil
	})
	return flags, err
}

// requireLoUp fails the test unless lo is up in pid's network namespace.
func requireLoUp(t *testing.T, what string, pid int) {
	t.Helper()
	flags, err := loState(pid)
	if err != nil {
		t.Errorf("%s (pid %d): lo: %v", what, pid, err)
		return
	}
	if flags&net.FlagUp == 0 {
		t.Errorf("%s (pid %d): lo is down (flags %v)", what, pid, flags)
	}
}

// stopUnlessLoUp ends the test when lo is down in pid's namespace: a
// server there cannot be reached, not even on 127.0.0.1.
func stopUnlessLoUp(t *testing.T, what string, pid int) {
	t.Helper()
	if flags, err := loState(pid); err != nil || flags&net.FlagUp == 0 {
		t.Fatalf("%s (pid %d): lo is not up (flags %v, %v): nothing in it can be reached", what, pid, flags, err)
	}
}

// dialIn connects to addr from inside pid's network namespace.
func dialIn(pid int, addr string) (net.Conn, error) {
	var c net.Conn
	err := inNetns(pid, func() error {
		var err error
		c, err = net.DialTimeout("tcp", addr, 5*time.Second)
		return err
	})
	return c, err
}

// nsExec runs a command inside the mount and network namespaces of pid, so
// that the container's own binaries (redis-cli) talk to its loopback.
func nsExec(pid int, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"-t", strconv.Itoa(pid), "-m", "-n", "--"}, args...)...)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(out.String()), nil
}

// containerPid returns the host PID of a running container (from `ckpt ps`).
func (a *agent) containerPid(pod, ctr string) int {
	a.t.Helper()
	a.waitRunning(pod, ctr)
	f := strings.Fields(a.psLine(pod, ctr))
	pid, err := strconv.Atoi(f[6])
	if err != nil {
		a.t.Fatalf("ps line %q: no pid", a.psLine(pod, ctr))
	}
	return pid
}

// staticPod waits for the container ctr of the manifest's pod name to run
// and returns the pod's name: name, or name-<node> where the agent names
// static pods after the node as the kubelet does.
func (a *agent) staticPod(name, ctr string) string {
	a.t.Helper()
	var pod string
	a.waitFor(func() bool {
		out, _ := a.ckptErr("ps")
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			if len(f) >= 6 && f[2] == ctr && f[5] == "running" && (f[1] == name || strings.HasPrefix(f[1], name+"-")) {
				pod = f[1]
				return true
			}
		}
		return false
	}, "static pod "+name+" running")
	return pod
}
