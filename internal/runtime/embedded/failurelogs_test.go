package embedded

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestKeepFailureLogsBoundsAndPrunes(t *testing.T) {
	state := t.TempDir()
	big := filepath.Join(t.TempDir(), "dump.log")
	if err := os.WriteFile(big, []byte(strings.Repeat("x", maxFailureLogBytes)+"Error (criu/cr-dump.c:1): the last line\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var last string
	for i := 0; i < keptFailureLogs+3; i++ {
		msg := keepFailureLogs(state, "abc", "dump", big, filepath.Join(t.TempDir(), "missing.log"))
		_, p, ok := strings.Cut(msg, "(logs: ")
		if !ok {
			t.Fatalf("message %q names no log", msg)
		}
		last, _, _ = strings.Cut(p, ";")
		time.Sleep(time.Millisecond)
	}
	logs, err := ListFailureLogs(state)
	if err != nil {
		t.Fatal(err)
	}
	if len(logs) != keptFailureLogs {
		t.Fatalf("kept %d logs, want %d", len(logs), keptFailureLogs)
	}
	if logs[0].Path != last {
		t.Fatalf("newest log is %s, want %s", logs[0].Path, last)
	}
	st, err := os.Stat(last)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("log mode %v, want 0600", st.Mode().Perm())
	}
	if st.Size() > maxFailureLogBytes+100 {
		t.Fatalf("log is %d bytes, want at most about %d", st.Size(), maxFailureLogBytes)
	}
	data, _ := os.ReadFile(last)
	if !strings.Contains(string(data), "the last line") {
		t.Fatal("the kept log lost the end of CRIU's log")
	}
}

func TestExplainDumpFailure(t *testing.T) {
	for _, c := range []struct{ detail, want string }{
		{"criu: Error (criu/sk-inet.c:1): inet: Connected TCP socket, consider using --tcp-established option.", "tcpEstablished=true"},
		{"criu: Error (criu/cr-dump.c:1): Can't get rlimit 0: Operation not permitted", "CAP_SYS_RESOURCE"},
		{"write archive: write /x: No space left on device", "disk holding the checkpoint is full"},
		{"(00.168461) Error (criu/fsnotify.c:284): fsnotify: \tCan't dump that handle", "inotify or fanotify watch"},
		{"criu failed: signal: killed", "CRIU was killed"},
		{"criu: Error (criu/x.c:1): something else", ""},
	} {
		got := explainDumpFailure(c.detail)
		if c.want == "" && got != "" || !strings.Contains(got, c.want) {
			t.Errorf("explainDumpFailure(%q) = %q, want it to contain %q", c.detail, got, c.want)
		}
	}
}

func TestTailErrorsSkipsRlimitNoise(t *testing.T) {
	p := filepath.Join(t.TempDir(), "dump.log")
	log := "(00.01) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted\n" +
		"(00.02) Error (criu/sk-inet.c:137): inet: the real cause\n"
	if err := os.WriteFile(p, []byte(log), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := tailErrors(p, 3); got != "(00.02) Error (criu/sk-inet.c:137): inet: the real cause" {
		t.Fatalf("tailErrors = %q", got)
	}
}

func TestHookScriptQuotes(t *testing.T) {
	c := frozenCapture("/state/it's", "/work", nil)
	s := c.hookScript("/usr/bin/ckpt")
	if !strings.Contains(s, `'/state/it'\''s/upper'`) || !strings.Contains(s, "post-dump") {
		t.Fatalf("hook script:\n%s", s)
	}
}

func TestDropStagingLogPath(t *testing.T) {
	in := "criu failed: type NOTIFY errno 0\nlog file: /r/checkpoints/.staging/x/criu/dump.log; criu: Error (criu/seize.c:109): boom"
	got := dropStagingLogPath(in)
	if strings.Contains(got, ".staging") || !strings.Contains(got, "criu: Error (criu/seize.c:109): boom") || !strings.Contains(got, "type NOTIFY") {
		t.Fatalf("dropStagingLogPath = %q", got)
	}
}
