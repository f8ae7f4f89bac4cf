package archive

import (
	"hash"
	"io"
)

// hashCopy copies src to dst and feeds the same bytes to h, hashing one
// chunk on another goroutine while the next is read and this one written.
// SHA-256 costs about as much CPU as the copy itself, so overlapping the two
// keeps large page images near copy speed on a multi-core machine.
// bufs are two equally sized buffers. It returns the bytes copied.
func hashCopy(dst io.Writer, src io.Reader, h hash.Hash, bufs *[2][]byte) (int64, error) {
	done := make(chan struct{}, 1)
	pending := false
	wait := func() {
		if pending {
			<-done
			pending = false
		}
	}
	defer wait()
	var total int64
	for i := 0; ; i ^= 1 {
		// bufs[i]'s previous hash finished before bufs[i^1]'s started.
		n, rerr := io.ReadFull(src, bufs[i])
		if n > 0 {
			wait()
			chunk := bufs[i][:n]
			pending = true
			go func() {
				h.Write(chunk)
				done <- struct{}{}
			}()
			if _, err := dst.Write(chunk); err != nil {
				return total, err
			}
			total += int64(n)
		}
		switch rerr {
		case nil:
		case io.EOF, io.ErrUnexpectedEOF:
			return total, nil
		default:
			return total, rerr
		}
	}
}
