package pageserver

// Relays for live migration. The destination's `criu lazy-pages` asks for
// pages over a socket its agent holds; the source's CRIU, dumping with
// --lazy-pages, serves them on a loopback socket its agent holds; between
// the two agents the page-server protocol rides on an authenticated HTTPS
// connection (see docs/restore.md, "Live migration").
//
// Both relays parse the protocol: requests are 32-byte headers, answers a
// header and the pages it counts. That is how the source knows how much it
// has sent, and how either side tells the end of the session (PS_IOV_CLOSE
// or PS_IOV_FORCE_CLOSE, answered by a 32-bit status) from a broken link.

import (
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

// CmdResult is not CRIU's: the destination agent sends it on the tunnel,
// among the page requests, to tell the CLI how the restore went; nr is the
// length of the JSON that follows. The CLI takes it out of the stream.
const CmdResult = 0x10c0

// CmdKeepalive is not CRIU's either: the destination agent sends it while
// it restores, before it asks for pages, so that the source (which skips
// it) and the CLI can tell a slow restore from a dead link.
const CmdKeepalive = 0x10c1

// cmdAbort is no command CRIU knows: sent to CRIU's page server, it fails
// the lazy dump, and CRIU resumes the source's tasks. (A plain end of the
// connection would not do: CRIU takes EOF for a finished session.)
const cmdAbort = 0xdead

// maxPagesPerReply bounds the pages one answer may carry (CRIU sends at
// most what was asked; lazy-pages asks for at most a few MiB).
const maxPagesPerReply = 1 << 18

// copyBuffer is each relay's one buffer for pages (io.CopyN would
// allocate one per answer).
const copyBuffer = 256 << 10

// copyN copies exactly n bytes through buf.
func copyN(w io.Writer, r io.Reader, n int64, buf []byte) error {
	got, err := io.CopyBuffer(w, io.LimitReader(r, n), buf)
	if err == nil && got < n {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// ErrLinkBroken is a tunnel that failed or went quiet before the session
// ended.
var ErrLinkBroken = errors.New("migration link broken")

// Header is the wire form of a page-server request or answer.
type Header struct {
	Cmd           uint32
	Nr, Vaddr, ID uint64
}

// ReadHeader reads one header.
func ReadHeader(r io.Reader) (Header, error) {
	var b [headerSize]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return Header{}, err
	}
	var h header
	h.decode(b[:])
	return Header{Cmd: h.cmd, Nr: h.nr, Vaddr: h.vaddr, ID: h.dst}, nil
}

// Bytes is the header's wire form.
func (h Header) Bytes() []byte {
	b := make([]byte, headerSize)
	(&header{cmd: h.Cmd, nr: h.Nr, vaddr: h.Vaddr, dst: h.ID}).encode(b)
	return b
}

func (h Header) base() uint32 { return h.Cmd & (1<<cmdBits - 1) }

// IsClose reports whether h ends the session.
func (h Header) IsClose() bool { return h.base() == cmdClose || h.base() == cmdForceClose }

// deadliner is a connection whose reads can time out.
type deadliner interface {
	io.ReadWriter
	SetReadDeadline(time.Time) error
}

// unblock makes a write blocked on a broken tunnel return.
func unblock(tunnel any) {
	if w, ok := tunnel.(interface{ SetWriteDeadline(time.Time) error }); ok {
		w.SetWriteDeadline(time.Now())
	}
}

// Source relays a destination's page requests to the source's CRIU.
type Source struct {
	// CRIU is the connection to CRIU's lazy page server.
	CRIU *net.TCPConn
	// LazyBytes is what the dump left to be pulled: once that much has
	// been sent, the destination may hold every page.
	LazyBytes int64
	// First bounds the wait for the first request (the destination
	// restores the rest of the container meanwhile); Idle the wait for
	// each later one.
	First, Idle time.Duration
	// Sent counts the bytes of pages sent.
	Sent atomic.Int64
}

// Outcome is how a live migration ended at the source.
type Outcome int

const (
	// Aborted: CRIU was told to fail; it resumes the source.
	Aborted Outcome = iota
	// Committed: CRIU ended the session cleanly; it ends the source.
	Committed
)

// Relay serves tunnel until the destination ends the session (Committed),
// or the link breaks. A break before every page has been sent aborts: the
// destination cannot have its memory, and the source runs on. A break after
// every page has been sent commits: the destination may run on its pages
// already, so the source must not (see docs/restore.md). The caller answers
// a committed session's close once the source has ended (Ack).
func (s *Source) Relay(tunnel deadliner) (Outcome, error) {
	s.CRIU.SetLinger(0) // any close but commit's is a reset, never an EOF
	expect := make(chan struct{}, 4096)
	replies := make(chan error, 1)
	go func() {
		err := s.forwardReplies(tunnel, expect)
		if c, ok := tunnel.(io.Closer); ok && err != nil {
			// CRIU failed (and resumes the source) or the tunnel did:
			// the destination must learn it now, not at its next wait.
			c.Close()
		}
		replies <- err
	}()
	wait := s.First
	for {
		if wait > 0 {
			tunnel.SetReadDeadline(time.Now().Add(wait))
		}
		wait = s.Idle
		h, err := ReadHeader(tunnel)
		if err != nil {
			close(expect)
			unblock(tunnel)
			<-replies
			return s.broken(fmt.Errorf("%w: %v", ErrLinkBroken, err))
		}
		switch {
		case h.Cmd == CmdKeepalive:
			continue
		case h.IsClose():
			close(expect)
			if err := <-replies; err != nil {
				return s.broken(err)
			}
			return s.commit()
		case h.base() != cmdGet:
			close(expect)
			<-replies
			return s.abort(fmt.Errorf("unexpected page-server command %#x on the tunnel", h.Cmd))
		}
		if _, err := s.CRIU.Write(h.Bytes()); err != nil {
			close(expect)
			<-replies
			return s.abort(fmt.Errorf("ask CRIU's page server: %w", err))
		}
		select {
		case expect <- struct{}{}:
		case err := <-replies:
			close(expect)
			return s.broken(err)
		}
	}
}

// forwardReplies sends CRIU's answers to the tunnel, one per request.
func (s *Source) forwardReplies(tunnel io.Writer, expect <-chan struct{}) error {
	buf := make([]byte, copyBuffer)
	for range expect {
		h, err := ReadHeader(s.CRIU)
		if err != nil {
			return fmt.Errorf("CRIU's page server: %w", err)
		}
		if h.base() != cmdAddF || h.Nr == 0 || h.Nr > maxPagesPerReply {
			return fmt.Errorf("CRIU's page server answered %#x with %d pages", h.Cmd, h.Nr)
		}
		if _, err := tunnel.Write(h.Bytes()); err != nil {
			return fmt.Errorf("%w: %v", ErrLinkBroken, err)
		}
		n := int64(h.Nr * PageSize)
		if err := copyN(tunnel, s.CRIU, n, buf); err != nil {
			return fmt.Errorf("%w: send pages: %v", ErrLinkBroken, err)
		}
		s.Sent.Add(n)
	}
	return nil
}

// broken decides a session that ended without the destination's close.
func (s *Source) broken(err error) (Outcome, error) {
	if s.LazyBytes > 0 && s.Sent.Load() >= s.LazyBytes {
		out, cerr := s.commit()
		return out, errors.Join(fmt.Errorf("every page was sent before the link broke: the destination runs, the source ends"), err, cerr)
	}
	return s.abort(err)
}

// commit ends CRIU's session cleanly: CRIU then ends the source's tasks.
func (s *Source) commit() (Outcome, error) {
	h := Header{Cmd: cmdClose}
	if _, err := s.CRIU.Write(h.Bytes()); err != nil {
		return s.abort(fmt.Errorf("close CRIU's session: %w", err))
	}
	var status [4]byte
	if _, err := io.ReadFull(s.CRIU, status[:]); err != nil {
		return s.abort(fmt.Errorf("close CRIU's session: %w", err))
	}
	// CRIU waits for EOF after the close: a FIN, not a reset.
	s.CRIU.SetLinger(-1)
	s.CRIU.CloseWrite()
	io.Copy(io.Discard, s.CRIU)
	s.CRIU.Close()
	return Committed, nil
}

// abort fails CRIU's session: CRIU resumes the source.
func (s *Source) abort(err error) (Outcome, error) {
	s.CRIU.Write(Header{Cmd: cmdAbort}.Bytes())
	s.CRIU.Close()
	return Aborted, err
}

// Ack answers the destination's close: the source has ended.
func Ack(tunnel io.Writer) error {
	var status [4]byte
	_, err := tunnel.Write(status[:])
	return err
}

// Dest relays the requests of the destination's `criu lazy-pages` to the
// tunnel and the source's answers back.
type Dest struct {
	// Idle bounds the wait for an answer.
	Idle time.Duration
	// Received counts the bytes of pages received.
	Received atomic.Int64
	// mu orders writes to the tunnel (requests and the result).
	mu sync.Mutex
}

// WriteFrame writes a frame of the agent's own (CmdResult) to the tunnel.
func (d *Dest) WriteFrame(tunnel io.Writer, cmd uint32, body []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, err := tunnel.Write(Header{Cmd: cmd, Nr: uint64(len(body))}.Bytes()); err != nil {
		return err
	}
	_, err := tunnel.Write(body)
	return err
}

// Relay runs until the daemon has closed the session and the source has
// answered (nil), or something broke. The daemon's close means it holds
// every page: the destination runs on whatever the answer.
func (d *Dest) Relay(daemon io.ReadWriter, tunnel deadliner) error {
	expect := make(chan struct{}, 4096)
	replies := make(chan error, 1)
	go func() {
		err := d.forwardReplies(daemon, tunnel, expect)
		if c, ok := daemon.(io.Closer); ok && err != nil {
			c.Close() // the daemon fails at once, not at its next request
		}
		replies <- err
	}()
	for {
		h, err := ReadHeader(daemon)
		if err != nil {
			close(expect)
			unblock(tunnel)
			select {
			case rerr := <-replies:
				if rerr != nil {
					return rerr
				}
			default:
			}
			return fmt.Errorf("criu lazy-pages: %w", err)
		}
		if h.IsClose() {
			close(expect)
			if err := <-replies; err != nil {
				return err
			}
			if err := d.write(tunnel, h.Bytes()); err != nil {
				return fmt.Errorf("%w: %v", ErrLinkBroken, err)
			}
			var status [4]byte
			tunnel.SetReadDeadline(time.Now().Add(d.Idle))
			if _, err := io.ReadFull(tunnel, status[:]); err != nil {
				daemon.Write(status[:]) // every page is in: the daemon ends well
				return fmt.Errorf("%w: the source did not answer the close: %v", ErrLinkBroken, err)
			}
			_, err := daemon.Write(status[:])
			return err
		}
		if h.base() != cmdGet {
			close(expect)
			return fmt.Errorf("criu lazy-pages sent command %#x", h.Cmd)
		}
		if err := d.write(tunnel, h.Bytes()); err != nil {
			close(expect)
			return fmt.Errorf("%w: %v", ErrLinkBroken, err)
		}
		select {
		case expect <- struct{}{}:
		case err := <-replies:
			close(expect)
			return err
		}
	}
}

func (d *Dest) write(tunnel io.Writer, b []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, err := tunnel.Write(b)
	return err
}

func (d *Dest) forwardReplies(daemon io.Writer, tunnel deadliner, expect <-chan struct{}) error {
	buf := make([]byte, copyBuffer)
	for range expect {
		tunnel.SetReadDeadline(time.Now().Add(d.Idle))
		h, err := ReadHeader(tunnel)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrLinkBroken, err)
		}
		if h.base() != cmdAddF || h.Nr == 0 || h.Nr > maxPagesPerReply {
			return fmt.Errorf("the source answered %#x with %d pages", h.Cmd, h.Nr)
		}
		if _, err := daemon.Write(h.Bytes()); err != nil {
			return fmt.Errorf("criu lazy-pages: %w", err)
		}
		n := int64(h.Nr * PageSize)
		tunnel.SetReadDeadline(time.Now().Add(d.Idle + time.Duration(n>>20)*time.Second))
		if err := copyN(daemon, tunnel, n, buf); err != nil {
			return fmt.Errorf("%w: receive pages: %v", ErrLinkBroken, err)
		}
		d.Received.Add(n)
	}
	return nil
}

// LazyBytes sums the pages a lazy dump left behind (marked lazy and not
// present in its pagemaps): what the destination must pull.
func LazyBytes(imagesDir string) (int64, error) {
	matches, err := filepath.Glob(filepath.Join(imagesDir, "pagemap-*.img"))
	if err != nil {
		return 0, err
	}
	var total int64
	for _, m := range matches {
		var pid uint64
		if _, err := fmt.Sscanf(filepath.Base(m), "pagemap-%d.img", &pid); err != nil {
			continue
		}
		pm, err := ReadPagemap(m)
		if err != nil {
			return 0, err
		}
		total += pm.Remote
	}
	return total, nil
}
