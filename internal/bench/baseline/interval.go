package baseline

import (
	"encoding/json"
	"time"

	"github.com/ratefleet/ratefleet/internal/limiter"
)

// intervalRing is the seed's first design: a fixed interval between sends, and no
// send within the window of the N-th previous send, by send times only.
type intervalRing struct {
	rule     limiter.Rule
	interval time.Duration
	sends    ring // send times, in whole ms
	guard
}

func newIntervalRing(r limiter.Rule, g guard) *intervalRing {
	return &intervalRing{rule: r, interval: r.Window / time.Duration(r.Limit), sends: newRing(r.Limit), guard: g}
}

// Next returns the later of the last send plus the interval and the N-th previous
// send plus W + 1 ms: in whole ms, now - oldest > W.
func (p *intervalRing) Next(now time.Time) time.Time {
	if p.Quarantined() || p.sends.n == 0 {
		return now
	}
	t := later(now, p.sends.last().Add(p.interval))
	if p.sends.full() {
		t = later(t, p.sends.oldest().Add(p.rule.Window+time.Millisecond))
	}
	return t
}

// Sent records a send at now.
func (p *intervalRing) Sent(now time.Time) (limiter.Ticket, error) {
	if err := p.check(p.Next(now), now); err != nil {
		return limiter.Ticket{}, err
	}
	p.sends.add(now.Truncate(time.Millisecond))
	return limiter.Ticket{}, nil
}

// Wrote does nothing: the design looks at send times only.
func (p *intervalRing) Wrote(limiter.Ticket, time.Time) {}

// Answered does nothing.
func (p *intervalRing) Answered(limiter.Ticket, time.Time) {}

// Lost does nothing.
// Inverted treats a 400 as an answer; the baseline learns nothing from it.
func (p *intervalRing) Inverted(t limiter.Ticket, at time.Time) { p.Answered(t, at) }

func (p *intervalRing) Lost(limiter.Ticket, time.Time) {}

// LostUntil does nothing: the baseline does not track arrivals.
func (p *intervalRing) LostUntil(limiter.Ticket, time.Time, time.Time) {}

// Rejected counts the 429 toward the guard.
func (p *intervalRing) Rejected(limiter.Ticket, time.Time, time.Duration) { p.rejected() }

// MaxDelay returns 0: the design assumes no delay.
func (p *intervalRing) MaxDelay() time.Duration { return 0 }

// Handoff returns the ring of send times.
func (p *intervalRing) Handoff() (json.RawMessage, error) {
	return handoff{Baseline: IntervalRing, Sends: p.sends.sends(), Rejections: p.count}.encode()
}

// Late is ignored.
func (p *intervalRing) Late(time.Time, time.Duration) {}

// Unsent is ignored.
func (p *intervalRing) Unsent(limiter.Ticket, time.Time) {}
