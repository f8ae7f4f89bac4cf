// Package arch checks the import rules of docs/architecture.md.
package arch

import (
	"encoding/json"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/ckpt-dev/ckpt/"

// allowed lists, for each package, the module packages its non-test code
// may import (docs/architecture.md, table "Packages"). nil: anything.
var allowed = map[string][]string{
	"cmd/ckpt":                    nil,
	"pkg/api":                     {},
	"pkg/client":                  {"pkg/api"},
	"internal/server":             {"internal/checkpoint", "internal/pageserver", "internal/runtime", "pkg/api"},
	"internal/auth":               {},
	"internal/auth/authtest":      {},
	"internal/checkpoint":         {"internal/archive", "internal/runtime", "pkg/api"},
	"internal/runtime":            {},
	"internal/runtime/embedded":   {"internal/archive", "internal/pageserver", "internal/runtime"},
	"internal/pageserver":         {},
	"internal/runtime/cri":        {"internal/archive", "internal/runtime"},
	"internal/archive":            {"internal/safepath"},
	"internal/safepath":           {},
	"internal/image":              {"internal/runtime", "internal/safepath"},
	"internal/ckptimage":          {"internal/archive", "internal/image", "internal/runtime"},
	"internal/inspect":            {"internal/archive", "internal/trust"},
	"internal/trust":              {"internal/archive"},
	"internal/metrics":            {},
	"internal/criuprobe":          {},
	"internal/testutil/debimage":  {},
	"internal/testutil/javaclass": {},
	"bench/cmd/ckptbench":         {"pkg/client"},
	"cmd/kubectl-checkpoint":      {"pkg/client"},
}

// only lists external import prefixes that only some packages may use.
var only = map[string][]string{
	"k8s.io/apiserver": {"internal/auth"},
	"k8s.io/cri-api":   {"internal/runtime/cri", "test/e2e/cri"},
}

// never lists imports no package may use.
var never = []string{"k8s.io/kubernetes", "github.com/opencontainers/runc/libcontainer"}

type pkg struct {
	ImportPath   string
	Imports      []string
	TestImports  []string
	XTestImports []string
}

func TestImportRules(t *testing.T) {
	out, err := exec.Command("go", "list", "-json", module+"...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	seen := map[string]bool{}
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimPrefix(p.ImportPath, module)
		seen[name] = true
		all := slices.Concat(p.Imports, p.TestImports, p.XTestImports)
		for _, imp := range all {
			for _, bad := range never {
				if strings.HasPrefix(imp, bad) {
					t.Errorf("%s imports %s, which no package may", name, imp)
				}
			}
			for prefix, who := range only {
				if strings.HasPrefix(imp, prefix) && !slices.Contains(who, name) {
					t.Errorf("%s imports %s; only %v may", name, imp, who)
				}
			}
		}
		rule, ok := allowed[name]
		if !ok {
			if !strings.HasPrefix(name, "test/") && !strings.HasPrefix(name, "hack/") &&
				!strings.HasPrefix(name, "examples/") && name != "deploy" {
				t.Errorf("package %s is not in docs/architecture.md (and test/arch's table)", name)
			}
			continue
		}
		if rule == nil {
			continue
		}
		for _, imp := range p.Imports { // non-test code only
			if dep, ok := strings.CutPrefix(imp, module); ok && !slices.Contains(rule, dep) {
				t.Errorf("%s imports %s; docs/architecture.md allows %v", name, dep, rule)
			}
		}
	}
	for name := range allowed {
		if !seen[name] {
			t.Errorf("docs/architecture.md names %s, which no longer exists", name)
		}
	}
}

// TestNoHandWrittenAPIRequests: only pkg/client builds HTTP requests to
// ckpt's API (tests of the HTTP layer itself use client.Raw).
func TestNoHandWrittenAPIRequests(t *testing.T) {
	out, _ := exec.Command("grep", "-rlE", `http\.(NewRequest|Post|Get)\(|http\.DefaultClient`, "--include=*.go",
		"../../cmd", "../../bench", "../../test").Output()
	for _, f := range strings.Fields(string(out)) {
		switch strings.TrimPrefix(f, "../../") {
		case "test/arch/arch_test.go":
		default:
			t.Errorf("%s builds HTTP requests by hand; use pkg/client", f)
		}
	}
}
