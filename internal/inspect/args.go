package inspect

import (
	"bytes"
	"strings"
)

// maxArgBytes bounds the argument or environment area read per process.
const maxArgBytes = 256 << 10

// span collects the bytes of [start, end) of one process's memory.
type span struct {
	start, end uint64
	buf        []byte
	got        bool
}

func newSpan(start, end uint64) *span {
	if end <= start {
		return nil
	}
	if end-start > maxArgBytes {
		end = start + maxArgBytes
	}
	return &span{start: start, end: end, buf: make([]byte, end-start)}
}

func (s *span) add(vaddr uint64, data []byte) {
	if s == nil {
		return
	}
	lo, hi := max(vaddr, s.start), min(vaddr+uint64(len(data)), s.end)
	if lo >= hi {
		return
	}
	copy(s.buf[lo-s.start:], data[lo-vaddr:hi-vaddr])
	s.got = true
}

// strings splits a NUL-separated area, dropping empty trailing strings.
func (s *span) strings() []string {
	if s == nil || !s.got {
		return nil
	}
	b := bytes.TrimRight(s.buf, "\x00")
	if len(b) == 0 {
		return nil
	}
	return strings.Split(string(b), "\x00")
}

// argSink reads argv and the environment of each process from its pages.
type argSink struct {
	p        *pass
	cmd, env bool
	spans    map[uint32][2]*span
}

func newArgSink(p *pass, cmd, env bool) *argSink {
	return &argSink{p: p, cmd: cmd, env: env, spans: map[uint32][2]*span{}}
}

func (a *argSink) spansOf(pid uint32) [2]*span {
	if s, ok := a.spans[pid]; ok {
		return s
	}
	var s [2]*span
	if m, err := decodeMM(a.p.dir, pid); err == nil {
		if a.cmd {
			s[0] = newSpan(m.GetMmArgStart(), m.GetMmArgEnd())
		}
		if a.env {
			s[1] = newSpan(m.GetMmEnvStart(), m.GetMmEnvEnd())
		}
	}
	a.spans[pid] = s
	return s
}

func (a *argSink) chunk(pid uint32, vaddr uint64, data []byte) error {
	for _, s := range a.spansOf(pid) {
		s.add(vaddr, data)
	}
	return nil
}

func (a *argSink) end(uint32) error { return nil }

func (a *argSink) apply(c *Checkpoint) {
	c.Walk(func(p *Process) {
		s, ok := a.spans[p.PID]
		if !ok {
			return
		}
		p.Cmdline = s[0].strings()
		p.Env = s[1].strings()
	})
}
