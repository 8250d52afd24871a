package exchange

import (
	"maps"
	"slices"
	"sync"
	"time"
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
	// first is when each id was first done (Unix ns), and again when each id
	// done more than once was done after that: an audit matches them with the
	// faults that can cause a repeat.
	first map[string]int64
	again map[string][]time.Time
}

func newIDLedger(limit int) *idLedger {
	return &idLedger{max: limit, done: map[string]int{}, first: map[string]int64{}, again: map[string][]time.Time{}}
}

func (l *idLedger) record(id string, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n, ok := l.done[id]
	if !ok && len(l.done) >= l.max {
		l.untracked++
		return
	}
	l.done[id] = n + 1
	if n == 0 {
		l.first[id] = at.UnixNano()
		return
	}
	if n == 1 {
		l.duplicates++
		l.again[id] = []time.Time{time.Unix(0, l.first[id])}
	}
	l.again[id] = append(l.again[id], at)
}

// duplicateTimes returns, for each id done more than once, when it was done.
func (l *idLedger) duplicateTimes() map[string][]time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string][]time.Time, len(l.again))
	for id, ts := range l.again {
		out[id] = slices.Clone(ts)
	}
	return out
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
	l.first, l.again = map[string]int64{}, map[string][]time.Time{}
}
