// Package baseline holds the pacers the limiter is measured against, behind the
// same methods the worker drives, so a worker can swap one in for a benchmark:
//
//   - "interval-ring", the seed's first design: a fixed interval of W/N between
//     sends (50 ms), and a ring of the last N send times: a send leaves only if
//     now minus the oldest is more than W, both in whole milliseconds.
//   - "ring-buffer", the seed's second design: the ring of the last N send times
//     with an adaptive buffer: a send leaves only if now minus the oldest is more
//     than W plus the buffer, which starts at 30 ms (3% of W), grows by 10 ms on
//     a 429 up to 50 ms (5% of W) and shrinks by 1 ms on every answer down to
//     30 ms again. No interval: a free window's sends leave at once, together.
//   - "rate-burst1" and "rate-burst20": golang.org/x/time/rate's token bucket at
//     N/W a second (20/s) with a burst of 1 and of N. Next reserves the next
//     send's token with ReserveN at the time given, as rate.Limiter.Wait does.
//
// None of them knows when a request arrived: they space sends, which is why
// varying delays get them rejected, and pipelined sends arrive out of order. Each
// counts its 429s and, like the limiter, refuses to send once a guard threshold
// is reached (3 by default), so a benchmark cannot get a key blocked.
//
// They ignore Wrote, Lost, Unsent and Late, and count a send of any weight as
// one send. Their handoff records their state for inspection;
// a baseline always starts empty.
package baseline

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ratefleet/ratefleet/internal/limiter"
)

// Pacer decides when the next request of one key may leave and learns from what
// happened, with the methods of limiter.Limiter, which implements it too. A
// baseline counts sends, not weights: a send of any weight is one send to it.
type Pacer interface {
	design
	// NextN is Next for a send of weight w.
	NextN(now time.Time, w int) time.Time
	// SentN is Sent for a send of weight w.
	SentN(now time.Time, w int) (limiter.Ticket, error)
	// Evidence returns what the pacer has learned; a baseline knows only its
	// delay (MaxDelay).
	Evidence() limiter.Evidence
}

// The baselines' names.
const (
	IntervalRing = "interval-ring"
	RingBuffer   = "ring-buffer"
	RateBurst1   = "rate-burst1"
	RateBurst20  = "rate-burst20"
)

// ErrUnknown is wrapped by the error New returns for a name it does not know.
var ErrUnknown = errors.New("unknown baseline")

// Names returns the baselines' names.
func Names() []string { return []string{IntervalRing, RingBuffer, RateBurst1, RateBurst20} }

// Options configures a baseline. The zero value is the reference upstream's.
type Options struct {
	// Rule is the upstream's rule; limiter.DefaultRule when zero. Intervals and
	// buffers scale with it: 50 ms and 30..50 ms are W/N and 3..5% of W.
	Rule limiter.Rule
	// GuardThreshold is how many 429s make the pacer refuse to send;
	// limiter.DefaultGuardThreshold when 0, never when negative.
	GuardThreshold int
}

// New returns the named baseline for the reference upstream. The error for an
// unknown name wraps ErrUnknown and lists the valid names.
func New(name string) (Pacer, error) { return NewWith(name, Options{}) }

// NewWith returns the named baseline with options; see New.
func NewWith(name string, o Options) (Pacer, error) {
	if o.Rule == (limiter.Rule{}) {
		o.Rule = limiter.DefaultRule
	}
	if o.Rule.Limit < 1 || o.Rule.Window < time.Millisecond {
		return nil, fmt.Errorf("baseline %s: rule %v: want at least 1 request per at least 1ms", name, o.Rule)
	}
	g := guard{threshold: o.GuardThreshold}
	switch {
	case g.threshold == 0:
		g.threshold = limiter.DefaultGuardThreshold
	case g.threshold < 0:
		g.threshold = 0
	}
	switch name {
	case IntervalRing:
		return unweighted{newIntervalRing(o.Rule, g)}, nil
	case RingBuffer:
		return unweighted{newRingBuffer(o.Rule, g)}, nil
	case RateBurst1:
		return unweighted{newTokenBucket(name, o.Rule, 1, g)}, nil
	case RateBurst20:
		return unweighted{newTokenBucket(name, o.Rule, o.Rule.Limit, g)}, nil
	}
	return nil, fmt.Errorf("%w %q: want one of %s", ErrUnknown, name, strings.Join(Names(), ", "))
}

// design is what each baseline implements itself; unweighted makes a Pacer of it.
type design interface {
	// Next returns the earliest instant, not before now, the next send may leave.
	// It changes nothing.
	Next(now time.Time) time.Time
	// Late notes that a send the caller waited for left d after the instant
	// Next gave.
	Late(at time.Time, d time.Duration)
	// Sent records a send at now, or fails with limiter.ErrTooEarly or
	// limiter.ErrQuarantined.
	Sent(now time.Time) (limiter.Ticket, error)
	// Wrote records that the request finished leaving at at.
	Wrote(t limiter.Ticket, at time.Time)
	// Answered records an answer other than a 429 at at.
	Answered(t limiter.Ticket, at time.Time)
	// Inverted records a 400 at at: the request's nonce arrived after a later one.
	Inverted(t limiter.Ticket, at time.Time)
	// Lost records that no answer came back; the caller gave up at at.
	Lost(t limiter.Ticket, at time.Time)
	// Unsent records that the request never began to leave.
	Unsent(t limiter.Ticket, at time.Time)
	// LostUntil is Lost for a request that may still arrive until until (a
	// gateway answered for the upstream).
	LostUntil(t limiter.Ticket, at, until time.Time)
	// Rejected records a 429 at at, with the upstream's Retry-After.
	Rejected(t limiter.Ticket, at time.Time, retryAfter time.Duration)
	// Quarantined reports whether the pacer refuses to send after too many 429s.
	Quarantined() bool
	// MaxDelay returns the one-way delay (or the buffer standing for it) assumed.
	MaxDelay() time.Duration
	// LastRejection returns the latest 429 and true, or false if there was none;
	// a baseline knows only how many it had.
	LastRejection() (limiter.Rejection, bool)
	// Handoff returns the pacer's state as JSON.
	Handoff() (json.RawMessage, error)
}

// unweighted is a baseline as a Pacer: it counts sends, not weights, and
// learns nothing but its own delay.
type unweighted struct{ design }

// NextN is Next: a baseline counts sends, not weights.
func (p unweighted) NextN(now time.Time, _ int) time.Time { return p.Next(now) }

// SentN is Sent: a baseline counts sends, not weights.
func (p unweighted) SentN(now time.Time, _ int) (limiter.Ticket, error) { return p.Sent(now) }

// Evidence reports the delay the baseline assumes; it learns nothing else.
func (p unweighted) Evidence() limiter.Evidence {
	d := p.MaxDelay()
	return limiter.Evidence{MaxDelay: d, OrderDelay: d, BaseDelay: d}
}

// guard counts 429s and trips at its threshold (never when 0).
type guard struct {
	threshold, count int
}

func (g *guard) rejected() { g.count++ }

// LastRejection reports the guard's count of 429s, the only thing a baseline
// keeps of them.
func (g *guard) LastRejection() (limiter.Rejection, bool) {
	return limiter.Rejection{Count: g.count, Quarantined: g.Quarantined()}, g.count > 0
}

// Quarantined reports whether the guard has tripped.
func (g *guard) Quarantined() bool { return g.threshold > 0 && g.count >= g.threshold }

// check returns the error for a send at now when the next may leave at next.
func (g *guard) check(next, now time.Time) error {
	switch {
	case g.Quarantined():
		return limiter.ErrQuarantined
	case now.Before(next):
		return tooEarly(next)
	}
	return nil
}

func tooEarly(next time.Time) error {
	return fmt.Errorf("%w: next send at %s", limiter.ErrTooEarly, next.Format(time.RFC3339Nano))
}

// handoff is a baseline's state, for inspection.
type handoff struct {
	Baseline   string      `json:"baseline"`
	Sends      []time.Time `json:"sends,omitempty"`
	Buffer     string      `json:"buffer,omitempty"`
	Rejections int         `json:"rejections,omitempty"`
}

func (h handoff) encode() (json.RawMessage, error) {
	data, err := json.Marshal(h)
	if err != nil {
		return nil, fmt.Errorf("encode %s state: %w", h.Baseline, err)
	}
	return data, nil
}

// ring keeps the last len(times) send times.
type ring struct {
	times []time.Time
	n     int // sends so far
}

func newRing(size int) ring { return ring{times: make([]time.Time, size)} }

// full reports whether the ring holds a whole window of sends.
func (r *ring) full() bool { return r.n >= len(r.times) }

// oldest returns the send the next one is measured against: the N-th previous.
func (r *ring) oldest() time.Time { return r.times[r.n%len(r.times)] }

// last returns the latest send.
func (r *ring) last() time.Time { return r.times[(r.n-1)%len(r.times)] }

func (r *ring) add(t time.Time) {
	r.times[r.n%len(r.times)] = t
	r.n++
}

// sends returns the kept sends, oldest first.
func (r *ring) sends() []time.Time {
	k := min(r.n, len(r.times))
	out := make([]time.Time, 0, k)
	for i := r.n - k; i < r.n; i++ {
		out = append(out, r.times[i%len(r.times)])
	}
	return out
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
