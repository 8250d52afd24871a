package baseline

import (
	"encoding/json"
	"time"

	"github.com/ratefleet/ratefleet/internal/limiter"
)

// ringBuffer is the seed's second design: no send within the window plus an
// adaptive buffer of the N-th previous send, by send times only.
type ringBuffer struct {
	rule         limiter.Rule
	low, high    time.Duration // the buffer's range: 3% and 5% of W
	grow, shrink time.Duration // its steps on a 429 and on an answer
	buffer       time.Duration
	sends        ring
	guard
}

func newRingBuffer(r limiter.Rule, g guard) *ringBuffer {
	low, high := r.Window*3/100, r.Window*5/100
	return &ringBuffer{
		rule: r, low: low, high: high, grow: (high - low) / 2, shrink: (high - low) / 20,
		buffer: low, sends: newRing(r.Limit), guard: g,
	}
}

// Next returns now, or once the ring is full, the N-th previous send plus W plus
// the buffer, and a nanosecond: now - oldest > W + buffer.
func (p *ringBuffer) Next(now time.Time) time.Time {
	if p.Quarantined() || !p.sends.full() {
		return now
	}
	return later(now, p.sends.oldest().Add(p.rule.Window+p.buffer+time.Nanosecond))
}

// Sent records a send at now.
func (p *ringBuffer) Sent(now time.Time) (limiter.Ticket, error) {
	if err := p.check(p.Next(now), now); err != nil {
		return limiter.Ticket{}, err
	}
	p.sends.add(now)
	return limiter.Ticket{}, nil
}

// Wrote does nothing: the design looks at send times only.
func (p *ringBuffer) Wrote(limiter.Ticket, time.Time) {}

// Answered shrinks the buffer toward its low end.
func (p *ringBuffer) Answered(limiter.Ticket, time.Time) {
	p.buffer = max(p.low, p.buffer-p.shrink)
}

// Lost does nothing.
// Inverted treats a 400 as an answer; the baseline learns nothing from it.
func (p *ringBuffer) Inverted(t limiter.Ticket, at time.Time) { p.Answered(t, at) }

func (p *ringBuffer) Lost(limiter.Ticket, time.Time) {}

// LostUntil does nothing: the baseline does not track arrivals.
func (p *ringBuffer) LostUntil(limiter.Ticket, time.Time, time.Time) {}

// Rejected grows the buffer toward its high end and counts the 429.
func (p *ringBuffer) Rejected(limiter.Ticket, time.Time, time.Duration) {
	p.buffer = min(p.high, p.buffer+p.grow)
	p.rejected()
}

// MaxDelay returns the buffer, the design's allowance for delays.
func (p *ringBuffer) MaxDelay() time.Duration { return p.buffer }

// Handoff returns the ring of send times and the buffer.
func (p *ringBuffer) Handoff() (json.RawMessage, error) {
	return handoff{Baseline: RingBuffer, Sends: p.sends.sends(), Buffer: p.buffer.String(), Rejections: p.count}.encode()
}

// Late is ignored.
func (p *ringBuffer) Late(time.Time, time.Duration) {}

// Unsent is ignored.
func (p *ringBuffer) Unsent(limiter.Ticket, time.Time) {}
