package limiter

import (
	"fmt"
	"time"
)

// Weights
//
// Where the upstream counts weights (a request of weight w takes w units of every
// window), a send of weight w is recorded as w units with one send time and one
// fate: the invariants of the package doc hold unit by unit, with the unit taking
// the place of the request. The ticket of a weighted send names its last unit,
// and every report on it is copied to the others (spread), so each unit's bound is
// the request's. A weight above the smallest rule's Limit could never be sent.

// NextN is Next for a send of weight w (at least 1).
func (l *Limiter) NextN(now time.Time, w int) time.Time {
	l.init()
	if l.quarantined {
		return now
	}
	return later(now, l.earliestN(now, w))
}

// SentN is Sent for a send of weight w: it records w units at now. It returns
// an error wrapping ErrTooEarly if now is before NextN(now, w), ErrQuarantined
// once the ban guard has tripped, and ErrInvalidConfig for a weight the rules
// cannot hold (below 1 or above the smallest rule's Limit).
func (l *Limiter) SentN(now time.Time, w int) (Ticket, error) {
	l.init()
	if w == 1 {
		return l.Sent(now)
	}
	if err := l.checkWeight(w); err != nil {
		return Ticket{}, err
	}
	if l.quarantined {
		return Ticket{}, ErrQuarantined
	}
	if next := l.earliestN(now, w); now.Before(next) {
		return Ticket{}, fmt.Errorf("%w: next send of weight %d at %s, in %v", ErrTooEarly, w, next.Format(time.RFC3339Nano), next.Sub(now))
	}
	for range w {
		l.sends++
		*l.record(l.sends) = record{sent: now}
	}
	l.latest = later(l.latest, now)
	return Ticket{owner: l, seq: l.sends, units: uint64(w)}, nil
}

// MaxWeight returns the largest weight a send may have: the smallest rule's Limit.
func (l *Limiter) MaxWeight() int {
	l.init()
	return l.set.rules[0].Limit // rules are sorted by Limit
}

func (l *Limiter) checkWeight(w int) error {
	if w < 1 || w > l.MaxWeight() {
		return fmt.Errorf("%w: weight %d: must be from 1 to %d, the smallest rule's limit", ErrInvalidConfig, w, l.MaxWeight())
	}
	return nil
}

// earliestN is earliest for w units: the last of them, sends+w, must keep every
// rule's window from unit sends+w-N.
func (l *Limiter) earliestN(now time.Time, w int) time.Time {
	if w <= 1 {
		return l.earliest(now)
	}
	now = later(now, l.latest)
	t := later(l.pauseUntil, l.notBefore)
	if l.sends == 0 {
		return t
	}
	t = later(t, l.record(l.sends).bound(l.order(), now).Add(orderGap))
	for _, r := range l.set.rules {
		n := uint64(r.Limit)
		if l.sends+uint64(w) <= n {
			continue
		}
		ub := l.record(l.sends+uint64(w)-n).bound(l.window(), now)
		t = later(t, ub.Add(r.Window+time.Millisecond+l.set.margin))
	}
	return t
}

// spread copies the record of t's last unit to its other units still in the ring.
func (l *Limiter) spread(t Ticket) {
	if t.units <= 1 || !l.owns(t) {
		return
	}
	r := *l.record(t.seq)
	l.changes++
	for k := uint64(1); k < t.units && k < t.seq; k++ {
		seq := t.seq - k
		if l.sends-seq >= uint64(len(l.ring)) {
			return
		}
		*l.record(seq) = r
	}
}
