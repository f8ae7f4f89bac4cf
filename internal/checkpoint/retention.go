package checkpoint

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"time"
)

// Retention limits the archives kept. Zero values mean no limit. The
// kubelet has no such policy (kubernetes#115888).
type Retention struct {
	PerContainer int           // keep at most this many archives per container
	MaxBytes     int64         // keep at most this many bytes of archives in all
	MaxAge       time.Duration // delete archives older than this
}

func (r Retention) enabled() bool { return r.PerContainer > 0 || r.MaxBytes > 0 || r.MaxAge > 0 }

// ApplyRetention deletes archives, oldest first, until the policy holds.
// Archives being written (staging) or read (pinned) are never deleted, and
// count against the byte budget while they stay. It returns the names it
// deleted, and the deletions that failed.
func (s *Service) ApplyRetention() ([]string, error) {
	pol := s.opts.Retention
	if !pol.enabled() {
		return nil, nil
	}
	s.retentionMu.Lock()
	defer s.retentionMu.Unlock()
	list, err := s.List() // oldest first
	if err != nil {
		return nil, err
	}
	now := s.now()
	doomed := map[string]bool{}
	if pol.MaxAge > 0 {
		for _, a := range list {
			if now.Sub(a.Created) > pol.MaxAge {
				doomed[a.Name] = true
			}
		}
	}
	if pol.PerContainer > 0 {
		kept := map[string]int{}
		for i := len(list) - 1; i >= 0; i-- { // newest first
			a := list[i]
			key := a.Namespace + "/" + a.Pod + "/" + a.Container
			if doomed[a.Name] {
				continue
			}
			if kept[key]++; kept[key] > pol.PerContainer {
				doomed[a.Name] = true
			}
		}
	}
	if pol.MaxBytes > 0 {
		// What stays: the archives not doomed, and the pinned ones,
		// doomed or not, which cannot be deleted now.
		var total int64
		for _, a := range list {
			if !doomed[a.Name] || s.pins.pinned(a.Name) {
				total += a.Size
			}
		}
		for _, a := range list {
			if total <= pol.MaxBytes {
				break
			}
			if !doomed[a.Name] && !s.pins.pinned(a.Name) {
				doomed[a.Name] = true
				total -= a.Size
			}
		}
	}
	var deleted []string
	var errs []error
	for _, a := range list {
		if !doomed[a.Name] || s.pins.pinned(a.Name) {
			continue
		}
		switch err := s.remove(filepath.Join(s.dir, a.Name)); {
		case err == nil:
			deleted = append(deleted, a.Name)
		case errors.Is(err, fs.ErrNotExist): // deleted meanwhile
		default:
			errs = append(errs, fmt.Errorf("retention: delete %s: %w", a.Name, err))
		}
	}
	return deleted, errors.Join(errs...)
}
