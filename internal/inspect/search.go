package inspect

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"sort"
)

const (
	// MaxContext bounds the context printed around a match.
	MaxContext = 4096
	// regexOverlap is the longest regex match found across chunk borders.
	regexOverlap = 4096
	// DefaultMaxMatches is used when SearchOptions.Max is 0.
	DefaultMaxMatches = 1000
)

// SearchOptions says what to look for in the memory pages.
type SearchOptions struct {
	// Literal or Regex (exactly one).
	Literal string
	Regex   *regexp.Regexp
	// Context is how many bytes before and after a match to keep.
	Context int
	// PID restricts the search to one process (0 = all).
	PID uint32
	// Max stops the search after so many matches (0 = DefaultMaxMatches).
	Max int
}

// Match is one hit in a process's memory. Bytes that are not printable
// ASCII are shown as '.'.
type Match struct {
	PID     uint32 `json:"pid"`
	Command string `json:"command"`
	Address string `json:"address"` // virtual address, "0x..." hex
	Match   string `json:"match"`
	Before  string `json:"before"`
	After   string `json:"after"`

	addr uint64
}

// SearchResult is what Search found.
type SearchResult struct {
	Matches []Match `json:"matches"`
	// Truncated is set when the search stopped at SearchOptions.Max.
	Truncated bool `json:"truncated"`
	// Searched is how many bytes of memory were searched.
	Searched int64 `json:"searched_bytes"`
}

// Search streams the archive and searches the memory pages, resolving each
// hit to its process and virtual address through the pagemap.
func Search(path string, opts Options, so SearchOptions) (*Checkpoint, *SearchResult, error) {
	s, err := newSearchSink(so)
	if err != nil {
		return nil, nil, err
	}
	c, err := read(path, opts, []pageSink{s})
	if err != nil {
		return nil, nil, err
	}
	sort.SliceStable(s.res.Matches, func(i, j int) bool {
		a, b := s.res.Matches[i], s.res.Matches[j]
		return a.PID < b.PID || a.PID == b.PID && a.addr < b.addr
	})
	for i := range s.res.Matches {
		m := &s.res.Matches[i]
		if p := c.Process(m.PID); p != nil {
			m.Command = p.Command
		}
	}
	if so.PID != 0 && c.Process(so.PID) == nil {
		return nil, nil, fmt.Errorf("search %s: no process with PID %d", path, so.PID)
	}
	return c, &s.res, nil
}

type searchSink struct {
	opts    SearchOptions
	lit     []byte
	overlap int
	keep    int // bytes kept from one chunk to the next

	pid     uint32
	next    uint64 // address after the last byte seen
	carry   []byte
	buf     []byte
	pending []Match // hits still waiting for their trailing context
	lastEnd uint64  // end address of the last reported hit
	res     SearchResult
}

func newSearchSink(o SearchOptions) (*searchSink, error) {
	if (o.Literal == "") == (o.Regex == nil) {
		return nil, errors.New("search: give either a string or a regular expression")
	}
	if o.Context < 0 || o.Context > MaxContext {
		return nil, fmt.Errorf("search: context must be between 0 and %d bytes", MaxContext)
	}
	if o.Max <= 0 {
		o.Max = DefaultMaxMatches
	}
	s := &searchSink{opts: o, res: SearchResult{Matches: []Match{}}}
	if o.Literal != "" {
		s.lit = []byte(o.Literal)
		s.overlap = len(s.lit) - 1
	} else {
		s.overlap = regexOverlap
	}
	s.keep = max(s.overlap, o.Context)
	return s, nil
}

func (s *searchSink) full() bool { return len(s.res.Matches)+len(s.pending) >= s.opts.Max }

func (s *searchSink) chunk(pid uint32, vaddr uint64, data []byte) error {
	if s.opts.PID != 0 && pid != s.opts.PID {
		return nil
	}
	if pid != s.pid || vaddr != s.next {
		s.flush()
		s.pid, s.carry, s.lastEnd = pid, s.carry[:0], 0
	}
	s.next = vaddr + uint64(len(data))
	s.res.Searched += int64(len(data))
	// Trailing context for earlier hits.
	done := s.pending[:0]
	for _, m := range s.pending {
		need := s.opts.Context - len(m.After)
		take := min(need, len(data))
		m.After += printableASCII(data[:take])
		if len(m.After) < s.opts.Context {
			done = append(done, m)
			continue
		}
		s.res.Matches = append(s.res.Matches, m)
	}
	s.pending = done

	s.buf = append(append(s.buf[:0], s.carry...), data...)
	base := vaddr - uint64(len(s.carry))
	if !s.full() {
		s.find(base, len(s.carry))
	} else if len(s.pending) == 0 {
		s.res.Truncated = true
	}
	k := min(s.keep, len(s.buf))
	s.carry = append(s.carry[:0], s.buf[len(s.buf)-k:]...)
	return nil
}

// find records the hits in s.buf that reach past the first old bytes.
func (s *searchSink) find(base uint64, old int) {
	b := s.buf
	add := func(i, j int) bool {
		if j <= old || j == i || base+uint64(i) < s.lastEnd {
			return true
		}
		if s.full() {
			s.res.Truncated = true
			return false
		}
		ctx := s.opts.Context
		m := Match{
			PID: s.pid, addr: base + uint64(i), Address: fmt.Sprintf("0x%x", base+uint64(i)),
			Match:  printableASCII(b[i:j]),
			Before: printableASCII(b[max(0, i-ctx):i]),
			After:  printableASCII(b[j:min(len(b), j+ctx)]),
		}
		s.lastEnd = base + uint64(j)
		if len(m.After) < ctx {
			s.pending = append(s.pending, m)
		} else {
			s.res.Matches = append(s.res.Matches, m)
		}
		return true
	}
	if s.lit != nil {
		for from := 0; from < len(b); {
			i := bytes.Index(b[from:], s.lit)
			if i < 0 {
				return
			}
			i += from
			if !add(i, i+len(s.lit)) {
				return
			}
			from = i + 1
		}
		return
	}
	left := s.opts.Max - len(s.res.Matches) - len(s.pending)
	for _, ij := range s.opts.Regex.FindAllIndex(b, left+1) {
		if !add(ij[0], ij[1]) {
			return
		}
	}
}

// flush reports hits whose trailing context ran into the end of a region.
func (s *searchSink) flush() {
	s.res.Matches = append(s.res.Matches, s.pending...)
	s.pending = s.pending[:0]
}

func (s *searchSink) end(pid uint32) error {
	if pid == s.pid {
		s.flush()
		s.next = 0
	}
	return nil
}

func printableASCII(b []byte) string {
	out := make([]byte, len(b))
	for i, c := range b {
		if c < 0x20 || c >= 0x7f {
			c = '.'
		}
		out[i] = c
	}
	return string(out)
}
