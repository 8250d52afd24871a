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
	slots [latenessSlots]struct {
		start int64 // the slot's start, in latenessSlot units since the epoch
		max   time.Duration
	}
}

// Add notes that the process was d late at at.
func (x *Lateness) Add(at time.Time, d time.Duration) {
	n := at.UnixNano() / int64(latenessSlot)
	x.mu.Lock()
	defer x.mu.Unlock()
	s := &x.slots[n%latenessSlots]
	if s.start != n {
		s.start, s.max = n, 0
	}
	s.max = max(s.max, d)
}

// Max returns the longest lateness noted in the span before at.
func (x *Lateness) Max(at time.Time) time.Duration {
	n := at.UnixNano() / int64(latenessSlot)
	var m time.Duration
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, s := range x.slots {
		if s.start > n-latenessSlots && s.start <= n {
			m = max(m, s.max)
		}
	}
	return m
}
