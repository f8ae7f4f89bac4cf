package embedded

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"
)

// maxManifestBytes bounds a manifest file; the kubelet's static pods are tiny.
const maxManifestBytes = 1 << 20

// supportedFields lists the manifest fields ckpt understands, as JSON paths
// with "[]" for list elements. Anything else set in a manifest is refused.
var supportedFields = map[string]bool{
	"apiVersion":           true,
	"kind":                 true,
	"metadata.name":        true,
	"metadata.namespace":   true,
	"metadata.uid":         true,
	"metadata.labels":      true,
	"metadata.annotations": true,
	// Written by encoding/json for a Pod read back from an archive's pod.json.
	"metadata.creationTimestamp": true,
	"status":                     true,

	"spec.restartPolicy":                                         true,
	"spec.hostNetwork":                                           true,
	"spec.shareProcessNamespace":                                 true,
	"spec.hostname":                                              true,
	"spec.subdomain":                                             true,
	"spec.terminationGracePeriodSeconds":                         true,
	"spec.securityContext.runAsUser":                             true,
	"spec.securityContext.runAsGroup":                            true,
	"spec.securityContext.runAsNonRoot":                          true,
	"spec.securityContext.supplementalGroups":                    true,
	"spec.securityContext.fsGroup":                               true,
	"spec.securityContext.seccompProfile.type":                   true,
	"spec.volumes[].name":                                        true,
	"spec.volumes[].emptyDir.medium":                             true,
	"spec.volumes[].emptyDir.sizeLimit":                          true,
	"spec.volumes[].hostPath.path":                               true,
	"spec.volumes[].hostPath.type":                               true,
	"spec.containers[].name":                                     true,
	"spec.containers[].image":                                    true,
	"spec.containers[].imagePullPolicy":                          true,
	"spec.containers[].command":                                  true,
	"spec.containers[].args":                                     true,
	"spec.containers[].env[].name":                               true,
	"spec.containers[].env[].value":                              true,
	"spec.containers[].workingDir":                               true,
	"spec.containers[].terminationMessagePath":                   true,
	"spec.containers[].terminationMessagePolicy":                 true,
	"spec.containers[].ports[].name":                             true,
	"spec.containers[].ports[].containerPort":                    true,
	"spec.containers[].ports[].hostPort":                         true,
	"spec.containers[].ports[].hostIP":                           true,
	"spec.containers[].ports[].protocol":                         true,
	"spec.containers[].volumeMounts[].name":                      true,
	"spec.containers[].volumeMounts[].mountPath":                 true,
	"spec.containers[].volumeMounts[].readOnly":                  true,
	"spec.containers[].volumeMounts[].subPath":                   true,
	"spec.containers[].resources.limits.cpu":                     true,
	"spec.containers[].resources.limits.memory":                  true,
	"spec.containers[].resources.requests.cpu":                   true,
	"spec.containers[].resources.requests.memory":                true,
	"spec.containers[].securityContext.runAsUser":                true,
	"spec.containers[].securityContext.runAsGroup":               true,
	"spec.containers[].securityContext.runAsNonRoot":             true,
	"spec.containers[].securityContext.privileged":               true,
	"spec.containers[].securityContext.capabilities.add":         true,
	"spec.containers[].securityContext.capabilities.drop":        true,
	"spec.containers[].securityContext.allowPrivilegeEscalation": true,
	"spec.containers[].securityContext.readOnlyRootFilesystem":   true,
	"spec.containers[].securityContext.seccompProfile.type":      true,
}

func init() {
	// Init containers take the fields of containers but ports (they serve
	// nothing while the pod starts).
	for k := range supportedFields {
		if rest, ok := strings.CutPrefix(k, "spec.containers[]."); ok && !strings.HasPrefix(rest, "ports") && !strings.Contains(rest, "Probe.") {
			supportedFields["spec.initContainers[]."+rest] = true
		}
	}
}

func init() {
	for _, probe := range []string{"livenessProbe", "readinessProbe"} {
		for _, f := range []string{"exec.command", "httpGet.path", "httpGet.port", "httpGet.httpHeaders[].name", "httpGet.httpHeaders[].value",
			"tcpSocket.port", "initialDelaySeconds", "periodSeconds", "timeoutSeconds", "failureThreshold", "successThreshold"} {
			supportedFields["spec.containers[]."+probe+"."+f] = true
		}
	}
}

// staticPodVolumeKinds are volume kinds that need the API server; the
// kubelet refuses them for static pods, and so does ckpt.
var staticPodVolumeKinds = []string{"configMap", "secret", "projected", "persistentVolumeClaim", "downwardAPI", "serviceAccountToken"}

// ParseManifest reads one Pod manifest (YAML or JSON) and validates it.
func ParseManifest(data []byte) (*corev1.Pod, error) {
	if len(data) > maxManifestBytes {
		return nil, fmt.Errorf("manifest is larger than %d bytes", maxManifestBytes)
	}
	var raw map[string]any
	if err := yaml.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("invalid YAML: %w", err)
	}
	if raw == nil {
		return nil, fmt.Errorf("empty manifest")
	}
	if err := refuseAPIVolumes(raw); err != nil {
		return nil, err
	}
	if unsupported := unsupportedFields("", raw); len(unsupported) > 0 {
		return nil, fmt.Errorf("unsupported field %s (ckpt supports %s)", strings.Join(unsupported, ", "), supportedList())
	}
	var pod corev1.Pod
	if err := yaml.UnmarshalStrict(data, &pod); err != nil {
		return nil, fmt.Errorf("invalid Pod: %w", err)
	}
	if err := validatePod(&pod); err != nil {
		return nil, err
	}
	// The API server's defaulting, which the kubelet applies to static
	// pods too: a pod without a restart policy restarts Always.
	if pod.Spec.RestartPolicy == "" {
		pod.Spec.RestartPolicy = corev1.RestartPolicyAlways
	}
	return &pod, nil
}

func validatePod(pod *corev1.Pod) error {
	if pod.Kind != "" && pod.Kind != "Pod" {
		return fmt.Errorf("kind %q is not Pod", pod.Kind)
	}
	if pod.APIVersion != "" && pod.APIVersion != "v1" {
		return fmt.Errorf("apiVersion %q is not v1", pod.APIVersion)
	}
	if pod.Namespace == "" {
		pod.Namespace = "default"
	}
	if errs := validation.IsDNS1123Label(pod.Namespace); len(errs) > 0 {
		return fmt.Errorf("metadata.namespace %q: %s", pod.Namespace, strings.Join(errs, "; "))
	}
	if pod.Name == "" {
		return fmt.Errorf("metadata.name is required")
	}
	if errs := validation.IsDNS1123Subdomain(pod.Name); len(errs) > 0 {
		return fmt.Errorf("metadata.name %q: %s", pod.Name, strings.Join(errs, "; "))
	}
	return validatePodSpec(&pod.Spec)
}

// unsupportedFields walks a decoded document and returns the paths of set
// fields that are not in supportedFields.
func unsupportedFields(prefix string, v any) []string {
	if supportedFields[prefix] {
		return nil
	}
	switch t := v.(type) {
	case map[string]any:
		var out []string
		for k, child := range t {
			p := k
			if prefix != "" {
				p = prefix + "." + k
			}
			out = append(out, unsupportedFields(p, child)...)
		}
		sort.Strings(out)
		return out
	case []any:
		var out []string
		for _, child := range t {
			out = append(out, unsupportedFields(prefix+"[]", child)...)
		}
		return dedupe(out)
	case nil:
		return nil
	default:
		if prefix == "" {
			return nil
		}
		return []string{prefix}
	}
}

// refuseAPIVolumes names the volume kinds a static pod cannot use.
func refuseAPIVolumes(raw map[string]any) error {
	spec, _ := raw["spec"].(map[string]any)
	vols, _ := spec["volumes"].([]any)
	for i, v := range vols {
		m, _ := v.(map[string]any)
		for _, kind := range staticPodVolumeKinds {
			if _, ok := m[kind]; ok {
				return fmt.Errorf("spec.volumes[%d].%s: a static pod cannot use %s volumes (they need the API server; the kubelet refuses them for static pods too)", i, kind, kind)
			}
		}
	}
	return nil
}

func dedupe(in []string) []string {
	sort.Strings(in)
	out := in[:0]
	for i, s := range in {
		if i == 0 || s != in[i-1] {
			out = append(out, s)
		}
	}
	return out
}

func supportedList() string {
	var names []string
	for k := range supportedFields {
		names = append(names, k)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// ManifestError records a manifest that could not be used.
type ManifestError struct {
	File string
	Err  error
}

func (e ManifestError) Error() string { return fmt.Sprintf("pod manifest %s: %v", e.File, e.Err) }

// LoadManifests reads every *.yaml, *.yml and *.json file in dir. Bad files
// are reported in errs and skipped; the good pods are returned.
func LoadManifests(dir string) (pods []*corev1.Pod, errs []ManifestError) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, []ManifestError{{File: dir, Err: err}}
	}
	byName := map[string]string{}
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") || e.IsDir() {
			continue
		}
		switch filepath.Ext(name) {
		case ".yaml", ".yml", ".json":
		default:
			continue
		}
		path := filepath.Join(dir, name)
		data, err := readBounded(path, maxManifestBytes)
		if err != nil {
			errs = append(errs, ManifestError{File: path, Err: err})
			continue
		}
		pod, err := ParseManifest(data)
		if err != nil {
			errs = append(errs, ManifestError{File: path, Err: err})
			continue
		}
		key := pod.Namespace + "/" + pod.Name
		if other, dup := byName[key]; dup {
			errs = append(errs, ManifestError{File: path, Err: fmt.Errorf("pod %s is already defined in %s", key, other)})
			continue
		}
		byName[key] = path
		pods = append(pods, pod)
	}
	return pods, errs
}

func readBounded(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("not a regular file")
	}
	if st.Size() > limit {
		return nil, fmt.Errorf("file is larger than %d bytes", limit)
	}
	data := make([]byte, st.Size())
	_, err = io.ReadFull(f, data)
	return data, err
}
