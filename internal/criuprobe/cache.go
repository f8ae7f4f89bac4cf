package criuprobe

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// DefaultCacheDir holds the probe's successes: /run is emptied at boot, so a
// new kernel is always probed.
const DefaultCacheDir = "/run/ckpt/criu-probe"

// Cached runs Probe unless it already passed during this boot for the same
// criu binary (path, size, modification and change time). Failures are
// never cached; a cache that cannot be read or written only costs a probe.
func Cached(ctx context.Context, criu, dir string) error {
	return cached(ctx, criu, dir, "sockets", Probe)
}

// CachedUserfaultfd runs Userfaultfd unless it passed, as Cached does.
func CachedUserfaultfd(ctx context.Context, criu, dir string) error {
	return cached(ctx, criu, dir, "uffd", Userfaultfd)
}

func cached(ctx context.Context, criu, dir, name string, check func(context.Context, string) error) error {
	key, err := cacheKey(criu)
	if err != nil {
		return check(ctx, criu)
	}
	mark := filepath.Join(dir, name+"-"+key)
	if _, err := os.Lstat(mark); err == nil {
		return nil
	}
	if err := check(ctx, criu); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err == nil {
		_ = os.WriteFile(mark, []byte(criu+"\n"), 0o600)
	}
	return nil
}

// cacheKey names a criu binary as it is now, in this boot.
func cacheKey(criu string) (string, error) {
	path, err := exec.LookPath(criu)
	if err != nil {
		return "", err
	}
	if path, err = filepath.EvalSymlinks(path); err != nil {
		return "", err
	}
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return "", err
	}
	boot, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", err
	}
	h := sha256.Sum256(fmt.Appendf(nil, "%s\x00%d\x00%d.%d\x00%d.%d\x00%d\x00%s",
		path, st.Size, st.Mtim.Sec, st.Mtim.Nsec, st.Ctim.Sec, st.Ctim.Nsec, st.Ino, strings.TrimSpace(string(boot))))
	return hex.EncodeToString(h[:16]), nil
}
