package embedded

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// TestRestartAfterStartError: a container that never ran (StartError) is
// restarted by its pod's policy, as the kubelet restarts it, unless it was
// a restore: restarting that from the image would be another container
// than the one asked for.
func TestRestartAfterStartError(t *testing.T) {
	for _, tc := range []struct {
		name         string
		restoredFrom string
		wantRestart  bool
	}{
		{"created", "", true},
		{"restored", "checkpoint-x.tar", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &Runtime{cfg: Config{StateDir: t.TempDir()}, images: dirImages{}} // the new container fails at once
			const podID, ctrID = "pod-1", "ctr-1"
			pod := &corev1.Pod{Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyAlways, Containers: []corev1.Container{{Name: "app", Image: "localhost/none:latest"}}}}
			for path, v := range map[string]any{
				filepath.Join(r.podDir(podID), filePodMeta):    podRecord{ID: podID, Namespace: "default", Name: "p"},
				filepath.Join(r.podDir(podID), filePod):        pod,
				filepath.Join(r.containerDir(ctrID), fileMeta): record{ID: ctrID, Namespace: "default", Pod: "p", Name: "app", PodUID: podID, RestoredFrom: tc.restoredFrom},
				filepath.Join(r.containerDir(ctrID), fileExit): exitStatus{Code: startErrorCode, Reason: reasonStartError, FinishedAt: time.Now().UTC()},
			} {
				if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
					t.Fatal(err)
				}
				if err := writeJSONAtomic(path, v); err != nil {
					t.Fatal(err)
				}
			}
			r.RestartExited(context.Background())
			// The back-off is written just before the new container is made.
			_, err := os.Stat(filepath.Join(r.podDir(podID), fileBackoff))
			if restarted := err == nil; restarted != tc.wantRestart {
				t.Errorf("restarted %v, want %v", restarted, tc.wantRestart)
			}
		})
	}
}
