// Package deploy holds the Kubernetes manifests; this test checks that they
// decode strictly into the API types and keep the promises docs/kubernetes.md makes.
package deploy

import (
	"os"
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
	if !spec.HostPID || !spec.HostNetwork || spec.ServiceAccountName != "ckpt" {
		t.Errorf("want hostPID, hostNetwork and the ckpt ServiceAccount: %+v", spec)
	}
	c := spec.Containers[0]
	if c.SecurityContext == nil || c.SecurityContext.Privileged == nil || !*c.SecurityContext.Privileged {
		t.Error("container must be privileged")
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
	var checkpointCreate bool
	for _, b := range d["ClusterRole"] {
		var cr rbacv1.ClusterRole
		strict(t, b, &cr)
		for _, r := range cr.Rules {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					if res == "nodes/checkpoint" && v == "create" {
						checkpointCreate = true
					}
					if res == "nodes/proxy" || v == "*" {
						t.Errorf("ClusterRole %s grants %s on %s: too broad", cr.Name, v, res)
					}
				}
			}
		}
	}
	if !checkpointCreate {
		t.Error("no ClusterRole grants create on nodes/checkpoint")
	}
	for _, b := range d["ServiceAccount"] {
		var sa corev1.ServiceAccount
		strict(t, b, &sa)
	}
	for _, b := range d["Namespace"] {
		var ns corev1.Namespace
		strict(t, b, &ns)
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
