package embedded

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"time"
)

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

// freezeCgroupWait freezes a container's cgroup (v1 or v2) and waits until
// it is frozen or ctx ends.
func freezeCgroupWait(ctx context.Context, id string) error {
	cg := filepath.Join(defaultContainerCgroup, id)
	v1 := filepath.Join("/sys/fs/cgroup/freezer", cg, "freezer.state")
	if _, err := os.Stat(v1); err == nil {
		for i := 0; ; i++ {
			if i%10 == 0 { // v1 may need asking again (CRIU does the same)
				if err := os.WriteFile(v1, []byte("FROZEN"), 0); err != nil {
					return err
				}
			}
			b, err := os.ReadFile(v1)
			if err != nil {
				return err
			}
			if strings.TrimSpace(string(b)) == "FROZEN" {
				return nil
			}
			if err := sleepCtx(ctx, 10*time.Millisecond); err != nil {
				return err
			}
		}
	}
	dir := filepath.Join("/sys/fs/cgroup", cg)
	if err := os.WriteFile(filepath.Join(dir, "cgroup.freeze"), []byte("1"), 0); err != nil {
		return err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "cgroup.events"))
		if err != nil {
			return err
		}
		if strings.Contains(string(b), "frozen 1") {
			return nil
		}
		if err := sleepCtx(ctx, 10*time.Millisecond); err != nil {
			return err
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
