package baseline

import (
	"encoding/json"
	"time"

	"golang.org/x/time/rate"

	"github.com/ratefleet/ratefleet/internal/limiter"
)

// tokenBucket is golang.org/x/time/rate at N/W a second, driven with the time as
// a parameter: Next reserves the token the next send takes (ReserveN), as
// rate.Limiter.Wait does, and Sent uses it once its time has come.
type tokenBucket struct {
	name     string
	lim      *rate.Limiter
	reserved bool      // Next holds a reservation for the next send
	at       time.Time // when the reservation may be used
	guard
}

func newTokenBucket(name string, r limiter.Rule, burst int, g guard) *tokenBucket {
	every := rate.Limit(float64(r.Limit) / r.Window.Seconds())
	return &tokenBucket{name: name, lim: rate.NewLimiter(every, burst), guard: g}
}

// Next returns when the next send's token is there, reserving it.
func (p *tokenBucket) Next(now time.Time) time.Time {
	if p.Quarantined() {
		return now
	}
	if !p.reserved {
		r := p.lim.ReserveN(now, 1) // always OK: the burst is at least 1
		p.reserved, p.at = true, now.Add(r.DelayFrom(now))
	}
	return later(now, p.at)
}

// Sent uses the reserved token at now.
func (p *tokenBucket) Sent(now time.Time) (limiter.Ticket, error) {
	if err := p.check(p.Next(now), now); err != nil {
		return limiter.Ticket{}, err
	}
	p.reserved = false
	return limiter.Ticket{}, nil
}

// Wrote does nothing: the bucket looks at send times only.
func (p *tokenBucket) Wrote(limiter.Ticket, time.Time) {}

// Answered does nothing.
func (p *tokenBucket) Answered(limiter.Ticket, time.Time) {}

// Lost does nothing.
// Inverted treats a 400 as an answer; the baseline learns nothing from it.
func (p *tokenBucket) Inverted(t limiter.Ticket, at time.Time) { p.Answered(t, at) }

func (p *tokenBucket) Lost(limiter.Ticket, time.Time) {}

// LostUntil does nothing: the baseline does not track arrivals.
func (p *tokenBucket) LostUntil(limiter.Ticket, time.Time, time.Time) {}

// Rejected counts the 429 toward the guard.
func (p *tokenBucket) Rejected(limiter.Ticket, time.Time, time.Duration) { p.rejected() }

// MaxDelay returns 0: the bucket assumes no delay.
func (p *tokenBucket) MaxDelay() time.Duration { return 0 }

// Handoff returns the baseline's name and its 429 count.
func (p *tokenBucket) Handoff() (json.RawMessage, error) {
	return handoff{Baseline: p.name, Rejections: p.count}.encode()
}

// Late is ignored.
func (p *tokenBucket) Late(time.Time, time.Duration) {}

// Unsent is ignored.
func (p *tokenBucket) Unsent(limiter.Ticket, time.Time) {}
