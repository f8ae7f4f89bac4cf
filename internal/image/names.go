package image

import (
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// NormalizeName turns a reference into the form the store keeps:
// "counter" becomes "docker.io/library/counter:latest",
// "localhost/counter" becomes "localhost/counter:latest".
// A reference by digest keeps its digest and gets no tag.
func NormalizeName(ref string) (string, error) {
	if ref == "" || strings.TrimSpace(ref) != ref {
		return "", fmt.Errorf("invalid image name %q", ref)
	}
	// go-containerregistry checks the grammar; the docker.io spelling
	// below is ours (it would say index.docker.io).
	if _, err := name.ParseReference(ref); err != nil {
		return "", fmt.Errorf("invalid image name %q: %w", ref, err)
	}
	repo, digest, hasDigest := strings.Cut(ref, "@")
	tag := ""
	if i := strings.LastIndexByte(repo, ':'); i > strings.LastIndexByte(repo, '/') {
		repo, tag = repo[:i], repo[i+1:]
	}
	domain, rest, ok := strings.Cut(repo, "/")
	if !ok || (!strings.ContainsAny(domain, ".:") && domain != "localhost") {
		domain, rest = "docker.io", repo
	}
	if domain == "index.docker.io" {
		domain = "docker.io"
	}
	if domain == "docker.io" && !strings.Contains(rest, "/") {
		rest = "library/" + rest
	}
	out := domain + "/" + rest
	switch {
	case hasDigest && tag != "":
		return out + ":" + tag + "@" + digest, nil
	case hasDigest:
		return out + "@" + digest, nil
	case tag == "":
		tag = "latest"
	}
	return out + ":" + tag, nil
}

// candidates lists the names a short reference may stand for, best first.
func candidates(ref string) []string {
	out := []string{ref}
	add := func(s string) {
		for _, o := range out {
			if o == s {
				return
			}
		}
		out = append(out, s)
	}
	withTag := ref
	if i := strings.LastIndexByte(ref, ':'); i <= strings.LastIndexByte(ref, '/') && !strings.Contains(ref, "@") {
		withTag = ref + ":latest"
	}
	add(withTag)
	if domain, _, ok := strings.Cut(ref, "/"); !ok || (!strings.ContainsAny(domain, ".:") && domain != "localhost") {
		add("localhost/" + withTag)
	}
	if n, err := NormalizeName(ref); err == nil {
		add(n)
	}
	return out
}
