package ckptimage

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/ckpt-dev/ckpt/internal/image"
)

// Progress reports bytes moved of a total.
type Progress func(done, total int64)

// RemoteOptions are how a registry is reached.
type RemoteOptions struct {
	// Keychain finds credentials; nil = authn.DefaultKeychain
	// (~/.docker/config.json, $DOCKER_CONFIG).
	Keychain authn.Keychain
	// Progress, if set, sees the layer's bytes as they move.
	Progress Progress
	// Transport, if set, replaces the default HTTP transport.
	Transport http.RoundTripper
}

// ParseReference parses ref; plain HTTP is allowed only for a registry on
// a loopback address (127.0.0.0/8, ::1, localhost).
func ParseReference(ref string) (name.Reference, error) {
	if _, err := image.NormalizeName(ref); err != nil {
		return nil, err
	}
	var opts []name.Option
	r, err := name.ParseReference(ref)
	if err != nil {
		return nil, fmt.Errorf("invalid image reference %q: %w", ref, err)
	}
	if IsLoopback(r.Context().RegistryStr()) {
		opts = append(opts, name.Insecure)
	}
	return name.ParseReference(ref, opts...)
}

// IsLoopback says whether a registry host[:port] is on this machine.
func IsLoopback(registry string) bool {
	host := registry
	if h, _, err := net.SplitHostPort(registry); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (o RemoteOptions) remote(ctx context.Context) []remote.Option {
	kc := o.Keychain
	if kc == nil {
		kc = authn.DefaultKeychain
	}
	rt := o.Transport
	if rt == nil {
		rt = remote.DefaultTransport
	}
	return []remote.Option{remote.WithContext(ctx), remote.WithAuthFromKeychain(kc), remote.WithTransport(httpsOnly{rt})}
}

// httpsOnly refuses plain HTTP to anything but a loopback registry
// (go-containerregistry falls back to HTTP for private addresses too).
type httpsOnly struct{ rt http.RoundTripper }

func (h httpsOnly) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Scheme != "https" && !IsLoopback(r.URL.Host) {
		return nil, fmt.Errorf("refusing plain HTTP to %s: only a loopback registry may be reached without TLS", r.URL.Host)
	}
	return h.rt.RoundTrip(r)
}

// Push sends the checkpoint image ref names in the store to the registry
// (to dest, or to ref itself when dest is empty).
func (s *Store) Push(ctx context.Context, ref, dest string, o RemoteOptions) (string, error) {
	img, e, err := s.Resolve(ref)
	if err != nil {
		return "", err
	}
	if dest == "" {
		dest = e.Name
	}
	return PushImage(ctx, img, dest, o)
}

// PushImage sends img to the registry as dest and returns the pushed
// reference by digest.
func PushImage(ctx context.Context, img v1.Image, dest string, o RemoteOptions) (string, error) {
	r, err := ParseReference(dest)
	if err != nil {
		return "", err
	}
	opts := o.remote(ctx)
	var done chan struct{}
	if o.Progress != nil {
		ch := make(chan v1.Update, 16)
		done = make(chan struct{})
		go func() {
			defer close(done)
			for u := range ch {
				o.Progress(u.Complete, u.Total)
			}
		}()
		opts = append(opts, remote.WithProgress(ch))
	}
	err = remote.Write(r, img, opts...)
	if done != nil {
		<-done
	}
	if err != nil {
		return "", fmt.Errorf("push %s: %w", dest, explain(err))
	}
	d, err := img.Digest()
	if err != nil {
		return "", err
	}
	return r.Context().Digest(d.String()).String(), nil
}

// Pull fetches the checkpoint image ref from its registry into the store
// under ref's name. It reads the manifest first and refuses an image that
// is not a checkpoint before any layer moves; the layer goes through a
// temporary file whose size and digest are checked, so a broken download
// leaves nothing behind.
func (s *Store) Pull(ctx context.Context, ref string, o RemoteOptions) (Entry, error) {
	r, err := ParseReference(ref)
	if err != nil {
		return Entry{}, err
	}
	nameStr, err := image.NormalizeName(ref)
	if err != nil {
		return Entry{}, err
	}
	desc, err := remote.Get(r, o.remote(ctx)...)
	if err != nil {
		return Entry{}, fmt.Errorf("pull %s: %w", ref, explain(err))
	}
	var img v1.Image
	switch {
	case desc.MediaType.IsImage():
		img, err = desc.Image()
	case desc.MediaType.IsIndex():
		img, err = pickFromIndex(desc)
	default:
		return Entry{}, &NotCheckpointError{What: ref, Reason: fmt.Sprintf("image: it is a %s", desc.MediaType)}
	}
	if err != nil {
		return Entry{}, fmt.Errorf("pull %s: %w", ref, explain(err))
	}
	if err := checkImage(img, ref); err != nil {
		return Entry{}, err
	}
	m, err := img.Manifest()
	if err != nil {
		return Entry{}, fmt.Errorf("pull %s: %w", ref, explain(err))
	}
	// The download runs outside the lock (it is long; a broken one leaves
	// only its own temporary file, which it removes); naming it is quick.
	ld := m.Layers[0]
	l, err := img.LayerByDigest(ld.Digest)
	if err == nil {
		err = s.fetchLayer(l, ld, o.Progress)
	}
	if err != nil {
		return Entry{}, fmt.Errorf("pull %s: %w", ref, explain(err))
	}
	unlock, err := s.lock()
	if err != nil {
		return Entry{}, fmt.Errorf("pull %s: %w", ref, err)
	}
	defer unlock()
	// If a gc in between took the unnamed blob, the layout fetches it again.
	err = s.lp.ReplaceImage(img, matchName(nameStr), layoutNameOption(nameStr))
	s.gc()
	if err != nil {
		return Entry{}, fmt.Errorf("pull %s: %w", ref, explain(err))
	}
	local, err := s.lp.Image(mustDigest(img))
	if err != nil {
		return Entry{}, err
	}
	return entryOf(nameStr, local)
}

func (s *Store) fetchLayer(l v1.Layer, d v1.Descriptor, progress Progress) error {
	rc, err := l.Compressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	var seen int64
	var p func(int64)
	if progress != nil {
		p = func(n int64) {
			seen += n
			progress(seen, d.Size)
		}
	}
	return s.writeBlob(d.Digest, d.Size, rc, p)
}

// pickFromIndex takes the checkpoint image for this platform from an index.
func pickFromIndex(desc *remote.Descriptor) (v1.Image, error) {
	ii, err := desc.ImageIndex()
	if err != nil {
		return nil, err
	}
	im, err := ii.IndexManifest()
	if err != nil {
		return nil, err
	}
	for _, d := range im.Manifests {
		if d.MediaType.IsImage() && (d.Platform == nil || d.Platform.OS == "linux" && d.Platform.Architecture == goArch("")) {
			return ii.Image(d.Digest)
		}
	}
	return nil, &NotCheckpointError{What: "the image", Reason: "image: its index has no image for linux/" + goArch("")}
}

func mustDigest(img v1.Image) v1.Hash {
	d, _ := img.Digest()
	return d
}

// explain adds what to do to the errors registries answer.
func explain(err error) error {
	var te *transport.Error
	if errors.As(err, &te) {
		switch te.StatusCode {
		case http.StatusUnauthorized, http.StatusForbidden:
			return fmt.Errorf("%w (log in with `docker login`, which writes ~/.docker/config.json)", err)
		case http.StatusNotFound:
			return fmt.Errorf("%w: %w", ErrNotFound, err)
		case http.StatusMethodNotAllowed:
			return fmt.Errorf("%w (the registry refuses writes: is it read-only?)", err)
		}
		for _, d := range te.Errors {
			if d.Code == transport.ManifestUnknownErrorCode || d.Code == transport.NameUnknownErrorCode {
				return fmt.Errorf("%w: %w", ErrNotFound, err)
			}
		}
	}
	return err
}
