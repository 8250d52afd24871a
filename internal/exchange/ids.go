package exchange

import (
	"iter"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
)

// idLedger counts, per req_id, the requests that passed every check, to tell whether
// each request was done exactly once. It holds at most max ids; ids past the bound
// are counted as untracked.
//
// An id in the canonical form of a UUID (how ratefleet and most clients make
// req_ids) is kept as its 16 bytes, with its count and first time beside it: about
// 50 bytes an id, and nothing the garbage collector has to scan. A full ledger (the
// default million ids, reached in under ten minutes at 2,000 requests a second)
// then adds no work to a collection. Kept as strings, the ids grew the live heap
// by about 230 bytes a request, all of it marked by every collection, and the
// requests that arrived meanwhile were read late: late enough to swap two of a
// key's nonces. Any other id is kept as text.
type idLedger struct {
	mu         sync.Mutex
	max        int
	uuids      map[uuid.UUID]idEntry
	other      map[string]idEntry
	duplicates int // ids done more than once
	untracked  uint64
	// again is when each id done more than once was done, the first time
	// included: an audit matches them with the faults that can cause a repeat.
	again map[string][]time.Time
}

// idEntry is what the ledger knows of one id.
type idEntry struct {
	n     uint32 // times done
	first int64  // Unix ns of the first time
}

func newIDLedger(limit int) *idLedger {
	l := &idLedger{max: limit}
	l.clear()
	return l
}

// clear empties the ledger; the caller holds mu or owns l.
func (l *idLedger) clear() {
	l.uuids, l.other, l.again = map[uuid.UUID]idEntry{}, map[string]idEntry{}, map[string][]time.Time{}
	l.duplicates, l.untracked = 0, 0
}

// canonicalUUID returns id as a UUID if it is one in canonical form: 36
// characters, hyphens at 8, 13, 18 and 23 and lower-case hex elsewhere, the one
// form that its 16 bytes give back exactly (uuid.UUID.String). uuid.Parse
// checks all but the case.
func canonicalUUID(id string) (uuid.UUID, bool) {
	if len(id) != 36 || strings.ContainsAny(id, "ABCDEF") {
		return uuid.UUID{}, false
	}
	u, err := uuid.Parse(id)
	return u, err == nil
}

func (l *idLedger) record(id string, at time.Time) {
	u, isUUID := canonicalUUID(id)
	l.mu.Lock()
	defer l.mu.Unlock()
	var (
		e  idEntry
		ok bool
	)
	if isUUID {
		e, ok = l.uuids[u]
	} else {
		e, ok = l.other[id]
	}
	if !ok && l.len() >= l.max {
		l.untracked++
		return
	}
	e.n++
	switch e.n {
	case 1:
		e.first = at.UnixNano()
	case 2:
		l.duplicates++
		l.again[id] = []time.Time{time.Unix(0, e.first), at}
	default:
		l.again[id] = append(l.again[id], at)
	}
	if isUUID {
		l.uuids[u] = e
	} else {
		l.other[id] = e
	}
}

// len is the number of distinct ids; the caller holds mu.
func (l *idLedger) len() int { return len(l.uuids) + len(l.other) }

// all yields every id with the times it was done; the caller holds mu.
func (l *idLedger) all() iter.Seq2[string, int] {
	return func(yield func(string, int) bool) {
		for u, e := range l.uuids {
			if !yield(u.String(), int(e.n)) {
				return
			}
		}
		for id, e := range l.other {
			if !yield(id, int(e.n)) {
				return
			}
		}
	}
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
	return l.len(), l.duplicates, l.untracked
}

// lists returns the sorted ids, and those done more than once.
func (l *idLedger) lists() (ids, duplicates []string) {
	l.mu.Lock()
	ids = make([]string, 0, l.len())
	for id, n := range l.all() {
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
	out := make(map[string]int, l.len())
	for id, n := range l.all() {
		out[id] = n
	}
	return out
}

func (l *idLedger) reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.clear()
}
