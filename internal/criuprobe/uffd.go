package criuprobe

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// Userfaultfd reports whether this kernel and criu can restore memory
// through userfaultfd (`criu check --feature uffd-noncoop`): lazy and
// in-place restores need it.
func Userfaultfd(ctx context.Context, criu string) error {
	out, err := exec.CommandContext(ctx, criu, "check", "--feature", "uffd-noncoop").CombinedOutput()
	if err != nil {
		return fmt.Errorf("criu check --feature uffd-noncoop: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}
