package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestCurlOverHTTPS is issue 3's check as a user would run it: curl with the
// agent's self-signed CA and a bearer token.
func TestCurlOverHTTPS(t *testing.T) {
	needE2E(t)
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatal("curl not installed: hack/install-deps.sh (make deps) installs it")
	}
	a := newAgent(t, withHTTPS())
	a.addPod("counter", counterManifest("counter", nil))
	a.waitRunning("counter", "counter")
	ca := filepath.Join(a.rootDir, "pki", "ckpt.crt")
	curl := func(args ...string) (status, body string) {
		out, err := exec.Command("curl", append([]string{"-sS", "--cacert", ca, "-w", "\n%{http_code}"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("curl %v: %v\n%s", args, err, out)
		}
		s := strings.TrimRight(string(out), "\n")
		i := strings.LastIndex(s, "\n")
		return s[i+1:], s[:i]
	}
	status, body := curl("-H", "Authorization: Bearer "+testToken, "-X", "POST", a.url("/checkpoint/default/counter/counter"))
	if status != "200" {
		t.Fatalf("curl POST: %s %s", status, body)
	}
	var answer struct{ Items []string }
	if err := json.Unmarshal([]byte(body), &answer); err != nil || len(answer.Items) != 1 {
		t.Fatalf("answer %q: %v", body, err)
	}
	checkArchive(t, a, answer.Items[0])

	if status, body := curl("-X", "POST", a.url("/checkpoint/default/counter/counter")); status != "401" || body != "Unauthorized" {
		t.Errorf("without a token: %s %q, want 401 Unauthorized", status, body)
	}
	if status, _ := curl("-H", "Authorization: Bearer "+testToken, "-X", "POST", a.url("/checkpoint/default/nopod/counter")); status != "404" {
		t.Errorf("missing pod: %s", status)
	}
	if _, err := os.Stat(filepath.Join(a.rootDir, "pki", "ckpt.key")); err != nil {
		t.Errorf("self-signed key not written: %v", err)
	}
}
