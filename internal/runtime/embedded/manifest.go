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
	"apiVersion":                                 true,
	"kind":                                       true,
	"metadata.name":                              true,
	"metadata.namespace":                         true,
	"metadata.labels":                            true,
	"metadata.annotations":                       true,
	"spec.restartPolicy":                         true,
	"spec.containers[].name":                     true,
	"spec.containers[].image":                    true,
	"spec.containers[].imagePullPolicy":          true,
	"spec.containers[].command":                  true,
	"spec.containers[].args":                     true,
	"spec.containers[].env[].name":               true,
	"spec.containers[].env[].value":              true,
	"spec.containers[].workingDir":               true,
	"spec.containers[].terminationMessagePath":   true,
	"spec.containers[].terminationMessagePolicy": true,
}

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
	if rp := pod.Spec.RestartPolicy; rp != "" && rp != corev1.RestartPolicyNever {
		return fmt.Errorf("spec.restartPolicy %q is not supported: ckpt does not restart containers (use Never or leave it out)", rp)
	}
	if len(pod.Spec.Containers) == 0 {
		return fmt.Errorf("spec.containers is empty")
	}
	seen := map[string]bool{}
	for i, c := range pod.Spec.Containers {
		if c.Name == "" {
			return fmt.Errorf("spec.containers[%d].name is required", i)
		}
		if errs := validation.IsDNS1123Label(c.Name); len(errs) > 0 {
			return fmt.Errorf("spec.containers[%d].name %q: %s", i, c.Name, strings.Join(errs, "; "))
		}
		if seen[c.Name] {
			return fmt.Errorf("duplicate container name %q in spec.containers", c.Name)
		}
		seen[c.Name] = true
		if c.Image == "" {
			return fmt.Errorf("spec.containers[%d].image is required", i)
		}
		for _, e := range c.Env {
			if errs := validation.IsEnvVarName(e.Name); len(errs) > 0 {
				return fmt.Errorf("spec.containers[%d].env %q: %s", i, e.Name, strings.Join(errs, "; "))
			}
		}
	}
	return nil
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
