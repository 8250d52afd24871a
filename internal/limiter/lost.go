package limiter

import "time"

// LostUntil records that no answer of the upstream's own came back and that the
// caller gave up at at, and that the request may still arrive as late as until:
// a gateway in front of the upstream answered for it (a 502, 503 or 504, or an
// answer not in the upstream's format) and may pass it on later. Its bound is then
// the later of until and what Lost gives, whatever L becomes, and the sends after
// it wait for it as for any bound.
func (l *Limiter) LostUntil(t Ticket, at, until time.Time) {
	l.observe(at)
	r := l.open(t)
	if r == nil {
		return
	}
	l.lost(r, t.seq, at)
	r.by, r.late = later(until, r.left.Add(l.maxDelay)), true
	l.refloor(t.seq)
	l.spread(t)
}
