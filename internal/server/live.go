package server

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ckpt-dev/ckpt/internal/checkpoint"
	"github.com/ckpt-dev/ckpt/internal/pageserver"
	"github.com/ckpt-dev/ckpt/internal/runtime"
	"github.com/ckpt-dev/ckpt/pkg/api"
)

// Live migration rides on two upgraded connections, one to each agent,
// which the CLI joins (docs/restore.md). The source's carries the archive
// (a big-endian 64-bit length, then the plain tar), then the page-server
// protocol; the destination's the same the other way, plus its result.

// LiveCheckpointer dumps a container for live migration
// (internal/checkpoint.Service).
type LiveCheckpointer interface {
	CheckpointLive(ctx context.Context, ref runtime.Ref, opts runtime.CheckpointOptions) (*checkpoint.LiveSource, error)
}

// LiveRestorer restores a live-migrated container
// (internal/checkpoint.Service).
type LiveRestorer interface {
	RestoreLive(ctx context.Context, f, pages *os.File, target runtime.Ref, source string) (runtime.Container, error)
	StagingDir() string
}

// defaultLinkTimeout is how long a live migration's link may stay silent
// while a page is awaited, before the migration counts it broken.
const defaultLinkTimeout = 10 * time.Second

// firstArchiveWait bounds the wait for the source's archive.
const firstArchiveWait = 10 * time.Minute

// maxLiveArchive bounds the archive of a live migration (no memory pages).
const maxLiveArchive = 64 << 30

func parseLinkTimeout(q url.Values) (time.Duration, error) {
	v := q["linkTimeout"]
	if len(v) == 0 {
		return defaultLinkTimeout, nil
	}
	n, err := strconv.ParseFloat(v[len(v)-1], 64)
	if err != nil || n <= 0 || n > 3600 {
		return 0, fmt.Errorf("invalid linkTimeout %q: seconds, more than 0 and at most 3600", v[len(v)-1])
	}
	return time.Duration(n * float64(time.Second)), nil
}

func wantsUpgrade(r *http.Request) bool {
	return strings.EqualFold(r.Header.Get("Upgrade"), api.LiveProtocol) &&
		strings.Contains(strings.ToLower(r.Header.Get("Connection")), "upgrade")
}

// upgrade answers 101 and takes the connection over.
func upgrade(w http.ResponseWriter) (*liveConn, error) {
	c, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Time{})
	if _, err := rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + api.LiveProtocol + "\r\n\r\n"); err != nil {
		c.Close()
		return nil, err
	}
	if err := rw.Flush(); err != nil {
		c.Close()
		return nil, err
	}
	return &liveConn{Conn: c, r: rw.Reader}, nil
}

// liveConn reads what the server had buffered first.
type liveConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *liveConn) Read(b []byte) (int, error) { return c.r.Read(b) }

// checkpointLive serves POST /checkpoint/{ns}/{pod}/{ctr}?live=true: it
// dumps the container without its pages, switches the connection to the
// migration protocol, sends the archive and serves the pages.
func (s *server) checkpointLive(w http.ResponseWriter, r *http.Request, ref runtime.Ref, opts runtime.CheckpointOptions, query url.Values) {
	lc, ok := s.c.(LiveCheckpointer)
	if !ok {
		writeText(w, http.StatusBadRequest, "this agent cannot migrate live")
		return
	}
	if !wantsUpgrade(r) {
		writeText(w, http.StatusBadRequest, "live=true needs Connection: Upgrade and Upgrade: "+api.LiveProtocol)
		return
	}
	idle, err := parseLinkTimeout(query)
	if err != nil {
		writeText(w, http.StatusBadRequest, err.Error())
		return
	}
	dumpStart := time.Now()
	src, err := lc.CheckpointLive(r.Context(), ref, opts)
	if err != nil {
		status, msg := errorResponse(ref, err)
		writeText(w, status, msg)
		return
	}
	slog.Info("live migration: dumped without the pages", "container", ref.String(), "took", time.Since(dumpStart).Round(time.Millisecond), "archive", src.Size)
	conn, err := upgrade(w)
	if err != nil {
		src.Abort()
		return
	}
	defer conn.Close()
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(src.Size))
	if _, err := conn.Write(n[:]); err == nil {
		_, err = io.Copy(conn, src.Archive)
	}
	if err != nil {
		src.Abort()
		slog.Error("live migration: send the archive", "container", ref.String(), "error", err)
		return
	}
	// The destination restores the rest before it asks for a page; it
	// sends keepalives meanwhile.
	if err := src.ServePages(conn, 2*idle, idle); err != nil {
		slog.Error("live migration", "container", ref.String(), "error", err)
		return
	}
	slog.Info("live migration: every page moved, the source ended", "container", ref.String())
}

// restoreLive serves POST /restore/{ns}/{pod}/{ctr}?live=true: it switches
// the connection to the migration protocol, takes the archive, restores
// with lazy memory and relays the page requests.
func (s *server) restoreLive(w http.ResponseWriter, r *http.Request, target runtime.Ref) {
	lr, ok := s.a.(LiveRestorer)
	if !ok {
		writeText(w, http.StatusBadRequest, "this agent cannot migrate live")
		return
	}
	if !wantsUpgrade(r) {
		writeText(w, http.StatusBadRequest, "live=true needs Connection: Upgrade and Upgrade: "+api.LiveProtocol)
		return
	}
	idle, err := parseLinkTimeout(r.URL.Query())
	if err != nil {
		writeText(w, http.StatusBadRequest, err.Error())
		return
	}
	conn, err := upgrade(w)
	if err != nil {
		return
	}
	defer conn.Close()
	dest := &pageserver.Dest{Idle: idle}
	result := func(res api.LiveResult) {
		b, _ := json.Marshal(res)
		dest.WriteFrame(conn, pageserver.CmdResult, b)
	}
	fail := func(err error) {
		result(api.LiveResult{Error: err.Error(), Status: archiveStatus(err)})
	}
	spool, err := receiveArchive(conn, lr.StagingDir(), idle)
	if err != nil {
		fail(err)
		return
	}
	defer spool.Close()
	// Until the restore returns, tell both sides the link is alive.
	restoring := make(chan struct{})
	go func() {
		t := time.NewTicker(max(idle/4, 100*time.Millisecond))
		defer t.Stop()
		for {
			select {
			case <-restoring:
				return
			case <-t.C:
				if dest.WriteFrame(conn, pageserver.CmdKeepalive, nil) != nil {
					return
				}
			}
		}
	}()
	defer func() {
		select {
		case <-restoring:
		default:
			close(restoring)
		}
	}()
	agentEnd, daemonEnd, err := pageSockets()
	if err != nil {
		fail(err)
		return
	}
	defer agentEnd.Close()
	relayed := make(chan error, 1)
	go func() { relayed <- dest.Relay(agentEnd, conn) }()
	// A restore outlives a client that goes away: it is undone only by
	// its own failure (the page link's end is one).
	restoreStart := time.Now()
	c, err := lr.RestoreLive(context.WithoutCancel(r.Context()), spool, daemonEnd, target, "live migration from "+r.RemoteAddr)
	daemonEnd.Close()
	close(restoring)
	slog.Info("live migration: restored", "took", time.Since(restoreStart).Round(time.Millisecond), "pages so far", dest.Received.Load(), "error", err)
	if err != nil {
		fail(err)
		return
	}
	result(api.LiveResult{Restored: &api.Restored{ID: c.ID, Namespace: c.Namespace, Pod: c.Pod, Container: c.Name, State: string(c.State), Pid: c.Pid}})
	if err := <-relayed; err != nil {
		slog.Error("live migration", "container", c.ID, "error", err)
		return
	}
	slog.Info("live migration: every page moved", "container", c.ID, "bytes", dest.Received.Load())
}

// receiveArchive reads the length-prefixed archive into an unlinked spool
// file.
func receiveArchive(conn net.Conn, dir string, idle time.Duration) (*os.File, error) {
	// The client may open this connection before the source's dump,
	// which takes up to the checkpoint's timeout.
	conn.SetReadDeadline(time.Now().Add(firstArchiveWait + idle))
	var n [8]byte
	if _, err := io.ReadFull(conn, n[:]); err != nil {
		return nil, fmt.Errorf("%w: read the archive's length: %v", pageserver.ErrLinkBroken, err)
	}
	size := binary.BigEndian.Uint64(n[:])
	if size > maxLiveArchive {
		return nil, fmt.Errorf("archive of %d bytes: more than %d: %w", size, int64(maxLiveArchive), runtime.ErrInvalid)
	}
	in := &idleReader{c: conn, idle: idle}
	f, err := os.CreateTemp(dir, "live-*.tar")
	if err != nil {
		return nil, err
	}
	os.Remove(f.Name())
	if _, err := io.CopyN(f, in, int64(size)); err != nil {
		f.Close()
		return nil, fmt.Errorf("%w: receive the archive: %v", pageserver.ErrLinkBroken, err)
	}
	return f, nil
}

// idleReader fails a read that waits longer than idle.
type idleReader struct {
	c    net.Conn
	idle time.Duration
}

func (r *idleReader) Read(b []byte) (int, error) {
	r.c.SetReadDeadline(time.Now().Add(r.idle))
	return r.c.Read(b)
}

// pageSockets returns a socket pair: the agent's end, and the end for
// `criu lazy-pages`.
func pageSockets() (agent net.Conn, daemon *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	for _, fd := range fds {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 8<<20)
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
	}
	ours := os.NewFile(uintptr(fds[0]), "pages")
	defer ours.Close()
	agent, err = net.FileConn(ours)
	if err != nil {
		unix.Close(fds[1])
		return nil, nil, err
	}
	return agent, os.NewFile(uintptr(fds[1]), "lazy-pages"), nil
}
