package archive

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"testing"
)

func TestHashCopy(t *testing.T) {
	const bufSize = 8
	for _, size := range []int{0, 1, bufSize - 1, bufSize, bufSize + 1, 2 * bufSize, 5*bufSize + 3} {
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(i*31 + 7)
		}
		bufs := [2][]byte{make([]byte, bufSize), make([]byte, bufSize)}
		var dst bytes.Buffer
		h := sha256.New()
		n, err := hashCopy(&dst, bytes.NewReader(data), h, &bufs)
		if err != nil || n != int64(size) || !bytes.Equal(dst.Bytes(), data) {
			t.Fatalf("size %d: n=%d err=%v", size, n, err)
		}
		want := sha256.Sum256(data)
		if !bytes.Equal(h.Sum(nil), want[:]) {
			t.Errorf("size %d: hash differs", size)
		}
	}
}

type failWriter struct{}

var errWrite = errors.New("disk full")

func (failWriter) Write([]byte) (int, error) { return 0, errWrite }

func TestHashCopyWriteError(t *testing.T) {
	bufs := [2][]byte{make([]byte, 4), make([]byte, 4)}
	_, err := hashCopy(failWriter{}, bytes.NewReader(make([]byte, 100)), sha256.New(), &bufs)
	if !errors.Is(err, errWrite) {
		t.Fatalf("err = %v", err)
	}
}
