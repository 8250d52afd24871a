package limiter

import (
	"math"
	"slices"
	"time"
)

// Fixed windows
//
// A Fixed rule (N, W) counts the units arriving in each calendar interval
// [kW + φ, (k+1)W + φ) of the upstream, restarting at 0 at each boundary; φ,
// where the upstream's intervals start on this process's wall clock, is known
// only within |φ| ≤ E (Config.ClockOffset). With e = E + M in whole ms rounded
// up (at most ⌈W/2⌉: an offset of W/2 either way covers every alignment), a unit
// of send i, which arrives in [lo_i, ub_i] (lo_i = s_i, its send time; unknown
// for a send restored from a previous holder), falls in an interval
//
//	k ∈ [⌊(lo_i − e)/W⌋, ⌊(ub_i + e)/W⌋],
//
// and a send m at t arrives at a_m ≥ t, in an interval k ≥ k_0 = ⌊(t − e)/W⌋.
// With Cnt(k) the units of earlier sends whose range holds k, the rule allows
// the send at t when
//
//	Cnt(k) + w_m ≤ N for every k ≥ k_0.
//
// Every later interval is checked, not only k_0: m itself may arrive late. Safe:
// take the units that arrive in any one interval K, and m the latest send among
// them. When m was sent, K ≥ k_0, and every earlier unit arriving in K had K in
// its range, since its bounds held (the same bounds as (a), valid until the
// request can no longer arrive): the interval holds at most Cnt(K) + w_m ≤ N.
// As k_0 grows with t, the condition, once true, stays true: the earliest such
// t is e after the start of the interval that follows the last one too full.
//
// The sliding window (a) for (N, W) proves the same thing another way: its send
// m arrives at least W + 1 ms after every earlier unit but the N − w_m latest,
// so no interval of length W, wherever it starts, holds more than N of the
// units with m. A Fixed rule therefore allows a send when either test does
// (each set of units is decided by its latest send, whichever test let it
// leave): it is never slower than the sliding window, and where 2e + L fits in
// W it sends N at the start of every interval (plus e), N per W, the most the
// upstream allows, where the sliding window's cycle is W + 1 ms + M + E[ub − s].
//
// Each arrival is placed on this process's wall clock (the intervals are
// calendar time), so a step of the wall clock moves the intervals: e covers it
// only up to E.

// fixedAt returns the earliest instant a Fixed rule's interval count allows a
// send of w units, by where the sends before it may arrive; the zero time when
// it allows one at any instant, and forever when none until a send ends.
func (l *Limiter) fixedAt(r rule, bs []arrival, w int) time.Time {
	win := r.Window.Milliseconds()
	e := r.edge
	if l.off.has(offFixedOffset) {
		e = min(ceilMs(l.set.margin), (win+1)/2)
	}
	most := r.Limit - w
	evs := l.fixedScratch[:0]
	endless := 0 // units counting in every interval from some point on
	for _, b := range bs {
		lo := int64(math.MinInt64) // restored: it may have arrived at any time before its bound
		if !b.lo.IsZero() {
			lo = floorDiv(b.lo.UnixMilli()-e, win)
		}
		evs = append(evs, countChange{k: lo, d: b.units})
		hi := b.ub
		if l.off.has(offFixedSpan) && !b.lo.IsZero() {
			hi = b.lo
		}
		if !hi.Before(forever) {
			endless += b.units
			continue
		}
		evs = append(evs, countChange{k: floorDiv(hi.UnixMilli()+e, win) + 1, d: -b.units})
	}
	l.fixedScratch = evs
	if endless > most {
		return forever
	}
	slices.SortFunc(evs, func(a, b countChange) int {
		switch {
		case a.k < b.k:
			return -1
		case a.k > b.k:
			return 1
		}
		return 0
	})
	// Sweep the intervals: the count is constant from one change to the next.
	full, found := int64(0), false
	n := 0
	for j := 0; j < len(evs); {
		k := evs[j].k
		for j < len(evs) && evs[j].k == k {
			n += evs[j].d
			j++
		}
		if n > most && j < len(evs) {
			full, found = evs[j].k-1, true // too full up to the next change
		}
	}
	if !found {
		return time.Time{}
	}
	return time.UnixMilli((full+1)*win + e).UTC()
}

// countChange is a change of a fixed rule's count, from interval k on.
type countChange struct {
	k int64
	d int
}

// floorDiv is a / b rounded down, for b > 0.
func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && a < 0 {
		q--
	}
	return q
}
