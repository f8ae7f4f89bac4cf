package embedded

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const goodManifest = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: counter\nspec:\n  containers:\n  - name: counter\n    image: localhost/counter:latest\n    command: [/counter]\n    args: [a]\n    workingDir: /tmp\n    env:\n    - name: A\n      value: b\n"

func TestParseManifest(t *testing.T) {
	cases := []struct {
		name, manifest, wantErr string
	}{
		{"good", goodManifest, ""},
		{"json", `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","namespace":"ns"},"spec":{"containers":[{"name":"c","image":"i"}]}}`, ""},
		{"invalid yaml", "metadata: [x\n", "invalid YAML"},
		{"not a pod", strings.Replace(goodManifest, "kind: Pod", "kind: Deployment", 1), `kind "Deployment" is not Pod`},
		{"unsupported pod field", strings.Replace(goodManifest, "spec:\n", "spec:\n  dnsPolicy: None\n", 1), "unsupported field spec.dnsPolicy"},
		{"unsupported container field", goodManifest + "    securityContext:\n      procMount: Unmasked\n", "unsupported field spec.containers[].securityContext.procMount"},
		{"init containers", strings.Replace(goodManifest, "spec:\n", "spec:\n  initContainers:\n  - name: i\n    image: x\n", 1), ""},
		{"init container ports", strings.Replace(goodManifest, "spec:\n", "spec:\n  initContainers:\n  - name: i\n    image: x\n    ports:\n    - containerPort: 80\n", 1), "unsupported field spec.initContainers[].ports[].containerPort"},
		{"init container name clash", strings.Replace(goodManifest, "spec:\n", "spec:\n  initContainers:\n  - name: counter\n    image: x\n", 1), `spec.containers[0].name: duplicate container name "counter"`},
		{"configMap volume", strings.Replace(goodManifest, "spec:\n", "spec:\n  volumes:\n  - name: v\n    configMap:\n      name: c\n", 1), "spec.volumes[0].configMap: a static pod cannot use configMap volumes"},
		{"secret volume", strings.Replace(goodManifest, "spec:\n", "spec:\n  volumes:\n  - name: v\n    secret:\n      secretName: c\n", 1), "spec.volumes[0].secret: a static pod cannot use secret volumes"},
		{"pvc volume", strings.Replace(goodManifest, "spec:\n", "spec:\n  volumes:\n  - name: v\n    persistentVolumeClaim:\n      claimName: c\n", 1), "spec.volumes[0].persistentVolumeClaim"},
		{"env from", goodManifest + "    - name: B\n      valueFrom:\n        fieldRef:\n          fieldPath: metadata.name\n", "unsupported field spec.containers[].env[].valueFrom.fieldRef.fieldPath"},
		{"restart always", strings.Replace(goodManifest, "spec:\n", "spec:\n  restartPolicy: Always\n", 1), ""},
		{"restart sometimes", strings.Replace(goodManifest, "spec:\n", "spec:\n  restartPolicy: Sometimes\n", 1), `spec.restartPolicy "Sometimes"`},
		{"no name", strings.Replace(goodManifest, "  name: counter\nspec", "  labels: {a: b}\nspec", 1), "metadata.name is required"},
		{"bad name", strings.Replace(goodManifest, "name: counter\nspec", "name: Counter_1\nspec", 1), `metadata.name "Counter_1"`},
		{"bad container name", strings.Replace(goodManifest, "- name: counter", "- name: ../x", 1), `spec.containers[0].name "../x"`},
		{"duplicate container", goodManifest + "  - name: counter\n    image: x\n", `duplicate container name "counter"`},
		{"no image", strings.Replace(goodManifest, "    image: localhost/counter:latest\n", "", 1), "spec.containers[0].image is required"},
		{"no containers", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec: {}\n", "spec.containers is empty"},
		{"wrong type", strings.Replace(goodManifest, "args: [a]", "args: 5", 1), "invalid Pod"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pod, err := ParseManifest([]byte(c.manifest))
			if c.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if pod.Namespace == "" {
					t.Error("namespace not defaulted")
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, c.wantErr)
			}
		})
	}
}

func TestLoadManifestsKeepsGoodPods(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "a.yaml"), []byte(goodManifest), 0o644)
	os.WriteFile(filepath.Join(dir, "b.yaml"), []byte(goodManifest), 0o644) // same pod again
	os.WriteFile(filepath.Join(dir, "c.yml"), []byte("metadata: [x\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("ignored"), 0o644)
	os.WriteFile(filepath.Join(dir, ".hidden.yaml"), []byte("ignored"), 0o644)
	pods, errs := LoadManifests(dir)
	if len(pods) != 1 || pods[0].Name != "counter" {
		t.Fatalf("pods = %v", pods)
	}
	if len(errs) != 2 {
		t.Fatalf("errors = %v, want the duplicate and the invalid file", errs)
	}
	joined := errs[0].Error() + errs[1].Error()
	for _, want := range []string{"b.yaml: pod default/counter is already defined in", "c.yml: invalid YAML"} {
		if !strings.Contains(joined, want) {
			t.Errorf("errors %q lack %q", joined, want)
		}
	}
}

// TestParseManifestRestartPolicy: an unset policy is Always, as the API
// server defaults it for the kubelet; a set one is kept.
func TestParseManifestRestartPolicy(t *testing.T) {
	for set, want := range map[string]string{"": "Always", "Always": "Always", "OnFailure": "OnFailure", "Never": "Never"} {
		m := goodManifest
		if set != "" {
			m = strings.Replace(goodManifest, "spec:\n", "spec:\n  restartPolicy: "+set+"\n", 1)
		}
		pod, err := ParseManifest([]byte(m))
		if err != nil {
			t.Fatal(err)
		}
		if got := string(pod.Spec.RestartPolicy); got != want {
			t.Errorf("restartPolicy %q parses as %q, want %q", set, got, want)
		}
	}
}
