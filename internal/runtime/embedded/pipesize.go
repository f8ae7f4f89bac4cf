package embedded

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// raisePipeMaxSize raises fs.pipe-max-size to at least atLeast, if it is
// lower, until the last returned func is called. Without CAP_SYS_RESOURCE
// (as on the test machines), F_SETPIPE_SZ cannot pass the sysctl: CRIU's
// lazy page server (live migration) and the pages FIFOs of a dump need
// bigger pipes than its default 1 MiB. The old value is kept in orig too:
// an agent that dies before it puts it back does so when it starts again
// (recoverPipeMaxSize).
func raisePipeMaxSize(orig string, atLeast int) (restore func(), err error) {
	pipeMu.Lock()
	defer pipeMu.Unlock()
	b, err := os.ReadFile(pipeMaxSizePath)
	if err != nil {
		return func() {}, nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || (n >= atLeast && pipeUsers == 0) {
		return func() {}, nil
	}
	if n < atLeast {
		if pipeUsers == 0 {
			if err := os.WriteFile(orig, []byte(strconv.Itoa(n)), 0o600); err != nil {
				return nil, err
			}
			pipeOld, pipeOrig = n, orig
		}
		if err := os.WriteFile(pipeMaxSizePath, []byte(strconv.Itoa(atLeast)), 0); err != nil {
			if pipeUsers == 0 {
				os.Remove(orig)
				pipeOld = 0
			}
			return nil, fmt.Errorf("raise fs.pipe-max-size from %d to %d: %w", n, atLeast, err)
		}
	}
	pipeUsers++
	var once sync.Once
	return func() {
		once.Do(func() {
			pipeMu.Lock()
			defer pipeMu.Unlock()
			if pipeUsers--; pipeUsers == 0 && pipeOld > 0 {
				os.WriteFile(pipeMaxSizePath, []byte(strconv.Itoa(pipeOld)), 0)
				os.Remove(pipeOrig)
				pipeOld = 0
			}
		})
	}, nil
}

var (
	pipeMu    sync.Mutex
	pipeUsers int
	pipeOld   int    // the value to put back; 0: none
	pipeOrig  string // the file that keeps it
)

// pipeMaxSizePath is a variable for the tests.
var pipeMaxSizePath = "/proc/sys/fs/pipe-max-size"

const filePipeMaxSize = "pipe-max-size.orig"

// recoverPipeMaxSize puts back a fs.pipe-max-size that an agent raised
// and could not restore (it died).
func (r *Runtime) recoverPipeMaxSize() string {
	orig := filepath.Join(r.cfg.StateDir, filePipeMaxSize)
	b, err := os.ReadFile(orig)
	if err != nil {
		return ""
	}
	defer os.Remove(orig)
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || n <= 0 {
		return ""
	}
	if err := os.WriteFile(pipeMaxSizePath, []byte(strconv.Itoa(n)), 0); err != nil {
		return ""
	}
	return fmt.Sprintf("put fs.pipe-max-size back to %d after an interrupted checkpoint or live migration", n)
}
