package embedded

import (
	"strings"
	"testing"
)

// podWith puts lines into goodManifest's pod spec (pod) and container (ctr).
func podWith(pod, ctr string) string {
	m := strings.Replace(goodManifest, "spec:\n", "spec:\n"+pod, 1)
	return m + ctr
}

func TestValidatePodFields(t *testing.T) {
	cases := []struct {
		name, manifest, wantErr string
	}{
		{"full supported pod", podWith(
			"  hostname: web\n  subdomain: s\n  hostNetwork: false\n  securityContext:\n    runAsUser: 1000\n    runAsGroup: 1000\n    runAsNonRoot: true\n    supplementalGroups: [5]\n    fsGroup: 7\n    seccompProfile:\n      type: RuntimeDefault\n  volumes:\n  - name: d\n    emptyDir:\n      medium: Memory\n      sizeLimit: 16Mi\n  - name: h\n    hostPath:\n      path: /tmp\n      type: Directory\n",
			"    ports:\n    - name: http\n      containerPort: 80\n      hostPort: 8080\n      hostIP: 127.0.0.1\n      protocol: TCP\n    volumeMounts:\n    - name: d\n      mountPath: /d\n      subPath: x/y\n    - name: h\n      mountPath: /h\n      readOnly: true\n    resources:\n      limits:\n        cpu: 500m\n        memory: 64Mi\n      requests:\n        cpu: 100m\n    securityContext:\n      allowPrivilegeEscalation: false\n      readOnlyRootFilesystem: true\n      capabilities:\n        add: [NET_ADMIN]\n        drop: [ALL]\n"), ""},
		{"bad hostname", podWith("  hostname: Web_1\n", ""), `spec.hostname "Web_1"`},
		{"bad restart policy", podWith("  restartPolicy: Sometimes\n", ""), `spec.restartPolicy "Sometimes": must be Always, OnFailure or Never`},
		{"port out of range", podWith("", "    ports:\n    - containerPort: 70000\n"), "spec.containers[0].ports[0].containerPort 70000: must be between 1 and 65535"},
		{"hostPort out of range", podWith("", "    ports:\n    - containerPort: 80\n      hostPort: -1\n"), "spec.containers[0].ports[0].hostPort -1"},
		{"duplicate hostPort", podWith("", "    ports:\n    - containerPort: 80\n      hostPort: 8080\n    - containerPort: 81\n      hostPort: 8080\n"), "spec.containers[0].ports[1].hostPort 8080/TCP: already used by spec.containers[0].ports[0]"},
		{"bad protocol", podWith("", "    ports:\n    - containerPort: 80\n      protocol: SCTP\n"), `spec.containers[0].ports[0].protocol "SCTP"`},
		{"bad hostIP", podWith("", "    ports:\n    - containerPort: 80\n      hostPort: 80\n      hostIP: nope\n"), `hostIP "nope": not an IP address`},
		{"hostNetwork port mismatch", podWith("  hostNetwork: true\n", "    ports:\n    - containerPort: 80\n      hostPort: 81\n"), "must equal containerPort 80 with spec.hostNetwork"},
		{"mount of unknown volume", podWith("", "    volumeMounts:\n    - name: nope\n      mountPath: /x\n"), `spec.containers[0].volumeMounts[0].name "nope": not found in spec.volumes`},
		{"relative mountPath", podWith("  volumes:\n  - name: d\n    emptyDir: {}\n", "    volumeMounts:\n    - name: d\n      mountPath: x\n"), `mountPath "x": must be an absolute path`},
		{"subPath escapes", podWith("  volumes:\n  - name: d\n    emptyDir: {}\n", "    volumeMounts:\n    - name: d\n      mountPath: /x\n      subPath: a/../../b\n"), `subPath "a/../../b": must not contain '..'`},
		{"absolute subPath", podWith("  volumes:\n  - name: d\n    emptyDir: {}\n", "    volumeMounts:\n    - name: d\n      mountPath: /x\n      subPath: /etc\n"), "must be a relative path"},
		{"duplicate volume", podWith("  volumes:\n  - name: d\n    emptyDir: {}\n  - name: d\n    emptyDir: {}\n", ""), `spec.volumes[1].name "d": duplicate volume name`},
		{"volume without type", podWith("  volumes:\n  - name: d\n", ""), "spec.volumes[0]: a volume type is required"},
		{"two volume types", podWith("  volumes:\n  - name: d\n    emptyDir: {}\n    hostPath:\n      path: /tmp\n", ""), "may not specify more than one volume type"},
		{"hostPath relative", podWith("  volumes:\n  - name: h\n    hostPath:\n      path: tmp\n", ""), `spec.volumes[0].hostPath.path "tmp": must be an absolute path`},
		{"hostPath unclean", podWith("  volumes:\n  - name: h\n    hostPath:\n      path: /tmp/../etc\n", ""), "must be a clean path"},
		{"hostPath bad type", podWith("  volumes:\n  - name: h\n    hostPath:\n      path: /tmp\n      type: Pipe\n", ""), `spec.volumes[0].hostPath.type "Pipe": unknown type`},
		{"emptyDir medium", podWith("  volumes:\n  - name: d\n    emptyDir:\n      medium: HugePages\n", ""), `spec.volumes[0].emptyDir.medium "HugePages"`},
		{"request over limit", podWith("", "    resources:\n      limits:\n        cpu: 100m\n      requests:\n        cpu: 200m\n"), "spec.containers[0].resources.requests.cpu 200m: must be less than or equal to cpu limit 100m"},
		{"negative memory", podWith("", "    resources:\n      limits:\n        memory: -1Mi\n"), "spec.containers[0].resources.limits.memory -1Mi: must be greater than or equal to 0"},
		{"tiny memory", podWith("", "    resources:\n      limits:\n        memory: 1Mi\n"), "ckpt needs at least 6Mi"},
		{"unsupported resource", podWith("", "    resources:\n      limits:\n        nvidia.com/gpu: 1\n"), "unsupported field spec.containers[].resources.limits.nvidia.com/gpu"},
		{"unknown capability", podWith("", "    securityContext:\n      capabilities:\n        add: [FLY]\n"), `spec.containers[0].securityContext.capabilities.add[0] "FLY": unknown capability`},
		{"privileged without escalation", podWith("", "    securityContext:\n      privileged: true\n      allowPrivilegeEscalation: false\n"), "cannot be false when privileged is true"},
		{"negative runAsUser", podWith("  securityContext:\n    runAsUser: -1\n", ""), "spec.securityContext.runAsUser -1"},
		{"seccomp localhost", podWith("", "    securityContext:\n      seccompProfile:\n        type: Localhost\n"), "spec.containers[0].securityContext.seccompProfile.type Localhost is not supported"},

		{"hostPID", podWith("  hostPID: true\n", ""), "unsupported field spec.hostPID"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseManifest([]byte(c.manifest))
			if c.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, c.wantErr)
			}
		})
	}
}

func TestValidateProbes(t *testing.T) {
	cases := []struct{ name, ctr, wantErr string }{
		{"tcp", "    livenessProbe:\n      tcpSocket:\n        port: 80\n      periodSeconds: 2\n", ""},
		{"http", "    readinessProbe:\n      httpGet:\n        path: /healthz\n        port: 8080\n        httpHeaders:\n        - name: X\n          value: \"y\"\n", ""},
		{"exec", "    livenessProbe:\n      exec:\n        command: [\"true\"]\n", ""},
		{"no handler", "    livenessProbe:\n      periodSeconds: 2\n", "spec.containers[0].livenessProbe: must have exactly one of exec, httpGet and tcpSocket"},
		{"two handlers", "    livenessProbe:\n      exec:\n        command: [x]\n      tcpSocket:\n        port: 1\n", "must have exactly one"},
		{"named port", "    livenessProbe:\n      tcpSocket:\n        port: http\n", `spec.containers[0].livenessProbe.tcpSocket.port "http": named ports are not supported`},
		{"bad port", "    readinessProbe:\n      httpGet:\n        port: 0\n", "httpGet.port 0: must be between 1 and 65535"},
		{"relative path", "    readinessProbe:\n      httpGet:\n        path: x\n        port: 1\n", `httpGet.path "x": must start with /`},
		{"liveness success threshold", "    livenessProbe:\n      exec:\n        command: [x]\n      successThreshold: 2\n", "must be 1 for a liveness probe"},
		{"negative period", "    livenessProbe:\n      exec:\n        command: [x]\n      periodSeconds: -1\n", "periodSeconds -1"},
		{"grpc", "    livenessProbe:\n      grpc:\n        port: 1\n", "unsupported field spec.containers[].livenessProbe.grpc.port"},
		{"startup", "    startupProbe:\n      exec:\n        command: [x]\n", "unsupported field spec.containers[].startupProbe.exec.command"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseManifest([]byte(podWith("", c.ctr)))
			if c.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("error %v, want %q", err, c.wantErr)
			}
		})
	}
	// Init containers may not have probes, as in Kubernetes.
	m := strings.Replace(goodManifest, "spec:\n", "spec:\n  initContainers:\n  - name: i\n    image: x\n    livenessProbe:\n      exec:\n        command: [x]\n", 1)
	if _, err := ParseManifest([]byte(m)); err == nil || !strings.Contains(err.Error(), "spec.initContainers[].livenessProbe") {
		t.Errorf("probe on an init container: %v", err)
	}
}
