package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestContexts(t *testing.T) {
	stub := &stubCheckpointer{}
	url, ca := startServer(t, stub)
	dir := t.TempDir()
	t.Setenv("CKPT_CONFIG", filepath.Join(dir, "conf", "config.yaml"))
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	if _, _, err := runCLI("config", "set-context", "node-1", "--server", url, "--cacert", ca, "--token-file", tokenFile); err != nil {
		t.Fatal(err)
	}
	if _, _, err := runCLI("config", "set-context", "bad", "--server", url); err != nil { // no CA, no token
		t.Fatal(err)
	}
	st, err := os.Stat(configPath())
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("config file: %v %v", st, err)
	}
	if d, _ := os.Stat(filepath.Dir(configPath())); d.Mode().Perm() != 0o700 {
		t.Fatalf("config dir mode %v", d.Mode().Perm())
	}

	// The first context set became the current one: no flags needed.
	out, errOut, err := runCLI("checkpoint", "default/web/app")
	if err != nil || !strings.HasSuffix(out, "checkpoint-web_default-app-x.tar\n") {
		t.Fatalf("checkpoint with the current context: %v %q %q", err, out, errOut)
	}
	// --context picks another; flags win over its values.
	if _, _, err := runCLI("checkpoint", "default/web/app", "--context", "bad"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("context without a CA: %v", err)
	}
	if _, _, err := runCLI("checkpoint", "default/web/app", "--context", "bad", "--cacert", ca, "--token-file", tokenFile); err != nil {
		t.Fatalf("context with flags: %v", err)
	}
	if _, _, err := runCLI("checkpoint", "default/web/app", "--context", "nope"); err == nil || !strings.Contains(err.Error(), `no such context`) {
		t.Fatalf("unknown context: %v", err)
	}

	if _, _, err := runCLI("config", "use-context", "bad"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := runCLI("config", "use-context", "nope"); err == nil {
		t.Fatal("use-context of an unknown context accepted")
	}
	out, _, err = runCLI("config", "get-contexts")
	if err != nil || !strings.Contains(out, "*        bad") || !strings.Contains(out, "node-1  "+url+"  token file") {
		t.Fatalf("get-contexts: %v\n%s", err, out)
	}
	out, _, err = runCLI("config", "get-contexts", "-o", "yaml")
	if err != nil || !strings.Contains(out, "current-context: bad") {
		t.Fatalf("get-contexts -o yaml: %v\n%s", err, out)
	}

	// Relative paths are relative to the config file; unknown fields fail.
	conf := "current-context: rel\ncontexts:\n- name: rel\n  server: " + url + "\n  certificate-authority: " + ca + "\n  token-file: ../token\n"
	if err := os.WriteFile(configPath(), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := runCLI("checkpoint", "default/web/app"); err != nil {
		t.Fatalf("relative token file: %v", err)
	}
	if err := os.WriteFile(configPath(), []byte(conf+"  tokn: x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := runCLI("checkpoint", "default/web/app"); err == nil || !strings.Contains(err.Error(), "tokn") {
		t.Fatalf("unknown field: %v", err)
	}
}

func TestOutputFormats(t *testing.T) {
	var o outputFormat
	for _, bad := range []string{"xml", "JSON", "table"} {
		if err := o.Set(bad); err == nil {
			t.Errorf("-o %s accepted", bad)
		}
	}
	if _, _, err := runCLI("checkpoints", "ls", "-o", "xml"); err == nil {
		t.Error("checkpoints ls -o xml accepted")
	}
}
