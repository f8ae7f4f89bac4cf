package embedded

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// In one-pass mode CRIU writes the memory pages into FIFOs that the agent
// reads. If the agent dies before CRIU opens a FIFO, CRIU would block in
// open(2) forever with the container frozen. A small guard process, in its
// own session, watches the agent: when the agent goes away in the middle of
// a dump, the guard reads and discards what CRIU writes so that the dump
// ends, then thaws the container. The archive is lost (its writer is gone);
// the container is not.

// dumpGuard is the agent's handle on a running guard.
type dumpGuard struct {
	cmd  *exec.Cmd
	ctrl *os.File // write end of the guard's control pipe
}

// startDumpGuard starts `ckpt dump-guard` for one dump.
func (r *Runtime) startDumpGuard(id, images string) (*dumpGuard, error) {
	rd, wr, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer rd.Close()
	cmd := exec.Command(r.cfg.Shim, "dump-guard", "--id", id, "--images", images)
	cmd.ExtraFiles = []*os.File{rd}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		wr.Close()
		return nil, fmt.Errorf("start dump guard for container %s: %w", id, err)
	}
	return &dumpGuard{cmd: cmd, ctrl: wr}, nil
}

// watch tells the guard which process group runs the dump.
func (g *dumpGuard) watch(pgid int) { fmt.Fprintf(g.ctrl, "pgid %d\n", pgid) }

// stop tells the guard the agent saw the dump through, and waits for it.
func (g *dumpGuard) stop() {
	fmt.Fprintln(g.ctrl, "done")
	g.ctrl.Close()
	g.cmd.Wait()
}

// RunDumpGuard is the body of `ckpt dump-guard`; fd 3 is its control pipe.
func RunDumpGuard(id, images string) error {
	unix.CloseOnExec(3)
	ctrl := bufio.NewReader(os.NewFile(3, "control"))
	pgid := 0
	for {
		line, err := ctrl.ReadString('\n')
		switch {
		case strings.HasPrefix(line, "pgid "):
			pgid, _ = strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "pgid ")))
			continue
		case strings.TrimSpace(line) == "done":
			return nil
		case errors.Is(err, io.EOF):
			// The agent died mid-dump.
		case err != nil:
			return err
		default:
			continue
		}
		break
	}
	if pgid > 0 {
		drainUntilGone(images, pgid)
	}
	thawCgroup(id)
	return nil
}

// drainUntilGone reads and discards the pages FIFOs until the dump's
// process group has exited (or a minute has passed).
func drainUntilGone(images string, pgid int) {
	open := map[string]int{}
	defer func() {
		for _, fd := range open {
			unix.Close(fd)
		}
	}()
	buf := make([]byte, 1<<20)
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) && syscall.Kill(-pgid, 0) == nil {
		names, _ := filepath.Glob(filepath.Join(images, "pages-*.img"))
		for _, name := range names {
			if _, ok := open[name]; !ok {
				var st unix.Stat_t
				if unix.Lstat(name, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
					continue
				}
				fd, err := unix.Open(name, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
				if err != nil {
					continue
				}
				open[name] = fd
			}
			for {
				n, err := unix.Read(open[name], buf)
				if n <= 0 || err != nil {
					break
				}
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// thawCgroup writes "thawed" to a container's freezer (v1 or v2).
func thawCgroup(id string) {
	cg := filepath.Join(defaultContainerCgroup, id)
	v1 := filepath.Join("/sys/fs/cgroup/freezer", cg, "freezer.state")
	if _, err := os.Stat(v1); err == nil {
		os.WriteFile(v1, []byte("THAWED"), 0)
	}
	v2 := filepath.Join("/sys/fs/cgroup", cg, "cgroup.freeze")
	if _, err := os.Stat(v2); err == nil {
		os.WriteFile(v2, []byte("0"), 0)
	}
}
