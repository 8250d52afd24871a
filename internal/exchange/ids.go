package exchange

import (
	"maps"
	"slices"
	"sync"
)

// idLedger counts, per req_id, the requests that passed every check, to tell whether
// each request was done exactly once. It holds at most max ids (about 100 bytes each
// for uuid-sized ids): at a fleet's 100 requests a second the default million lasts
// close to three hours. Ids past the bound are counted as untracked.
type idLedger struct {
	mu         sync.Mutex
	max        int
	done       map[string]int
	duplicates int // ids done more than once
	untracked  uint64
}

func newIDLedger(limit int) *idLedger {
	return &idLedger{max: limit, done: map[string]int{}}
}

func (l *idLedger) record(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n, ok := l.done[id]
	if !ok && len(l.done) >= l.max {
		l.untracked++
		return
	}
	l.done[id] = n + 1
	if n == 1 {
		l.duplicates++
	}
}

// totals returns the number of distinct ids, of ids done more than once, and of ids
// past the bound.
func (l *idLedger) totals() (distinct, duplicates int, untracked uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.done), l.duplicates, l.untracked
}

// lists returns the sorted ids, and those done more than once.
func (l *idLedger) lists() (ids, duplicates []string) {
	l.mu.Lock()
	ids = make([]string, 0, len(l.done))
	for id, n := range l.done {
		ids = append(ids, id)
		if n > 1 {
			duplicates = append(duplicates, id)
		}
	}
	l.mu.Unlock()
	slices.Sort(ids)
	slices.Sort(duplicates)
	return ids, duplicates
}

// counts returns a copy of the set: how many times each id was done.
func (l *idLedger) counts() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.done)
}

func (l *idLedger) reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.done, l.duplicates, l.untracked = map[string]int{}, 0, 0
}
