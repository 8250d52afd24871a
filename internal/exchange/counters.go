package exchange

import (
	"math"
	"time"
)

// counter is one instance of a rule: the counts of one key, one account or the
// whole upstream. Times are Unix milliseconds. Its owner serializes calls.
type counter interface {
	// usage returns the units counted at t.
	usage(t int64) float64
	// room reports whether n more units fit at t, and if not, how long until they
	// would (if nothing else is charged).
	room(t, n int64) (ok bool, wait time.Duration)
	// add counts n units at t.
	add(t, n int64)
	// reset returns how long from t until the counter is back to 0.
	reset(t int64) time.Duration
}

func newCounter(r Rule) counter {
	switch r.Kind {
	case Fixed:
		return &fixedCounter{window: r.Window.Milliseconds(), limit: r.Limit, start: math.MinInt64}
	case Bucket:
		return &bucketCounter{capacity: float64(r.Limit), perMS: r.Rate / 1000}
	default:
		return &slidingCounter{window: r.Window.Milliseconds(), limit: r.Limit}
	}
}

// slidingCounter keeps the units counted in [t−window, t] as a queue of arrivals.
type slidingCounter struct {
	window, limit int64
	entries       []arrival // oldest first, from head on
	head          int
	sum           int64 // of entries[head:]
}

type arrival struct{ t, n int64 }

func (c *slidingCounter) prune(t int64) {
	for c.head < len(c.entries) && c.entries[c.head].t < t-c.window {
		c.sum -= c.entries[c.head].n
		c.head++
	}
	if c.head > 64 && c.head*2 > len(c.entries) {
		c.entries = append(c.entries[:0], c.entries[c.head:]...)
		c.head = 0
	}
}

func (c *slidingCounter) usage(t int64) float64 {
	c.prune(t)
	return float64(c.sum)
}

func (c *slidingCounter) room(t, n int64) (bool, time.Duration) {
	c.prune(t)
	need := c.sum + n - c.limit
	if need <= 0 {
		return true, 0
	}
	if n > c.limit {
		return false, time.Duration(c.window) * time.Millisecond // never: say one window
	}
	for _, e := range c.entries[c.head:] {
		if need -= e.n; need <= 0 {
			return false, time.Duration(e.t+c.window+1-t) * time.Millisecond
		}
	}
	return false, time.Duration(c.window) * time.Millisecond
}

func (c *slidingCounter) add(t, n int64) {
	c.entries = append(c.entries, arrival{t, n})
	c.sum += n
}

func (c *slidingCounter) reset(t int64) time.Duration {
	c.prune(t)
	if c.head == len(c.entries) {
		return 0
	}
	return time.Duration(c.entries[len(c.entries)-1].t+c.window+1-t) * time.Millisecond
}

// fixedCounter counts the units of the calendar window that holds the last call.
type fixedCounter struct {
	window, limit int64
	start         int64 // of the current window, Unix ms
	count         int64
}

// roll moves the counter to the window that holds t.
func (c *fixedCounter) roll(t int64) {
	start := t - ((t%c.window)+c.window)%c.window
	if start != c.start {
		c.start, c.count = start, 0
	}
}

func (c *fixedCounter) usage(t int64) float64 {
	c.roll(t)
	return float64(c.count)
}

func (c *fixedCounter) room(t, n int64) (bool, time.Duration) {
	c.roll(t)
	if c.count+n <= c.limit {
		return true, 0
	}
	return false, time.Duration(c.start+c.window-t) * time.Millisecond
}

func (c *fixedCounter) add(t, n int64) {
	c.roll(t)
	c.count += n
}

func (c *fixedCounter) reset(t int64) time.Duration {
	c.roll(t)
	if c.count == 0 {
		return 0
	}
	return time.Duration(c.start+c.window-t) * time.Millisecond
}

// bucketCounter is a level that each call raises and time lowers.
type bucketCounter struct {
	capacity float64
	perMS    float64 // units lost a millisecond
	level    float64
	last     int64 // when level was last lowered
}

func (c *bucketCounter) drain(t int64) {
	if t > c.last {
		c.level = max(0, c.level-c.perMS*float64(t-c.last))
		c.last = t
	}
}

func (c *bucketCounter) usage(t int64) float64 {
	c.drain(t)
	return c.level
}

func (c *bucketCounter) room(t, n int64) (bool, time.Duration) {
	c.drain(t)
	over := c.level + float64(n) - c.capacity
	if over <= 1e-9 {
		return true, 0
	}
	return false, time.Duration(math.Ceil(over/c.perMS)) * time.Millisecond
}

func (c *bucketCounter) add(t, n int64) {
	c.drain(t)
	c.level += float64(n)
}

func (c *bucketCounter) reset(t int64) time.Duration {
	c.drain(t)
	return time.Duration(math.Ceil(c.level/c.perMS)) * time.Millisecond
}
