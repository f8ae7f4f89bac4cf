package embedded

import (
	"os"
	"path/filepath"
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
