package inspect

import (
	"bufio"
	"fmt"
	"io"
)

// DumpFormat is how Dump writes memory.
type DumpFormat string

const (
	// DumpRaw writes the dumped pages back to back, in address order; the
	// returned regions say where each run of pages starts.
	DumpRaw DumpFormat = "raw"
	// DumpHex writes a hexdump with virtual addresses.
	DumpHex DumpFormat = "hex"
)

// DumpRegion is one run of contiguous pages in a raw dump.
type DumpRegion struct {
	Address string `json:"address"` // "0x..." hex
	Size    int64  `json:"size"`
	Offset  int64  `json:"offset"` // in the output
}

// Dump streams the archive and writes the memory pages of one process to
// w. It returns the regions written (in a raw dump, where each one is).
func Dump(path string, opts Options, pid uint32, format DumpFormat, w io.Writer) (*Checkpoint, []DumpRegion, error) {
	if format != DumpRaw && format != DumpHex {
		return nil, nil, fmt.Errorf("dump %s: unknown format %q (raw or hex)", path, format)
	}
	bw := bufio.NewWriterSize(w, 1<<20)
	s := &dumpSink{pid: pid, format: format, w: bw}
	c, err := read(path, opts, []pageSink{s})
	if err != nil {
		return nil, nil, err
	}
	if c.Process(pid) == nil {
		return nil, nil, fmt.Errorf("dump %s: no process with PID %d", path, pid)
	}
	if err := bw.Flush(); err != nil {
		return nil, nil, fmt.Errorf("dump %s: %w", path, err)
	}
	return c, s.regions, nil
}

type dumpSink struct {
	pid     uint32
	format  DumpFormat
	w       *bufio.Writer
	off     int64
	regions []DumpRegion
	next    uint64
	line    [80]byte
}

func (s *dumpSink) chunk(pid uint32, vaddr uint64, data []byte) error {
	if pid != s.pid {
		return nil
	}
	if n := len(s.regions); n == 0 || vaddr != s.next {
		s.regions = append(s.regions, DumpRegion{Address: fmt.Sprintf("0x%x", vaddr), Offset: s.off})
	}
	s.regions[len(s.regions)-1].Size += int64(len(data))
	s.next = vaddr + uint64(len(data))
	if s.format == DumpRaw {
		n, err := s.w.Write(data)
		s.off += int64(n)
		return err
	}
	for i := 0; i < len(data); i += 16 {
		n, err := s.w.Write(hexLine(s.line[:0], vaddr+uint64(i), data[i:min(i+16, len(data))]))
		s.off += int64(n)
		if err != nil {
			return err
		}
	}
	return nil
}

func (s *dumpSink) end(uint32) error { return nil }

// hexLine formats "addr  hex bytes  |ascii|".
func hexLine(b []byte, addr uint64, row []byte) []byte {
	const digits = "0123456789abcdef"
	b = fmt.Appendf(b, "%016x  ", addr)
	for i := 0; i < 16; i++ {
		if i < len(row) {
			b = append(b, digits[row[i]>>4], digits[row[i]&15], ' ')
		} else {
			b = append(b, "   "...)
		}
	}
	b = append(b, " |"...)
	for _, c := range row {
		if c < 0x20 || c >= 0x7f {
			c = '.'
		}
		b = append(b, c)
	}
	return append(b, "|\n"...)
}
