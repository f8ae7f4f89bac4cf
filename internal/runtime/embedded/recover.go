package embedded

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// A dump in progress is recorded as <state>/dumps/<container-id> holding
// the process group of its runc and CRIU, so that an agent that starts
// after a crash can stop a dump nobody will finish (its archive reader died
// with the old agent) and release the container.

func (r *Runtime) dumpsDir() string { return filepath.Join(r.cfg.StateDir, "dumps") }

func (r *Runtime) recordDump(id string, pgid int) {
	os.MkdirAll(r.dumpsDir(), 0o700)
	os.WriteFile(filepath.Join(r.dumpsDir(), id), []byte(strconv.Itoa(pgid)), 0o600)
}

func (r *Runtime) forgetDump(id string) { os.Remove(filepath.Join(r.dumpsDir(), id)) }

// RecoverInterruptedDumps stops the dumps an earlier agent left running and
// thaws every container left frozen. Only the agent calls it, at start,
// while it holds the agent lock (no dump of its own runs yet). It returns
// what it did, one line each.
func (r *Runtime) RecoverInterruptedDumps() []string {
	var done []string
	if what := r.recoverPipeMaxSize(); what != "" {
		done = append(done, what)
	}
	entries, _ := os.ReadDir(r.dumpsDir())
	for _, e := range entries {
		id := e.Name()
		b, _ := os.ReadFile(filepath.Join(r.dumpsDir(), id))
		pgid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err == nil && pgid > 1 && isRuncCheckpoint(pgid, id) {
			syscall.Kill(-pgid, syscall.SIGKILL)
			done = append(done, fmt.Sprintf("stopped the interrupted dump of container %s (process group %d)", id, pgid))
		}
		r.forgetDump(id)
	}
	for _, id := range r.ThawAll() {
		done = append(done, fmt.Sprintf("thawed container %s", id))
	}
	return done
}

// isRuncCheckpoint checks that pid is still `runc ... checkpoint ... id`,
// and not a process that reused the number.
func isRuncCheckpoint(pid int, id string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	hasCheckpoint := false
	for _, a := range args {
		if a == "checkpoint" {
			hasCheckpoint = true
		}
	}
	return hasCheckpoint && len(args) > 0 && args[len(args)-1] == id
}

// ErrAgentRunning is returned when another agent uses the same state.
var ErrAgentRunning = errors.New("another ckpt agent is running on this root dir")

// LockAgent takes the agent lock on the state dir for the life of the
// process: two agents on one root dir would fight over its containers.
func (r *Runtime) LockAgent() error {
	f, err := os.OpenFile(filepath.Join(r.cfg.StateDir, "agent.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return fmt.Errorf("%w (%s)", ErrAgentRunning, r.cfg.StateDir)
		}
		return err
	}
	r.agentLock = f // kept referenced: the lock lives as long as the descriptor
	return nil
}
