package pageserver

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// fakeCRIU serves idx on a loopback TCP socket, as CRIU's lazy page server
// does, and reports how its session ended.
func fakeCRIU(t *testing.T, idx Index) (*net.TCPConn, <-chan error) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		l.Close()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		done <- (&Server{Index: idx}).Serve(c)
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	return c.(*net.TCPConn), done
}

// daemon plays `criu lazy-pages`: it asks for pages of pid 7 in chunks of
// step, checks them, and closes the session once it has all (or stops
// after stopAfter requests, if > 0).
func daemon(t *testing.T, c net.Conn, data []byte, step, stopAfter int) error {
	pages := len(data) / int(PageSize)
	asked := 0
	for first := 0; first < pages; first += step {
		if stopAfter > 0 && asked == stopAfter {
			return nil
		}
		asked++
		n := min(step, pages-first)
		if _, err := c.Write(Header{Cmd: cmdGet, Nr: uint64(n), Vaddr: 0x10000 + uint64(first)*PageSize, ID: 7}.Bytes()); err != nil {
			return err
		}
		h, err := ReadHeader(c)
		if err != nil {
			return err
		}
		got := make([]byte, h.Nr*PageSize)
		if _, err := io.ReadFull(c, got); err != nil {
			return err
		}
		if off := first * int(PageSize); !bytes.Equal(got, data[off:off+len(got)]) {
			return errors.New("pages differ")
		}
	}
	if _, err := c.Write(Header{Cmd: cmdForceClose}.Bytes()); err != nil {
		return err
	}
	var st [4]byte
	_, err := io.ReadFull(c, st[:])
	return err
}

func TestRelays(t *testing.T) {
	const pages = 16
	data := image(pages)
	idx := Index{7: {extents: []extent{{vaddr: 0x10000, nr: pages, lazy: true}}, pages: bytes.NewReader(data), size: int64(len(data))}}
	for _, tc := range []struct {
		name      string
		stopAfter int  // daemon requests before the link breaks (0: none)
		quiet     bool // the link goes quiet instead of closing
		keepalive bool // the destination sends keepalives first, longer than Idle in all
		want      Outcome
		criuErr   string // how the fake CRIU's session ended ("" = cleanly)
	}{
		{name: "every page, then close", want: Committed},
		{name: "keepalives while restoring, then every page", keepalive: true, want: Committed},
		{name: "link closes half way", stopAfter: 2, want: Aborted, criuErr: "unexpected page-server command 0xdead"},
		{name: "link goes quiet half way", stopAfter: 2, quiet: true, want: Aborted, criuErr: "unexpected page-server command 0xdead"},
		{name: "link closes after the last page", stopAfter: pages / 4, want: Committed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			criu, criuDone := fakeCRIU(t, idx)
			src := &Source{CRIU: criu, LazyBytes: int64(len(data)), First: 5 * time.Second, Idle: 300 * time.Millisecond}
			srcEnd, dstEnd := net.Pipe()
			outcome := make(chan Outcome, 1)
			go func() {
				o, err := src.Relay(srcEnd)
				if o == Committed && err == nil {
					err = Ack(srcEnd)
				}
				outcome <- o
				srcEnd.Close()
			}()
			dmn, agent := net.Pipe()
			dst := &Dest{Idle: 300 * time.Millisecond}
			relayed := make(chan error, 1)
			if tc.keepalive {
				for i := 0; i < 5; i++ { // 5 × 100 ms: more than Idle, never silent for as long
					if err := dst.WriteFrame(dstEnd, CmdKeepalive, nil); err != nil {
						t.Fatal(err)
					}
					time.Sleep(100 * time.Millisecond)
				}
			}
			go func() { relayed <- dst.Relay(agent, dstEnd) }()
			if err := daemon(t, dmn, data, 4, tc.stopAfter); err != nil {
				t.Fatalf("daemon: %v", err)
			}
			if tc.stopAfter > 0 && !tc.quiet {
				dstEnd.Close()
			}
			if tc.stopAfter > 0 {
				dmn.Close()
			}
			if got := <-outcome; got != tc.want {
				t.Fatalf("outcome %v, want %v", got, tc.want)
			}
			err := <-criuDone
			if tc.criuErr == "" && err != nil || tc.criuErr != "" && (err == nil || !strings.Contains(err.Error(), tc.criuErr)) {
				t.Fatalf("CRIU's session ended with %v, want %q", err, tc.criuErr)
			}
			rerr := <-relayed
			if tc.stopAfter == 0 && rerr != nil {
				t.Fatalf("destination relay: %v", rerr)
			}
			if tc.stopAfter == 0 && dst.Received.Load() != int64(len(data)) {
				t.Fatalf("received %d bytes, want %d", dst.Received.Load(), len(data))
			}
			dstEnd.Close()
		})
	}
}
