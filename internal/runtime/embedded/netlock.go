package embedded

import (
	"context"
	"fmt"
	"os/exec"
	goruntime "runtime"
	"strings"

	"github.com/vishvananda/netns"
)

// criuNetworkUnlock is what CRIU itself runs when a dump ends
// (iptables_network_unlock_internal in criu/net.c): it takes out the CRIU
// chain that drops every packet of the network namespace while CRIU dumps.
const criuNetworkUnlock = "*filter\n:CRIU - [0:0]\n-D INPUT -j CRIU\n-D OUTPUT -j CRIU\n-X CRIU\nCOMMIT\n"

// unlockNetwork removes the network lock a dump killed at its deadline
// left in the container's network namespace (a pod's, shared by all its
// containers and its hostPorts): CRIU never got to remove it. A namespace
// without the lock is left alone. It returns what it removed.
func (r *Runtime) unlockNetwork(id string) (bool, error) {
	st, err := r.runc.State(context.Background(), id)
	if err != nil || st.Pid <= 0 {
		return false, err
	}
	goruntime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		goruntime.UnlockOSThread()
		return false, err
	}
	defer orig.Close()
	target, err := netns.GetFromPid(st.Pid)
	if err != nil {
		goruntime.UnlockOSThread()
		return false, err
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		goruntime.UnlockOSThread()
		return false, err
	}
	defer func() {
		// A thread that cannot go back stays locked and dies with this
		// goroutine, as Go does with locked threads.
		if netns.Set(orig) == nil {
			goruntime.UnlockOSThread()
		}
	}()
	removed := false
	var errs []string
	for _, bin := range []string{"iptables", "ip6tables"} {
		// The children are forked from this thread, in the namespace.
		if exec.Command(bin, "-w", "-n", "-L", "CRIU").Run() != nil {
			continue // no lock
		}
		cmd := exec.Command(bin+"-restore", "-w", "--noflush")
		cmd.Stdin = strings.NewReader(criuNetworkUnlock)
		if out, err := cmd.CombinedOutput(); err != nil {
			errs = append(errs, fmt.Sprintf("%s-restore: %v: %s", bin, err, strings.TrimSpace(string(out))))
			continue
		}
		removed = true
	}
	if len(errs) > 0 {
		return removed, fmt.Errorf("remove CRIU's network lock from container %s: %s", short(id), strings.Join(errs, "; "))
	}
	return removed, nil
}
