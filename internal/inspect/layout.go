package inspect

import (
	"fmt"
	"io/fs"
	"math"
	"os"
	"strconv"
	"strings"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/mm"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pagemap"
)

// Pagemap entry flags (CRIU's images/pagemap.proto).
const (
	peParent  = 1 << 0
	peLazy    = 1 << 1
	pePresent = 1 << 2
)

var pageSize = uint64(os.Getpagesize())

// region is a run of pages stored in a page image.
type region struct {
	vaddr uint64
	size  int64
}

// pagemapInfo is one process's pagemap: which virtual addresses the bytes
// of pages-<pagesID>.img belong to, in file order.
type pagemapInfo struct {
	pid     uint32
	pagesID uint32
	regions []region // present pages only, ascending vaddr
	present int64    // bytes in the page image
}

// layout maps page images to processes.
type layout struct {
	byPagesID map[uint32]*pagemapInfo
	byPID     map[uint32]*pagemapInfo
}

// loadLayout decodes every pagemap-<pid>.img extracted so far.
func loadLayout(d *imageDir) (*layout, error) {
	l := &layout{byPagesID: map[uint32]*pagemapInfo{}, byPID: map[uint32]*pagemapInfo{}}
	entries, err := fs.ReadDir(d.root.FS(), checkpointDir)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		num, ok := strings.CutPrefix(e.Name(), "pagemap-")
		if !ok {
			continue
		}
		num, ok = strings.CutSuffix(num, ".img")
		pid, err := strconv.ParseUint(num, 10, 32)
		if !ok || err != nil {
			continue // pagemap-shmem-*.img and the like
		}
		pm, err := decodePagemap(d, uint32(pid))
		if err != nil {
			return nil, err
		}
		if other, dup := l.byPagesID[pm.pagesID]; dup {
			return nil, fmt.Errorf("%w: pagemaps of pid %d and %d both use pages-%d.img", ErrCorrupt, other.pid, pm.pid, pm.pagesID)
		}
		l.byPagesID[pm.pagesID] = pm
		l.byPID[pm.pid] = pm
	}
	return l, nil
}

// decodePagemap decodes and validates pagemap-<pid>.img.
func decodePagemap(d *imageDir, pid uint32) (*pagemapInfo, error) {
	name := fmt.Sprintf("%s/pagemap-%d.img", checkpointDir, pid)
	msgs, err := decodeImage(d, name, "PAGEMAP", &pagemap.PagemapHead{})
	if err != nil {
		return nil, err
	}
	if len(msgs) == 0 {
		return nil, fmt.Errorf("decode %s: %w: no head", name, ErrCorrupt)
	}
	head, ok := msgs[0].(*pagemap.PagemapHead)
	if !ok {
		return nil, fmt.Errorf("decode %s: %w: no head", name, ErrCorrupt)
	}
	pm := &pagemapInfo{pid: pid, pagesID: head.GetPagesId()}
	var next uint64
	for i, m := range msgs[1:] {
		e, ok := m.(*pagemap.PagemapEntry)
		if !ok {
			return nil, fmt.Errorf("decode %s: %w: entry %d", name, ErrCorrupt, i)
		}
		vaddr, nr, present := pagemapEntry(e)
		if nr == 0 {
			continue
		}
		if vaddr%pageSize != 0 || vaddr < next || nr > (math.MaxUint64-vaddr)/pageSize || nr*pageSize > math.MaxInt64/2 {
			return nil, fmt.Errorf("decode %s: %w: entry %d (vaddr 0x%x, %d pages) is unaligned, unsorted or too large", name, ErrCorrupt, i, vaddr, nr)
		}
		next = vaddr + nr*pageSize
		if !present {
			continue
		}
		size := int64(nr * pageSize)
		if pm.present > math.MaxInt64/2-size {
			return nil, fmt.Errorf("decode %s: %w: too many pages", name, ErrCorrupt)
		}
		pm.present += size
		if n := len(pm.regions); n > 0 && pm.regions[n-1].vaddr+uint64(pm.regions[n-1].size) == vaddr {
			pm.regions[n-1].size += size
			continue
		}
		pm.regions = append(pm.regions, region{vaddr: vaddr, size: size})
	}
	return pm, nil
}

// pagemapEntry returns an entry's address, page count, and whether its
// pages are in this checkpoint's page image (not in a parent, not lazy).
func pagemapEntry(e *pagemap.PagemapEntry) (vaddr, nr uint64, present bool) {
	nr = e.GetNrPages()
	if e.NrPages == nil {
		nr = uint64(e.GetCompatNrPages())
	}
	if e.Flags != nil {
		present = e.GetFlags()&pePresent != 0
	} else {
		present = !e.GetInParent()
	}
	return e.GetVaddr(), nr, present
}

// decodeMM decodes mm-<pid>.img.
func decodeMM(d *imageDir, pid uint32) (*mm.MmEntry, error) {
	return one(d, fmt.Sprintf("%s/mm-%d.img", checkpointDir, pid), "MM", &mm.MmEntry{})
}
