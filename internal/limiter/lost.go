package limiter

import "time"

// LostUntil records that no answer of the upstream's own came back and that the
// caller gave up at at, and that the request may still arrive as late as until:
// a gateway in front of the upstream answered for it (a 502, 503 or 504, or an
// answer not in the upstream's format) and may pass it on until then. Its window
// bound is then the later of until and left + L; the order rule does not wait for
// it (a request passed on that late is overtaken, and refused alone).
func (l *Limiter) LostUntil(t Ticket, at, until time.Time) {
	l.init()
	l.observe(at)
	r := l.open(t)
	if r == nil {
		return
	}
	r.until = later(until, later(at, r.sent))
	l.giveUp(r, at)
}

// Unsent records that the request never began to leave (the transport refused
// before a byte went out): it cannot arrive, and holds no place. A request
// already reported written cannot be unsent: it is taken as Lost at at.
func (l *Limiter) Unsent(t Ticket, at time.Time) {
	l.init()
	l.observe(at)
	r := l.open(t)
	switch {
	case r == nil:
		return
	case r.hasLeft:
		l.giveUp(r, at)
		return
	}
	r.fate = unsent
	l.ended(r)
}
