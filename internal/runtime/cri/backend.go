package cri

import "github.com/ckpt-dev/ckpt/internal/runtime"

// The CRI backend's capabilities beyond runtime.Backend: it restores from
// an archive file (the runtime reads it) and reports health. It does not
// stop containers: the kubelet owns them.
var (
	_ runtime.Backend       = (*Runtime)(nil)
	_ runtime.FileRestorer  = (*Runtime)(nil)
	_ runtime.HealthChecker = (*Runtime)(nil)
)
