// Package deploy holds the Kubernetes manifests; this test checks that they
// decode strictly into the API types and keep the promises docs/kubernetes.md makes.
package deploy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"
)

// docs splits a manifest file into its YAML documents, keyed by kind.
func docs(t *testing.T, file string) map[string][][]byte {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][][]byte{}
	for _, d := range strings.Split(string(b), "\n---\n") {
		var meta struct{ Kind string }
		if err := yaml.Unmarshal([]byte(d), &meta); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if meta.Kind != "" {
			out[meta.Kind] = append(out[meta.Kind], []byte(d))
		}
	}
	return out
}

func strict(t *testing.T, b []byte, v any) {
	t.Helper()
	if err := yaml.UnmarshalStrict(b, v); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
}

func TestDaemonSet(t *testing.T) {
	d := docs(t, "daemonset.yaml")["DaemonSet"]
	if len(d) != 1 {
		t.Fatalf("want one DaemonSet, got %d", len(d))
	}
	var ds appsv1.DaemonSet
	strict(t, d[0], &ds)
	spec := ds.Spec.Template.Spec
	// CRI mode: the runtime freezes and dumps, so no host PIDs and no
	// privileges; hostNetwork serves on the node's address.
	if spec.HostPID || spec.HostIPC || !spec.HostNetwork || spec.ServiceAccountName != "ckpt" {
		t.Errorf("want no hostPID/hostIPC, hostNetwork and the ckpt ServiceAccount: %+v", spec)
	}
	c := spec.Containers[0]
	sc := c.SecurityContext
	if sc == nil || (sc.Privileged != nil && *sc.Privileged) || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.Capabilities == nil || len(sc.Capabilities.Add) != 0 || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" ||
		sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("container must be unprivileged, drop ALL capabilities, read-only root: %+v", sc)
	}
	if c.Image != "localhost/ckpt:latest" {
		t.Errorf("image %q is not what make image builds (localhost/ckpt:latest)", c.Image)
	}
	args := strings.Join(c.Args, " ")
	for _, want := range []string{"--port=10270", "--container-runtime-endpoint=unix:///run/containerd/containerd.sock",
		"--authentication-token-webhook=true", "--authorization-mode=Webhook", "--anonymous-auth=false", "--root-dir=/var/lib/kubelet"} {
		if !strings.Contains(args, want) {
			t.Errorf("args lack %s: %s", want, args)
		}
	}
	for _, p := range c.Ports {
		if p.ContainerPort == 10250 || p.HostPort == 10250 {
			t.Error("port 10250 is the kubelet's")
		}
	}
	// Host paths the runtime and ckpt must see at the same place.
	hostPaths := map[string]string{}
	for _, v := range spec.Volumes {
		if v.HostPath != nil {
			hostPaths[v.Name] = v.HostPath.Path
		}
	}
	same := map[string]bool{}
	for _, m := range c.VolumeMounts {
		if hp, ok := hostPaths[m.Name]; ok && hp == m.MountPath {
			same[m.MountPath] = true
		}
	}
	for _, p := range []string{"/var/lib/kubelet/checkpoints", "/run/containerd/containerd.sock"} {
		if !same[p] {
			t.Errorf("%s must be mounted from the host at the same path", p)
		}
	}
	// Only those two come from the host.
	if len(hostPaths) != 2 {
		t.Errorf("host paths %v: want only the checkpoints directory and the runtime socket", hostPaths)
	}
}

func TestNamespacePodSecurity(t *testing.T) {
	d := docs(t, "namespace.yaml")["Namespace"]
	if len(d) != 1 {
		t.Fatalf("want one Namespace, got %d", len(d))
	}
	var ns corev1.Namespace
	strict(t, d[0], &ns)
	// hostPath volumes and hostNetwork are admitted by "privileged" only;
	// a stricter enforce level would reject the DaemonSet's pods.
	if ns.Name != "ckpt-system" || ns.Labels["pod-security.kubernetes.io/enforce"] != "privileged" ||
		ns.Labels["pod-security.kubernetes.io/warn"] == "" {
		t.Errorf("namespace labels %v", ns.Labels)
	}
}

func TestKustomizationListsEveryManifest(t *testing.T) {
	b, err := os.ReadFile("kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		Resources []string `json:"resources"`
	}
	if err := yaml.Unmarshal(b, &k); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob("*.yaml")
	listed := map[string]bool{}
	for _, r := range k.Resources {
		listed[r] = true
	}
	for _, f := range files {
		if f != "kustomization.yaml" && !listed[f] {
			t.Errorf("%s is not in kustomization.yaml", f)
		}
	}
}

func TestRBAC(t *testing.T) {
	d := docs(t, "rbac.yaml")
	var delegated bool
	for _, b := range d["ClusterRoleBinding"] {
		var crb rbacv1.ClusterRoleBinding
		strict(t, b, &crb)
		if crb.RoleRef.Name == "system:auth-delegator" && len(crb.Subjects) == 1 &&
			crb.Subjects[0].Kind == "ServiceAccount" && crb.Subjects[0].Name == "ckpt" && crb.Subjects[0].Namespace == "ckpt-system" {
			delegated = true
		}
	}
	if !delegated {
		t.Error("the ckpt ServiceAccount needs system:auth-delegator")
	}
	// Four separate roles, each with exactly its routes' permissions.
	want := map[string][]string{
		"ckpt:checkpoint":      {"nodes/checkpoint:create"},
		"ckpt:archive-reader":  {"nodes/checkpoint:get", "nodes/checkpoint:list"},
		"ckpt:archive-deleter": {"nodes/checkpoint:delete"},
		"ckpt:restore":         {"nodes/restore:create", "nodes/stop:create"},
	}
	got := map[string][]string{}
	for _, b := range d["ClusterRole"] {
		var cr rbacv1.ClusterRole
		strict(t, b, &cr)
		for _, r := range cr.Rules {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					if res == "nodes/proxy" || v == "*" || res == "*" {
						t.Errorf("ClusterRole %s grants %s on %s: too broad", cr.Name, v, res)
					}
					if strings.HasPrefix(res, "nodes/") {
						got[cr.Name] = append(got[cr.Name], res+":"+v)
					}
				}
			}
		}
	}
	for name, perms := range want {
		if strings.Join(got[name], ",") != strings.Join(perms, ",") {
			t.Errorf("ClusterRole %s grants %v, want %v", name, got[name], perms)
		}
	}
	for _, b := range d["ServiceAccount"] {
		var sa corev1.ServiceAccount
		strict(t, b, &sa)
	}
}

func TestKubeconfig(t *testing.T) {
	d := docs(t, "kubeconfig.yaml")["ConfigMap"]
	if len(d) != 1 {
		t.Fatalf("want one ConfigMap, got %d", len(d))
	}
	var cm corev1.ConfigMap
	strict(t, d[0], &cm)
	var kc struct {
		Users []struct {
			User struct {
				TokenFile string `json:"tokenFile"`
			} `json:"user"`
		} `json:"users"`
	}
	if err := yaml.Unmarshal([]byte(cm.Data["kubeconfig"]), &kc); err != nil || len(kc.Users) != 1 ||
		kc.Users[0].User.TokenFile != "/var/run/secrets/kubernetes.io/serviceaccount/token" {
		t.Errorf("kubeconfig must use the ServiceAccount token file: %v %+v", err, kc)
	}
}
