package client

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/ckpt-dev/ckpt/pkg/api"
)

// LiveResult is the destination's report in a live migration.
type LiveResult = api.LiveResult

// MigrateLiveFrom asks the source agent to dump ref for live migration
// (POST /checkpoint/NS/POD/CTR?live=true, upgraded to api.LiveProtocol)
// and returns the connection: the archive, then the page traffic.
// linkTimeout (0: the agent's default) is how long the link may stay
// silent before the migration counts it broken.
func (c *Client) MigrateLiveFrom(ctx context.Context, ref Ref, o CheckpointOptions, linkTimeout time.Duration) (io.ReadWriteCloser, error) {
	q, err := o.query()
	if err != nil {
		return nil, fmt.Errorf("migrate %s live: %w", ref, err)
	}
	q.Set("live", "true")
	return c.upgrade(ctx, "live checkpoint "+ref.String(), []string{"checkpoint", ref.Namespace, ref.Pod, ref.Container}, q, linkTimeout)
}

// MigrateLiveTo asks the destination agent to restore a live migration
// (POST /restore/NS/POD/CTR?live=true, upgraded) and returns the
// connection. Empty fields of target keep the archive's names.
func (c *Client) MigrateLiveTo(ctx context.Context, target Ref, linkTimeout time.Duration) (io.ReadWriteCloser, error) {
	q := url.Values{"live": {"true"}}
	return c.upgrade(ctx, "live restore "+describeTarget(target), []string{"restore", orKeep(target.Namespace), orKeep(target.Pod), orKeep(target.Container)}, q, linkTimeout)
}

func (c *Client) upgrade(ctx context.Context, op string, segs []string, q url.Values, linkTimeout time.Duration) (io.ReadWriteCloser, error) {
	if linkTimeout > 0 {
		q.Set("linkTimeout", strconv.FormatFloat(linkTimeout.Seconds(), 'f', -1, 64))
	}
	h := http.Header{"Connection": {"Upgrade"}, "Upgrade": {api.LiveProtocol}}
	resp, err := c.call(ctx, op, request{method: http.MethodPost, segments: segs, query: q, header: h}, http.StatusSwitchingProtocols)
	if err != nil {
		return nil, err
	}
	conn, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		resp.Body.Close()
		return nil, fmt.Errorf("%s: the server switched protocols, but the connection is not writable", op)
	}
	return conn, nil
}
