package embedded

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Logs of failed dumps and restores are kept per container: the newest
// keptFailureLogs, each file's last maxFailureLogBytes.
const (
	keptFailureLogs    = 5
	maxFailureLogBytes = 1 << 20
	dirFailureLogs     = "failure-logs"
)

// FailureLogDir is where the logs of failed operations are kept.
func FailureLogDir(stateDir string) string { return filepath.Join(stateDir, dirFailureLogs) }

func (r *Runtime) keepFailureLogs(id, verb string, logs ...string) string {
	return keepFailureLogs(r.cfg.StateDir, id, verb, logs...)
}

// keepFailureLogs copies runc's and CRIU's logs of a failed operation to
// <state>/failure-logs/<id>/ and returns " (logs: PATH)" for the error
// message, or "" if nothing could be kept.
func keepFailureLogs(stateDir, id, verb string, logs ...string) string {
	dir := filepath.Join(FailureLogDir(stateDir), id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return ""
	}
	path := filepath.Join(dir, verb+"-"+time.Now().UTC().Format("20060102T150405.000000000Z")+".log")
	out, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return ""
	}
	defer out.Close()
	for _, l := range logs {
		f, err := os.Open(l)
		if err != nil {
			continue
		}
		if st, err := f.Stat(); err == nil && st.Size() > maxFailureLogBytes {
			f.Seek(st.Size()-maxFailureLogBytes, io.SeekStart)
		}
		fmt.Fprintf(out, "==> %s <==\n", filepath.Base(l))
		io.Copy(out, io.LimitReader(f, maxFailureLogBytes))
		f.Close()
		fmt.Fprintln(out)
	}
	pruneFailureLogs(dir)
	return " (logs: " + path + "; `ckpt failure-logs` shows them)"
}

func pruneFailureLogs(dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	var names []string
	for _, e := range entries {
		if e.Type().IsRegular() {
			names = append(names, e.Name())
		}
	}
	// Names end in a sortable UTC time; group by verb is not needed.
	sort.Slice(names, func(i, j int) bool { return stamp(names[i]) < stamp(names[j]) })
	for len(names) > keptFailureLogs {
		os.Remove(filepath.Join(dir, names[0]))
		names = names[1:]
	}
}

func stamp(name string) string {
	_, t, _ := strings.Cut(name, "-")
	return t
}

// FailureLog is one kept log.
type FailureLog struct {
	Container string
	Path      string
	Time      time.Time
	Size      int64
}

// ListFailureLogs returns the kept logs, newest first.
func ListFailureLogs(stateDir string) ([]FailureLog, error) {
	root := FailureLogDir(stateDir)
	ctrs, err := os.ReadDir(root)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []FailureLog
	for _, c := range ctrs {
		if !c.IsDir() {
			continue
		}
		files, _ := os.ReadDir(filepath.Join(root, c.Name()))
		for _, f := range files {
			info, err := f.Info()
			if err != nil || !info.Mode().IsRegular() {
				continue
			}
			out = append(out, FailureLog{Container: c.Name(), Path: filepath.Join(root, c.Name(), f.Name()), Time: info.ModTime(), Size: info.Size()})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Time.After(out[j].Time) })
	return out, nil
}

// explainDumpFailure turns CRIU's error lines into the cause in plain words.
func explainDumpFailure(detail string) string {
	switch {
	case strings.Contains(detail, "Connected TCP socket") || strings.Contains(detail, "tcp-established"):
		return `: the container has an established TCP connection; opt in to checkpointing it with ?tcpEstablished=true, ` +
			"`ckpt checkpoint --tcp-established`, or the pod annotation checkpoint.ckpt.dev/tcp-established: \"true\""
	case strings.Contains(detail, "Can't get rlimit"):
		return ": a process runs as another user and root here lacks CAP_SYS_RESOURCE, so CRIU cannot read its resource limits " +
			"(root on a normal node has CAP_SYS_RESOURCE; run ckpt with it)"
	case strings.Contains(detail, "No space left on device"):
		return ": the disk holding the checkpoint is full"
	case strings.Contains(detail, "Can't dump that handle"):
		return ": a process has an inotify or fanotify watch on a file CRIU cannot open by file handle " +
			"(an overlay root file system needs nfs_export=on, which this kernel or the image's file system refused)"
	case strings.Contains(detail, "signal: killed") || strings.Contains(detail, "killed"):
		return ": CRIU was killed"
	}
	return ""
}

// dropStagingLogPath removes runc's "log file: PATH" line: PATH is in the
// dump's work dir, which is gone by the time anyone reads the error; the
// kept copy is named instead.
func dropStagingLogPath(detail string) string {
	var keep []string
	for _, line := range strings.Split(detail, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "log file: ") {
			keep = append(keep, line)
			continue
		}
		// runc appends "; criu: ..." to the same line in our message.
		if _, rest, ok := strings.Cut(line, "; criu: "); ok {
			keep = append(keep, "criu: "+rest)
		}
	}
	return strings.Join(keep, "\n")
}
