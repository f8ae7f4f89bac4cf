package embedded

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/ckpt-dev/ckpt/internal/archive"
)

// fileVerify holds the verdict on the page images of a restore whose
// digests are checked while CRIU restores (archive.ExtractLate): CRIU's
// pre-resume hook waits for it, so the tasks run only from verified pages.
const fileVerify = "verify.json"

// prepareVerifyGate makes CRIU's pre-resume hook wait for check's verdict
// and writes the verdict when it comes. A bad verdict stops the restored
// tasks before they run one instruction (MemoryWait); the shim then kills
// them and fails the restore.
func prepareVerifyGate(dir, id, shim string, check *archive.LateCheck, opts *ShimOptions) error {
	state := filepath.Join(dir, fileVerify)
	if err := writeJSONAtomic(state, MemoryState{State: MemoryLoading, Since: time.Now().UTC()}); err != nil {
		return err
	}
	hook := filepath.Join(dir, "verify-hook.sh")
	script := "#!/bin/sh\n[ \"$CRTOOLS_SCRIPT_ACTION\" = pre-resume ] || exit 0\nexec " +
		shellQuote(shim) + " memory-wait --dir " + shellQuote(dir) + " --id " + shellQuote(id) + " --state " + fileVerify + "\n"
	if err := os.WriteFile(hook, []byte(script), 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, fileCriuConf), []byte("action-script "+hook+"\n"), 0o600); err != nil {
		return err
	}
	go func() {
		v := MemoryState{State: MemoryComplete, Since: time.Now().UTC()}
		if err := check.Wait(); err != nil {
			v = MemoryState{State: MemoryFailed, Error: "the archive's page images do not match its checksums: " + err.Error(), Since: v.Since}
		}
		writeJSONAtomic(state, v)
	}()
	opts.Verify = true
	return nil
}

// verifiedBeforeResume is the shim's check once runc restore returned: the
// tasks resumed only if the hook saw a good verdict.
func verifiedBeforeResume(dir string) error {
	var v MemoryState
	if err := readJSON(filepath.Join(dir, fileVerify), &v); err != nil {
		return fmt.Errorf("no verdict on the page images: %w", err)
	}
	defer os.WriteFile(filepath.Join(dir, fileCriuConf), nil, 0o600) // the hook's work is done
	switch v.State {
	case MemoryComplete:
		return nil
	case MemoryFailed:
		return errors.New(v.Error)
	}
	return errors.New("the page images were not verified before the tasks resumed")
}
