package limiter

import (
	"fmt"
	"time"
)

// Weights
//
// Where the upstream counts weights (a request of weight w takes w units of every
// window), a send of weight w is one record of w units with one send time and one
// fate: invariant (a) of the package doc counts its bound w times, and a send of
// w units needs the (N − w + 1)-th latest unit bound before it to have aged out of
// every window. A weight above the smallest rule's Limit could never be sent.

// NextN is Next for a send of weight w (at least 1). It changes nothing.
func (l *Limiter) NextN(now time.Time, w int) time.Time {
	l.init()
	if l.quarantine {
		return now
	}
	return later(now, l.earliest(now, max(w, 1)))
}

// SentN is Sent for a send of weight w: it records w units at now. It returns
// an error wrapping ErrTooEarly if now is before NextN(now, w), ErrQuarantined
// once the ban guard has tripped, and ErrInvalidConfig for a weight the rules
// cannot hold (below 1 or above the smallest rule's Limit).
func (l *Limiter) SentN(now time.Time, w int) (Ticket, error) {
	l.init()
	if err := l.checkWeight(w); err != nil {
		return Ticket{}, err
	}
	if l.quarantine {
		return Ticket{}, ErrQuarantined
	}
	if next := l.earliest(now, w); now.Before(next) {
		return Ticket{}, fmt.Errorf("%w: next send of weight %d at %s, in %v", ErrTooEarly, w, next.Format(time.RFC3339Nano), next.Sub(now))
	}
	l.lagged(now, l.pendingLate) // a sample even when on time: the busy rule counts shares
	l.pendingLate = 0
	return l.charge(now, w), nil
}

// charge records w units sent at now, whatever the windows say: SentN once it
// has checked them, and a Set for a cost the upstream counted once it answered.
func (l *Limiter) charge(now time.Time, w int) Ticket {
	l.overdue(now)
	l.forget(now)
	l.sends++
	l.recs = append(l.recs, record{seq: l.sends, units: w, sent: now})
	l.inFlight = append(l.inFlight, l.sends)
	l.changes++
	l.latest = later(l.latest, now)
	return Ticket{owner: l, seq: l.sends}
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
