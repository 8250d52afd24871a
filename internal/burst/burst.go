// Package burst decides whether items that come one at a time are worth holding
// for a short window, so that those of the window go out together.
//
// Holding pays only where several more items are likely within the window: at
// a worker's full rate a window of 20 ms gathers tens of results or pulls, and
// NATS takes them together for less work each; a worker with a few keys sends
// a request every 10 to 50 ms, and the same window would only add a timer and a
// wait to every request (a third more CPU in the workers, measured on five keys
// held by five workers with a window of 5 ms held all the time).
package burst

import "time"

// Pace follows the gaps between arrivals, and says whether holding the next one
// for the window is worth it: while the mean gap (a moving average of the last
// few) is shorter than a quarter of the window, four or more arrivals are
// expected within it. Until a gap is seen it takes company as expected. A gap
// counts at most four windows, so a pause of any length is forgotten within a
// few arrivals. The zero value is not ready; use New. A Pace is not safe for
// concurrent use: its owner holds the lock that guards what it paces.
type Pace struct {
	window time.Duration
	last   time.Time
	mean   time.Duration
}

// New returns a Pace for holding up to window.
func New(window time.Duration) *Pace { return &Pace{window: window} }

// Window returns how long an item may be held.
func (p *Pace) Window() time.Duration { return p.window }

// Arrive notes an arrival at t.
func (p *Pace) Arrive(t time.Time) {
	if !p.last.IsZero() {
		gap := min(max(t.Sub(p.last), 0), 4*p.window)
		p.mean += (gap - p.mean) / 4
	}
	p.last = t
}

// Worth reports whether the next arrival is worth holding for the window: the
// mean gap is shorter than a quarter of it.
func (p *Pace) Worth() bool { return p.mean < p.window/4 }

// Hold notes an arrival at t and reports whether to hold it for the window:
// while a burst is already on its way (busy), or another arrival is expected
// within the window (Worth). Otherwise holding it would only add a timer and a
// wait.
func (p *Pace) Hold(t time.Time, busy bool) bool {
	p.Arrive(t)
	return busy || p.Worth()
}
