package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/ckpt-dev/ckpt/internal/pageserver"
	"github.com/ckpt-dev/ckpt/pkg/client"
)

// maxLiveArchive bounds the archive a live migration's source announces.
const maxLiveArchive = 64 << 30

// liveMigration joins the two agents' migration connections: the archive
// from the source to the destination, then the page traffic both ways.
// The destination's report (pageserver.CmdResult) is taken out here.
type liveMigration struct {
	from, to    string
	linkTimeout time.Duration
}

// liveOutcome is what the CLI saw of a live migration.
type liveOutcome struct {
	restored *client.Restored
	archive  int64 // bytes
	pages    int64 // bytes from the source after the archive
	closed   bool  // the destination closed the page session: it has every page
	took     time.Duration
}

func (m liveMigration) run(ctx context.Context, src, dst *client.Client, ref, into client.Ref, copts client.CheckpointOptions) (liveOutcome, error) {
	var out liveOutcome
	start := time.Now()
	// The destination first: the source is frozen from its answer on.
	dconn, err := dst.MigrateLiveTo(ctx, into, m.linkTimeout)
	if err != nil {
		return out, fmt.Errorf("%w (the source runs on)", err)
	}
	defer dconn.Close()
	sconn, err := src.MigrateLiveFrom(ctx, ref, copts, m.linkTimeout)
	if err != nil {
		return out, err // nothing happened: the source runs on
	}
	defer sconn.Close()
	var n [8]byte
	if _, err := io.ReadFull(sconn, n[:]); err != nil {
		return out, fmt.Errorf("read the archive from %s: %w (the source runs on)", m.from, err)
	}
	out.archive = int64(binary.BigEndian.Uint64(n[:]))
	if out.archive > maxLiveArchive {
		return out, fmt.Errorf("%s announced an archive of %d bytes (the source runs on)", m.from, out.archive)
	}
	if _, err := dconn.Write(n[:]); err != nil {
		return out, fmt.Errorf("send the archive to %s: %w (the source runs on)", m.to, err)
	}
	if _, err := io.CopyN(dconn, sconn, out.archive); err != nil {
		return out, fmt.Errorf("move the archive from %s to %s: %w (the source runs on)", m.from, m.to, err)
	}
	// Pages: either direction's end ends both. Once the destination has
	// restored, pages flow until the end: a link silent for longer than the
	// agents' own limit is broken, and closing both connections here
	// unblocks a write stuck on it.
	var pages atomic.Int64
	var closed, restored atomic.Bool
	var last atomic.Int64
	progress := func() { last.Store(time.Now().UnixNano()) }
	progress()
	results := make(chan client.LiveResult, 1)
	toDst := make(chan error, 1)
	toSrc := make(chan error, 1)
	closeBoth := func() {
		dconn.Close()
		sconn.Close()
	}
	silence := m.linkTimeout
	if silence <= 0 {
		silence = 10 * time.Second
	}
	silence += 2 * time.Second
	go func() {
		toDst <- copyPages(dconn, sconn, &pages, progress, silence, closeBoth)
		closeBoth()
	}()
	go func() {
		toSrc <- forwardRequests(dconn, sconn, results, &closed, &restored, progress)
		closeBoth()
	}()
	stopWatch := make(chan struct{})
	defer close(stopWatch)
	go func() {
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stopWatch:
				return
			case <-t.C:
				// The destination sends keepalives while it restores:
				// silence at any time is a dead link.
				if time.Since(time.Unix(0, last.Load())) > silence {
					closeBoth()
					return
				}
			}
		}
	}()
	var res *client.LiveResult
	var errDst, errSrc error
	for got := 0; got < 2; {
		select {
		case r := <-results:
			res = &r
		case errDst = <-toDst:
			got++
		case errSrc = <-toSrc:
			got++
		}
	}
	select {
	case r := <-results:
		res = &r
	default:
	}
	out.pages, out.closed, out.took = pages.Load(), closed.Load(), time.Since(start)
	switch {
	case res != nil && res.Error != "":
		return out, fmt.Errorf("restore on %s: %s (the source runs on)", m.to, res.Error)
	case res == nil || res.Restored == nil:
		return out, fmt.Errorf("the link to %s broke before it restored the container (the source runs on): %v", m.to, errors.Join(errDst, errSrc))
	case !out.closed:
		return out, fmt.Errorf("the link broke before every page moved: the copy on %s is stopped and the source runs on: %v", m.to, errors.Join(errDst, errSrc))
	}
	out.restored = res.Restored
	return out, nil
}

// forwardRequests copies the destination's page requests to the source,
// taking the destination's results out, until the destination's stream
// ends.
func forwardRequests(dconn io.Reader, sconn io.Writer, results chan<- client.LiveResult, closed, restored *atomic.Bool, progress func()) error {
	for {
		h, err := pageserver.ReadHeader(dconn)
		progress()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if h.Cmd == pageserver.CmdResult {
			if h.Nr > 1<<20 {
				return fmt.Errorf("the destination sent a result of %d bytes", h.Nr)
			}
			b := make([]byte, h.Nr)
			if _, err := io.ReadFull(dconn, b); err != nil {
				return err
			}
			var r client.LiveResult
			if err := json.Unmarshal(b, &r); err != nil {
				return fmt.Errorf("the destination's result: %w", err)
			}
			restored.Store(true)
			results <- r
			continue
		}
		if h.IsClose() {
			closed.Store(true)
		}
		if _, err := sconn.Write(h.Bytes()); err != nil {
			return err
		}
		progress()
	}
}

// copyPages copies the source's answers to the destination. Reads and
// writes run apart, so that the source's end is seen even while a write to
// a dead link is stuck: a write stuck for longer than stuck closes both
// connections.
func copyPages(dconn io.Writer, sconn io.Reader, n *atomic.Int64, progress func(), stuck time.Duration, closeBoth func()) error {
	chunks := make(chan []byte, 16)
	written := make(chan error, 1)
	go func() {
		for b := range chunks {
			if _, err := dconn.Write(b); err != nil {
				written <- err
				for range chunks {
				}
				return
			}
			n.Add(int64(len(b)))
			progress()
		}
		written <- nil
	}()
	var rerr error
	buf := make([]byte, 256<<10)
	for rerr == nil {
		k, err := sconn.Read(buf)
		if k > 0 {
			progress()
			select {
			case chunks <- append([]byte(nil), buf[:k]...): // a TLS record, mostly
			case <-time.After(stuck):
				closeBoth()
				rerr = errors.New("the link to the destination is stuck")
			}
		}
		if err != nil && rerr == nil {
			rerr = err
		}
	}
	close(chunks)
	select {
	case werr := <-written:
		if werr != nil {
			return werr
		}
	case <-time.After(stuck):
		closeBoth()
		return errors.New("the link to the destination is stuck")
	}
	if rerr == io.EOF {
		return nil
	}
	return rerr
}
