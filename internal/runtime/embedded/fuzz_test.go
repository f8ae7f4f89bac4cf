package embedded

import (
	"encoding/json"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// FuzzParseManifest feeds hostile manifests to ParseManifest. A manifest it
// accepts must satisfy every rule the runtime relies on when it names
// directories and cgroups after the pod: valid Kubernetes names, a known
// kind and restart policy, unique container names, an image for each.
func FuzzParseManifest(f *testing.F) {
	good := "apiVersion: v1\nkind: Pod\nmetadata:\n  name: counter\n  namespace: default\nspec:\n  containers:\n  - name: counter\n    image: localhost/counter:latest\n    env:\n    - name: COUNTER_INTERVAL\n      value: 200ms\n"
	for _, s := range []string{
		good,
		`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"i"}]}}`,
		strings.Replace(good, "counter\n  namespace", "../../etc\n  namespace", 1),
		strings.Replace(good, "namespace: default", "namespace: Default", 1),
		strings.Replace(good, "spec:\n", "spec:\n  hostNetwork: true\n", 1),
		strings.Replace(good, "spec:\n", "spec:\n  volumes:\n  - name: v\n    emptyDir: {}\n  - name: s\n    secret: {secretName: x}\n", 1),
		strings.Replace(good, "spec:\n", "spec:\n  volumes:\n  - name: v\n    hostPath: {path: /tmp/../etc}\n", 1),
		good + "    ports:\n    - containerPort: 80\n      hostPort: 8080\n    volumeMounts:\n    - name: v\n      mountPath: /v\n      subPath: ../x\n",
		strings.Replace(good, "spec:\n", "spec:\n  restartPolicy: Always\n", 1),
		good + "  - name: counter\n    image: localhost/counter:latest\n",
		"kind: Deployment\nmetadata:\n  name: x\n",
		"metadata: [not a map\n",
		"a: &a [*a, *a, *a, *a]\n", // YAML alias bomb
		"",
		"null",
		"- 1\n- 2\n",
		"apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: c\n    image: i\n    env:\n    - name: \"1=bad\"\n",
		"apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: c\n    image: i\n    securityContext:\n      privileged: true\n",
		"apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: c\n    image: i\n    volumeMounts:\n    - name: host\n      mountPath: /host\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		pod, err := ParseManifest(data)
		if err != nil {
			if pod != nil {
				t.Fatalf("error %v with a pod", err)
			}
			return
		}
		checkAccepted(t, pod)
	})
}

func checkAccepted(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	if pod.Kind != "" && pod.Kind != "Pod" || pod.APIVersion != "" && pod.APIVersion != "v1" {
		t.Fatalf("accepted %s/%s", pod.APIVersion, pod.Kind)
	}
	if len(validation.IsDNS1123Label(pod.Namespace)) > 0 || len(validation.IsDNS1123Subdomain(pod.Name)) > 0 {
		t.Fatalf("accepted names %q/%q", pod.Namespace, pod.Name)
	}
	if rp := pod.Spec.RestartPolicy; rp != "" && rp != corev1.RestartPolicyNever && rp != corev1.RestartPolicyAlways && rp != corev1.RestartPolicyOnFailure {
		t.Fatalf("accepted restartPolicy %q", rp)
	}
	for _, c := range pod.Spec.InitContainers {
		if len(c.Ports) > 0 || c.LivenessProbe != nil {
			t.Fatalf("accepted an unsupported init container field: %s", podJSON(pod))
		}
	}
	if pod.Spec.HostPID || pod.Spec.HostIPC || pod.Spec.DNSPolicy != "" {
		t.Fatalf("accepted an unsupported pod field: %s", podJSON(pod))
	}
	vols := map[string]bool{}
	for _, v := range pod.Spec.Volumes {
		if (v.EmptyDir == nil) == (v.HostPath == nil) || v.ConfigMap != nil || v.Secret != nil || v.Projected != nil || v.PersistentVolumeClaim != nil {
			t.Fatalf("accepted volume %+v", v)
		}
		vols[v.Name] = true
	}
	if len(pod.Spec.Containers) == 0 {
		t.Fatal("accepted a pod without containers")
	}
	seen := map[string]bool{}
	for _, c := range pod.Spec.Containers {
		if len(validation.IsDNS1123Label(c.Name)) > 0 || seen[c.Name] {
			t.Fatalf("accepted container name %q (seen before: %v)", c.Name, seen[c.Name])
		}
		seen[c.Name] = true
		if c.Image == "" {
			t.Fatalf("accepted container %q without an image", c.Name)
		}
		if len(c.EnvFrom) > 0 || c.StartupProbe != nil || c.Stdin || c.TTY {
			t.Fatalf("accepted an unsupported container field: %s", podJSON(pod))
		}
		if sc := c.SecurityContext; sc != nil && (sc.ProcMount != nil || sc.SELinuxOptions != nil || sc.WindowsOptions != nil || sc.AppArmorProfile != nil) {
			t.Fatalf("accepted an unsupported security context: %s", podJSON(pod))
		}
		for _, m := range c.VolumeMounts {
			if !vols[m.Name] || strings.Contains(m.SubPath, "..") && strings.Contains("/"+m.SubPath+"/", "/../") || strings.HasPrefix(m.SubPath, "/") {
				t.Fatalf("accepted volume mount %+v", m)
			}
		}
		for _, p := range c.Ports {
			if p.ContainerPort < 1 || p.ContainerPort > 65535 || p.HostPort < 0 || p.HostPort > 65535 {
				t.Fatalf("accepted port %+v", p)
			}
		}
		for _, e := range c.Env {
			if len(validation.IsEnvVarName(e.Name)) > 0 || e.ValueFrom != nil {
				t.Fatalf("accepted env %+v", e)
			}
		}
	}
}

// podJSON shows a pod's spec compactly in failure messages.
func podJSON(p *corev1.Pod) string {
	b, _ := json.Marshal(p.Spec)
	return string(b)
}
