package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/ckpt-dev/ckpt/pkg/api"
)

// Ref names a container: NAMESPACE/POD/CONTAINER.
type Ref struct {
	Namespace, Pod, Container string
}

func (r Ref) String() string { return r.Namespace + "/" + r.Pod + "/" + r.Container }

// ParseRef parses NAMESPACE/POD/CONTAINER. Names are validated by the
// server; here only the shape is checked, and "." or ".." segments that a
// URL would resolve into another path are refused.
func ParseRef(s string) (Ref, error) {
	parts := strings.Split(s, "/")
	if len(parts) != 3 {
		return Ref{}, fmt.Errorf("%q: want NAMESPACE/POD/CONTAINER", s)
	}
	for _, p := range parts {
		if p == "" || p == "." || p == ".." {
			return Ref{}, fmt.Errorf("%q: want NAMESPACE/POD/CONTAINER", s)
		}
	}
	return Ref{parts[0], parts[1], parts[2]}, nil
}

// The API's bodies (pkg/api), named here for the client's users.
type (
	Archive     = api.Archive
	Restored    = api.Restored
	RestoredPod = api.RestoredPod
)

// Progress is told how many bytes moved so far and the total (-1 when
// unknown). It is called from the goroutine doing the transfer.
type Progress func(done, total int64)

// CheckpointOptions are the options of a checkpoint.
type CheckpointOptions struct {
	// Timeout is how long the server may take, sent in whole seconds
	// (rounded up); 0 is the server's default. The client waits a minute
	// longer than Timeout for the answer.
	Timeout time.Duration
	// TCPEstablished checkpoints established TCP connections
	// (ckpt only: ?tcpEstablished=true).
	TCPEstablished bool
}

func (o CheckpointOptions) query() (url.Values, error) {
	q := url.Values{}
	if o.Timeout < 0 {
		return nil, fmt.Errorf("timeout %s: must not be negative", o.Timeout)
	}
	if o.Timeout > 0 {
		q.Set("timeout", strconv.FormatInt(int64(math.Ceil(o.Timeout.Seconds())), 10))
	}
	if o.TCPEstablished {
		q.Set("tcpEstablished", "true")
	}
	return q, nil
}

// maxJSONBody bounds a JSON answer.
const maxJSONBody = 16 << 20

func decode(op string, resp *http.Response, v any) error {
	defer resp.Body.Close()
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxJSONBody)).Decode(v); err != nil {
		return fmt.Errorf("%s: read answer: %w", op, err)
	}
	return nil
}

// Checkpoint checkpoints one container (POST /checkpoint/NS/POD/CTR) and
// returns the path of the archive on the server's node.
func (c *Client) Checkpoint(ctx context.Context, ref Ref, o CheckpointOptions) (string, error) {
	return c.checkpoint(ctx, "checkpoint "+ref.String(), []string{"checkpoint", ref.Namespace, ref.Pod, ref.Container}, o)
}

// CheckpointPod checkpoints every container of a pod in one consistent
// cut (POST /checkpoint/NS/POD) and returns the archive's path.
func (c *Client) CheckpointPod(ctx context.Context, namespace, pod string, o CheckpointOptions) (string, error) {
	return c.checkpoint(ctx, "checkpoint pod "+namespace+"/"+pod, []string{"checkpoint", namespace, pod}, o)
}

func (c *Client) checkpoint(ctx context.Context, op string, segs []string, o CheckpointOptions) (string, error) {
	q, err := o.query()
	if err != nil {
		return "", fmt.Errorf("%s: %w", op, err)
	}
	if o.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.Timeout+time.Minute)
		defer cancel()
	}
	resp, err := c.call(ctx, op, request{method: http.MethodPost, segments: segs, query: q}, http.StatusOK)
	if err != nil {
		return "", err
	}
	var out api.CheckpointResponse
	if err := decode(op, resp, &out); err != nil {
		return "", err
	}
	if len(out.Items) == 0 {
		return "", fmt.Errorf("%s: the server answered no archive path", op)
	}
	return out.Items[0], nil
}

// Archives lists the published archives (GET /checkpoints).
func (c *Client) Archives(ctx context.Context) ([]Archive, error) {
	const op = "list archives"
	resp, err := c.call(ctx, op, request{method: http.MethodGet, segments: []string{"checkpoints"}}, http.StatusOK)
	if err != nil {
		return nil, err
	}
	var out api.ArchiveList
	return out.Items, decode(op, resp, &out)
}

// Download is an archive being downloaded. Close it.
type Download struct {
	io.ReadCloser
	Name        string
	ContentType string
	// Size is the number of bytes Body will yield (-1 unknown); Total is
	// the archive's whole size (-1 unknown); they differ for a range.
	Size, Total int64
}

// GetOptions are the options of a download.
type GetOptions struct {
	// Offset asks for the archive from this byte on (a Range request), to
	// resume a broken download.
	Offset int64
	// Progress, if set, is told as the body is read (counting from Offset).
	Progress Progress
}

// Get downloads an archive (GET /checkpoints/NAME), streaming.
func (c *Client) Get(ctx context.Context, name string, o GetOptions) (*Download, error) {
	op := "download " + name
	r := request{method: http.MethodGet, segments: []string{"checkpoints", name}}
	if o.Offset < 0 {
		return nil, fmt.Errorf("%s: negative offset", op)
	}
	if o.Offset > 0 {
		r.header = http.Header{"Range": {fmt.Sprintf("bytes=%d-", o.Offset)}}
	}
	resp, err := c.call(ctx, op, r, http.StatusOK, http.StatusPartialContent)
	if err != nil {
		return nil, err
	}
	d := &Download{ReadCloser: resp.Body, Name: name, ContentType: resp.Header.Get("Content-Type"),
		Size: resp.ContentLength, Total: resp.ContentLength}
	if o.Offset > 0 {
		if resp.StatusCode != http.StatusPartialContent {
			resp.Body.Close()
			return nil, fmt.Errorf("%s: the server ignored the range request", op)
		}
		d.Total = totalFromContentRange(resp.Header.Get("Content-Range"))
	}
	if o.Progress != nil {
		d.ReadCloser = &progressReader{ReadCloser: resp.Body, done: o.Offset, total: d.Total, fn: o.Progress}
	}
	return d, nil
}

// totalFromContentRange reads the total of "bytes a-b/total" (-1 if none).
func totalFromContentRange(v string) int64 {
	_, total, ok := strings.Cut(v, "/")
	if !ok {
		return -1
	}
	n, err := strconv.ParseInt(total, 10, 64)
	if err != nil {
		return -1
	}
	return n
}

// Delete deletes an archive (DELETE /checkpoints/NAME).
func (c *Client) Delete(ctx context.Context, name string) error {
	resp, err := c.call(ctx, "delete "+name, request{method: http.MethodDelete, segments: []string{"checkpoints", name}}, http.StatusOK)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// RestoreSource is what to restore from: exactly one of Archive, Body and
// Image.
type RestoreSource struct {
	Archive string    // an archive the server holds (?archive=NAME)
	Image   string    // an OCI checkpoint image the server can pull (?image=REF)
	Body    io.Reader // an archive streamed to the server
	Size    int64     // of Body, or -1 (or 0) when unknown
	// Lazy restores with memory pages faulted in on demand (?lazy=true).
	Lazy bool
	// Progress, if set, is told as Body is sent.
	Progress Progress
}

func (s RestoreSource) request(segs []string) (request, error) {
	n := 0
	for _, set := range []bool{s.Archive != "", s.Image != "", s.Body != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		return request{}, errors.New("give exactly one of an archive name, an image or a body")
	}
	r := request{method: http.MethodPost, segments: segs, query: url.Values{}, size: -1}
	switch {
	case s.Archive != "":
		r.query.Set("archive", s.Archive)
	case s.Image != "":
		r.query.Set("image", s.Image)
	default:
		r.body = s.Body
		if s.Size > 0 {
			r.size = s.Size
		}
		if s.Progress != nil {
			r.body = &progressReader{ReadCloser: io.NopCloser(s.Body), total: r.size, fn: s.Progress}
		}
		r.header = http.Header{"Content-Type": {"application/x-tar"}}
	}
	if s.Lazy {
		r.query.Set("lazy", "true")
	}
	return r, nil
}

// keep in a restore path keeps the name the archive recorded.
const keep = "_"

func orKeep(s string) string {
	if s == "" {
		return keep
	}
	return s
}

// Restore restores a container (POST /restore/NS/POD/CTR). Empty fields of
// target keep the names the archive recorded.
func (c *Client) Restore(ctx context.Context, target Ref, src RestoreSource) (Restored, error) {
	op := "restore " + describeTarget(target)
	var out Restored
	r, err := src.request([]string{"restore", orKeep(target.Namespace), orKeep(target.Pod), orKeep(target.Container)})
	if err != nil {
		return out, fmt.Errorf("%s: %w", op, err)
	}
	resp, err := c.call(ctx, op, r, http.StatusCreated, http.StatusOK)
	if err != nil {
		return out, err
	}
	return out, decode(op, resp, &out)
}

// RestorePod restores a whole pod into a new sandbox (POST /restore/NS/POD).
// Empty names keep the archive's.
func (c *Client) RestorePod(ctx context.Context, namespace, pod string, src RestoreSource) (RestoredPod, error) {
	op := "restore pod " + orKeep(namespace) + "/" + orKeep(pod)
	var out RestoredPod
	r, err := src.request([]string{"restore", orKeep(namespace), orKeep(pod)})
	if err != nil {
		return out, fmt.Errorf("%s: %w", op, err)
	}
	resp, err := c.call(ctx, op, r, http.StatusCreated, http.StatusOK)
	if err != nil {
		return out, err
	}
	return out, decode(op, resp, &out)
}

func describeTarget(t Ref) string {
	if t == (Ref{}) {
		return "(names from the archive)"
	}
	return orKeep(t.Namespace) + "/" + orKeep(t.Pod) + "/" + orKeep(t.Container)
}

// Stop stops a container (POST /stop/NS/POD/CTR).
func (c *Client) Stop(ctx context.Context, ref Ref) error {
	resp, err := c.call(ctx, "stop "+ref.String(), request{method: http.MethodPost, segments: []string{"stop", ref.Namespace, ref.Pod, ref.Container}}, http.StatusOK)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// Healthz returns nil when the server answers GET /healthz with 200.
func (c *Client) Healthz(ctx context.Context) error {
	resp, err := c.call(ctx, "healthz", request{method: http.MethodGet, segments: []string{"healthz"}}, http.StatusOK)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// maxMetrics bounds the metrics text.
const maxMetrics = 64 << 20

// Metrics returns GET /metrics, the Prometheus text exposition.
func (c *Client) Metrics(ctx context.Context) ([]byte, error) {
	resp, err := c.call(ctx, "metrics", request{method: http.MethodGet, segments: []string{"metrics"}}, http.StatusOK)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxMetrics))
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	return b, nil
}

// progressReader counts what is read and tells fn.
type progressReader struct {
	io.ReadCloser
	done, total int64
	fn          Progress
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.ReadCloser.Read(b)
	if n > 0 {
		p.done += int64(n)
		p.fn(p.done, p.total)
	}
	return n, err
}
