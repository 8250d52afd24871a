package limiter

import (
	"math"
	"slices"
	"time"
)

// Buckets
//
// A Bucket rule (capacity C, rate R) is a counter raised by w at each accepted
// arrival of w units and lowered at R a second, never below 0; an arrival is
// refused if it would take the counter above C. Started empty, the counter just
// after t is
//
//	c(t) = max(0, max over s ≤ t of A[s, t] − R·(t − s)),
//
// A[s, t] the units arriving in [s, t] (a queue served at R: the Lindley
// recursion). So no arrival is refused exactly when every interval holds
//
//	A[s, t] ≤ C + R·(t − s)     for all s ≤ t,
//
// and where the upstream decays in steps of T (Rule.Window) or floors arrivals
// to whole ms, the fall over [s, t] is only at least R·(t − s − g), g = T + 1 ms:
// the limiter asks A[s, t] ≤ C + R·(t − s − g − M).
//
// The limiter knows an arrival only within [s_i, ub_i], the bounds of (a), and
// the condition needs only ub_i: a unit arriving in [s, t] has ub_i ≥ s. With
// f(s) the earlier units whose bound is at least s, and t' = t − g − M, a send
// of w units at t is allowed when
//
//	w + f(s) ≤ C + R·(t' − s)     for every s ≤ t'.
//
// Safe: take any interval [s, t''] and m the latest send among the units
// arriving in it, sent at t ≤ a_m ≤ t''. They are at most w + f(s). If s ≤ t',
// that is at most C + R·(t' − s) ≤ C + R·(t'' − s − g − M); if s > t', at most
// w + f(t') ≤ C. The order of arrivals does not matter, only the bounds, which
// hold until a request can no longer arrive: an open request counts at every
// s.
//
// Splitting f(s) into P, the units whose bound is at least t' (they may still
// arrive at t' or after), and those before, the condition reads
//
//	w + P(t') + Q(t') ≤ C,
//
// Q(t') the counter just before t' had every earlier unit arrived on its bound:
// the worst case counter, plus every unit that may still arrive counted at once.
// P + Q only falls as t' grows (a unit moves from P into Q as t' passes its bound,
// and Q drains), so the earliest t is found in one pass over the bounds in order.
// A later bound only ever counts more. So a send forgotten (c) is folded into
// the counter at its hard bound (the latest its bound can become) instead of
// dropped: a seed, Q at an instant T0, every later bound taken no earlier than
// T0. In a busy bucket the counter never empties, and every unit since it last
// did still counts.
//
// A previous holder's sends (Restore, NewFull) are carried as bounds, the
// latest C or more; the counter may have been full (C: the upstream never takes
// it higher) when the oldest of them, u, passed, and every unit arriving after u
// is among them. So a restored bucket starts from Q = C at u, and counts the
// carried units bounded after u.
//
// Cost: the counter falls at R while it holds anything, and the limiter keeps it
// near C at saturation, so after the first C units a key sends R a second: the
// delays shift the sends but cost no rate. Only what the worst case adds to Q
// beyond the truth (an outlier bound by its late answer) costs a little, as it
// does in a window.

// seed is what a Bucket's forgotten sends left: the worst case counter, as the
// time it takes to drain (d), just after at.
type seed struct {
	at time.Time
	d  time.Duration
	// cut: restored sends bounded at or before it are in d already.
	cut time.Time
}

// drainCap caps a bucket's drain times, far beyond any rule (MaxDrain), so the
// arithmetic never overflows.
const drainCap = time.Duration(math.MaxInt64 / 4)

// bucketAt returns the earliest instant rule i, a Bucket, allows a send of w
// units by where the sends before it may arrive; the zero time when it allows
// one at any instant, and forever when none until a send ends.
func (l *Limiter) bucketAt(i int, bs []arrival, w int) time.Time {
	r := l.set.rules[i]
	var sd seed
	if i < len(l.seeds) {
		sd = l.seeds[i]
	}
	gap := r.Window + time.Millisecond + l.set.margin
	// need is how much more the counter may hold at t', as a drain time: C − w
	// less the units that may arrive at any time (in flight).
	need := time.Duration(r.Limit-w) * r.per
	items := l.bucketScratch[:0]
	remaining := time.Duration(0)
	for _, b := range bs {
		if b.prior && !b.ub.After(sd.cut) {
			continue
		}
		ub := b.ub
		if l.off.has(offBucketBound) && !b.lo.IsZero() {
			ub = b.lo
		}
		d := min(time.Duration(b.units)*r.per, drainCap)
		if !ub.Before(forever) {
			need -= d
			continue
		}
		items = append(items, unitBound{ub: ub, units: b.units})
		remaining = min(remaining+d, drainCap)
	}
	l.bucketScratch = items
	if need < 0 {
		return forever
	}
	slices.SortFunc(items, func(a, b unitBound) int { return a.ub.Compare(b.ub) })
	at, q := sd.at, sd.d
	started := !sd.at.IsZero()
	if !started && remaining <= need {
		return time.Time{} // every unit at once fits
	}
	for _, it := range items {
		if !started {
			at, started = it.ub, true
		}
		ub := later(it.ub, at)
		// For t' in [at, ub], P + Q = remaining + max(0, q − (t' − at)).
		if remaining <= need {
			if t := at.Add(max(0, q-(need-remaining))); !t.After(ub) {
				return t.Add(gap)
			}
		}
		d := min(time.Duration(it.units)*r.per, drainCap)
		q = min(max(0, q-ub.Sub(at))+d, drainCap)
		at = ub
		remaining -= d
	}
	return at.Add(max(0, q-need)).Add(gap)
}

// fold adds sends being forgotten, by their hard bounds, to every Bucket's seed.
func (l *Limiter) fold(gone []arrival) {
	if len(gone) == 0 || !l.set.buckets {
		return
	}
	slices.SortFunc(gone, func(a, b arrival) int { return a.ub.Compare(b.ub) })
	l.growSeeds()
	for i, r := range l.set.rules {
		if r.Kind != Bucket {
			continue
		}
		sd := &l.seeds[i]
		for _, b := range gone {
			if b.prior && !b.ub.After(sd.cut) {
				continue // in the restored counter already
			}
			ub := b.ub
			if sd.at.IsZero() {
				sd.at = ub
			}
			ub = later(ub, sd.at)
			sd.d = min(max(0, sd.d-ub.Sub(sd.at))+time.Duration(b.units)*r.per, drainCap)
			sd.at = ub
		}
	}
}

// seedFull starts every Bucket full at u: a previous holder's counter may have
// been full then, and the sends restored after u count on top.
func (l *Limiter) seedFull(u time.Time) {
	if !l.set.buckets {
		return
	}
	l.growSeeds()
	for i, r := range l.set.rules {
		if r.Kind == Bucket {
			l.seeds[i] = seed{at: u, d: time.Duration(r.Limit) * r.per, cut: u}
		}
	}
	l.changes++
}

func (l *Limiter) growSeeds() {
	if len(l.seeds) < len(l.set.rules) {
		l.seeds = make([]seed, len(l.set.rules))
	}
}

// raised returns ub raised to the latest instant a Bucket's seed holds: a
// State carries no seed, so the bounds it carries must hold every unit that
// may arrive after the oldest of them (see Restore).
func (l *Limiter) raised(ub time.Time) time.Time {
	for _, sd := range l.seeds {
		ub = later(ub, sd.at)
	}
	return ub
}
