package pageserver

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// FileSection is a page image stored in a file at an offset (a member of a
// checkpoint archive). Serve sends its pages with splice(2) when the
// connection is a socket: the page cache pages go to the socket without a
// copy through the server.
type FileSection struct {
	File      *os.File
	Off, Size int64
}

// ReadAt reads the page image.
func (s FileSection) ReadAt(p []byte, off int64) (int, error) {
	return io.NewSectionReader(s.File, s.Off, s.Size).ReadAt(p, off)
}

// splicer moves file ranges to a socket through a pipe.
type splicer struct {
	out  io.Writer // the connection, for what cannot be spliced
	conn syscall.RawConn
	r, w *os.File
	// fromFile is splice(2) from the file into the pipe.
	fromFile func(file int, off *int64, pipe int, n int) (int64, error)
}

func spliceFromFile(file int, off *int64, pipe int, n int) (int64, error) {
	return unix.Splice(file, off, pipe, nil, n, unix.SPLICE_F_MOVE)
}

// pipeBytes is the pipe size asked for; the kernel may give less
// (fs.pipe-max-size), and the splice loop works with any size.
const pipeBytes = 4 << 20

func newSplicer(conn io.Writer) *splicer {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil
	}
	unix.FcntlInt(w.Fd(), unix.F_SETPIPE_SZ, pipeBytes) // best effort
	return &splicer{out: conn, conn: raw, r: r, w: w, fromFile: spliceFromFile}
}

func (s *splicer) close() {
	if s != nil {
		s.r.Close()
		s.w.Close()
	}
}

// send writes n bytes of f at off to the connection.
func (s *splicer) send(f *os.File, off int64, n int) error {
	for n > 0 {
		in, err := s.fromFile(int(f.Fd()), &off, int(s.w.Fd()), n)
		if err == unix.EINVAL || err == unix.ENOSYS || err == unix.ENOMEM {
			// The file system does not splice, or the kernel lacks the
			// memory for the pipe's buffers: the rest goes through user
			// space (the pipe is empty here).
			if _, err := io.CopyN(s.out, io.NewSectionReader(f, off, int64(n)), int64(n)); err != nil {
				return fmt.Errorf("copy from the page image: %w", err)
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("splice from the page image: %w", err)
		}
		if in == 0 {
			return io.ErrUnexpectedEOF // the file is shorter than its index says
		}
		n -= int(in)
		for in > 0 {
			var out int64
			var serr error
			err := s.conn.Write(func(fd uintptr) bool {
				out, serr = unix.Splice(int(s.r.Fd()), nil, int(fd), nil, int(in), unix.SPLICE_F_MOVE|unix.SPLICE_F_MORE)
				return !errors.Is(serr, unix.EAGAIN)
			})
			if err == nil {
				err = serr
			}
			if err != nil {
				return fmt.Errorf("splice to the connection: %w", err)
			}
			in -= out
		}
	}
	return nil
}
