package limiter

import (
	"sync"
	"time"
)

// latenessSpan is about how long a Lateness remembers a late timer: it keeps
// latenessSlots slots of latenessSlot each, the newest being the current one, so
// between 1.75 and 2 s.
const (
	latenessSpan  = 2 * time.Second
	latenessSlots = 8
	latenessSlot  = latenessSpan / latenessSlots
)

// Lateness is how late a process has been of late, shared by the limiters of
// all the keys it holds (Config.Lateness). Lateness belongs to the process and
// its machine, not to one key: with many keys, every key's timers are samples
// of it, and a key whose own recent sends happened to be on time still learns
// that the machine is busy. Its methods are safe for concurrent use; like the
// limiter, it takes the time from its caller.
type Lateness struct {
	mu    sync.Mutex
	slots [latenessSlots]lateSlot
}

// lateSlot is what a Lateness noted in one slot of time.
type lateSlot struct {
	start  int64 // the slot's start, in latenessSlot units since the epoch
	max    time.Duration
	loaded bool // the machine's cores were busy (Loaded)
}

// Add notes that the process was d late at at.
func (x *Lateness) Add(at time.Time, d time.Duration) {
	n := at.UnixNano() / int64(latenessSlot)
	x.mu.Lock()
	defer x.mu.Unlock()
	s := x.slot(n)
	s.max = max(s.max, d)
}

// Loaded notes that the machine's cores were busy at at (internal/host watches
// them): whatever shares the machine with this process, an upstream or a proxy
// on the same box, may then be late by more than this process's own timers
// show, and the limiters take the machine as busy (see the package doc).
func (x *Lateness) Loaded(at time.Time) {
	n := at.UnixNano() / int64(latenessSlot)
	x.mu.Lock()
	defer x.mu.Unlock()
	x.slot(n).loaded = true
}

// slot returns slot n, emptied if it held an older one; called with mu held.
func (x *Lateness) slot(n int64) *lateSlot {
	s := &x.slots[n%latenessSlots]
	if s.start != n {
		*s = lateSlot{start: n}
	}
	return s
}

// WasLoaded reports whether Loaded was noted in the span before at.
func (x *Lateness) WasLoaded(at time.Time) bool {
	_, loaded := x.recent(at)
	return loaded
}

// Max returns the longest lateness noted in the span before at.
func (x *Lateness) Max(at time.Time) time.Duration {
	longest, _ := x.recent(at)
	return longest
}

// recent returns, in one look at the span before at, the longest lateness noted
// there and whether Loaded was.
func (x *Lateness) recent(at time.Time) (longest time.Duration, loaded bool) {
	n := at.UnixNano() / int64(latenessSlot)
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, s := range x.slots {
		if s.start > n-latenessSlots && s.start <= n {
			longest, loaded = max(longest, s.max), loaded || s.loaded
		}
	}
	return longest, loaded
}
