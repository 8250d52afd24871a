package limiter

import "time"

// horizon is how many recent answers, and recent sends' lateness, the limiter
// remembers as evidence. 64 answers are about 3 s of a saturated key: long enough
// that an isolated late request (one in a hundred) is usually alone in it, short
// enough that a spread is seen, and L raised, within a fraction of a window.
const horizon = 64

// spreadAt is how many requests of the horizon must carry evidence before the
// evidence counts as a spread that moves L. One alone is a spike: its own answer
// bounds it.
const spreadAt = 2

// Evidence is what the limiter has learned from round trips, 400s and its own
// lateness; see the package doc.
type Evidence struct {
	// MaxDelay is L, the one-way delay the window rule assumes now; OrderDelay the
	// one the order rule assumes (at most MaxDelay); BaseDelay the least L may come
	// back down to: the configured delay, or what 429s widened it to.
	MaxDelay, OrderDelay, BaseDelay time.Duration
	// Lag is how late this process has been of late: the longest of its sends'
	// timer lateness and departure times over the horizon. Beyond the tolerance it
	// is added to the window's delay.
	Lag time.Duration
	// Spread reports whether the recent evidence is a spread (L follows the round
	// trips) rather than nothing or an isolated spike.
	Spread bool
	// Outliers counts answers whose round trip exceeded 2 L + tolerance;
	// Inversions counts 400s (nonces that arrived out of order). Both since start.
	Outliers, Inversions uint64
	// Answers counts the answers since start, and Busy those of them that came
	// while the machine counted as busy (the process late, or its cores busy):
	// each of those bounds its own request, which costs a share of the rate
	// (see the package doc). Busy over Answers is why a key runs below its bound
	// on a loaded machine.
	Answers, Busy uint64
	// Recent counts the answers of the horizon that carry evidence.
	Recent int
	// Tolerance is the scheduling noise a round trip may carry beyond 2 L
	// (Config.Tolerance); MaxArrival the arrival horizon H a request given up is
	// held for, raised to the longest round trip seen.
	Tolerance, MaxArrival time.Duration
}

// note is one answer as evidence.
type note struct {
	rt       time.Duration // answered minus left
	evidence bool          // its round trip broke the promise, or it was a 400
}

// learner keeps the horizon of evidence.
type learner struct {
	notes   [horizon]note
	answers uint64
	recent  int // notes with evidence
	lags    [horizon]time.Duration
	lagN    uint64
	lag     time.Duration // max of lags
	spread  bool

	// longestEver is the longest round trip since start: a one-way delay that
	// long has been seen possible, so a lost request is held at least as long.
	longestEver time.Duration

	outliers, inversions uint64
	ended, busy          uint64 // answers since start; those while the machine was busy
	calm                 int    // answers since the last 400, or since the order rule was last eased
}

// add notes n and returns its index, for update.
func (e *learner) add(n note) uint64 {
	slot := &e.notes[e.answers%horizon]
	if e.answers >= horizon && slot.evidence {
		e.recent--
	}
	*slot = n
	e.answers++
	if n.evidence {
		e.recent++
	}
	return e.answers - 1
}

// update replaces note i with n, if it is still in the horizon.
func (e *learner) update(i uint64, n note) {
	if e.answers-i > horizon {
		e.add(n)
		return
	}
	slot := &e.notes[i%horizon]
	if slot.evidence {
		e.recent--
	}
	*slot = n
	if n.evidence {
		e.recent++
	}
}

// longest returns the longest round trip of the horizon.
func (e *learner) longest() time.Duration {
	var m time.Duration
	for _, n := range e.notes[:min(e.answers, horizon)] {
		m = max(m, n.rt)
	}
	return m
}

func (e *learner) addLag(d time.Duration) {
	d = max(d, 0)
	old := e.lags[e.lagN%horizon]
	e.lags[e.lagN%horizon] = d
	e.lagN++
	switch {
	case d >= e.lag:
		e.lag = d
	case old == e.lag:
		e.lag = 0
		for _, x := range e.lags[:min(e.lagN, horizon)] {
			e.lag = max(e.lag, x)
		}
	}
}

// lagged notes how late the process was at one send (0 when on time): its
// timer, or how long leaving took. Lateness beyond a quarter of MaxDelayCeiling
// is not taken for scheduling: a caller that came back after an idle spell, or a
// slow connect.
func (l *Limiter) lagged(at time.Time, d time.Duration) {
	if d < l.set.ceiling/4 {
		l.learn.addLag(d)
		if l.set.lateness != nil && d > 0 {
			l.set.lateness.Add(at, d) // the longest is all it keeps: a 0 changes nothing
		}
	}
}

// answerKind says what came back.
type answerKind int

const (
	answeredKind answerKind = iota // 200 and any other answer that says nothing of order
	inverted                       // 400: a later nonce arrived first
	rejected                       // 429
)

// slack is what the limiter adds to the window's delay for its own lateness: the lag
// beyond the tolerance, which ordinary scheduling noise stays within.
func (l *Limiter) slack() time.Duration { return max(0, l.learn.lag-l.set.tolerance) }

// stressed reports whether the process (this key's sends, or any key's when the
// limiters share a Lateness) has been late by more than half the tolerance of
// late: not enough to widen the delays, but the sign of a busy machine, where
// whatever registers arrivals may be late by more. The longest lateness, not a
// share of late sends: measured on a 2-core box, counting the machine busy only
// when more than one send in 16 was late drew 2 × 429 in 30 s at 50 keys (75 %
// busy) with no regard to each key's own sends, and 4 × 429 at 100 keys (91 %
// busy) with it.
//
// The machine's cores busy (Lateness.Loaded) count as well: a process on one
// core of a loaded machine may stay on time while what shares the machine with
// it (an upstream on the same box) registers arrivals late.
func (l *Limiter) stressed(at time.Time) bool {
	if l.off.has(offBusy) {
		return false
	}
	lag := l.learn.lag
	if x := l.set.lateness; x != nil {
		longest, loaded := x.recent(at)
		if loaded && !l.off.has(offLoaded) {
			return true
		}
		lag = max(lag, longest)
	}
	return 2*lag > l.set.tolerance
}

// window and order return the delays the two rules assume now. The window
// takes the slack and the registration allowance (Config.Registration); the
// order rule takes neither: an inversion costs a 400, which
// raises Lo, where a broken window costs a 429. Measured at 200 keys on a
// saturated 2-core machine, slack in the order rule cost a tenth of the rate
// (0.86 of the bound against 0.95) to spare about 90 × 400 in 30 s.
func (l *Limiter) window() time.Duration {
	if l.off.has(offRegistration) {
		return l.maxDelay + l.slack()
	}
	return l.maxDelay + l.set.register + l.slack()
}
func (l *Limiter) order() time.Duration { return max(l.base, l.orderDelay-l.eased) }

// orderCalm is how many answers in a row without a 400 ease the order rule's
// delay one step back toward the base (a fifth of the way, undoing a quarter's
// raise). A 400 raises it by a quarter, and the round trips that bring it back
// down reach 2L at the reference delays: without easing, each 400 would cost its
// key for the rest of its session (in simulation on a busy machine, a key whose
// order delay three 400s raised to 98 ms kept 0.955 of the bound, against 0.977
// with easing and for a key that never drew a 400). A 400 while eased
// takes the rule back to the delay proven, which the window's L keeps all
// along: the order rule is not what keeps a key from 429s, only from 400s,
// and where the incoming delays do need the longer delay, easing costs one
// 400 in every orderCalm answers or so. (Taking back only a quarter instead
// drew 1,919 × 400 in 20 minutes at 100 keys on a 2-core box, against 1,399,
// for the same share of the bound.)
const orderCalm = 1024

// learnFrom takes the answer to r, which came back at at, as evidence. It is
// called before r is ended.
func (l *Limiter) learnFrom(r *record, at time.Time, kind answerKind) {
	from := r.sent
	if r.hasLeft {
		from = r.left
	}
	rt := at.Sub(from)
	tol := l.set.tolerance
	// The round trip proves that one way took longer than L: the request's bound
	// is its answer, whatever L says.
	outlier := rt > 2*l.window()+tol
	if outlier {
		l.learn.outliers++
	}
	if kind == inverted {
		l.learn.inversions++
	}
	l.learn.longestEver = max(l.learn.longestEver, rt)
	// A process that is late (slack) shares its box, or its network, with
	// whatever registers arrivals late too, by amounts its own lateness does not
	// bound: its answers then bound its requests, whatever L says.
	busy := l.stressed(at)
	l.learn.ended++
	if busy {
		l.learn.busy++
	}
	r.late = (outlier && !l.off.has(offOutlier)) || kind == inverted || busy || r.overdue
	// The horizon judges against the promise (base), not against an L already
	// raised: a raised L must not hide the evidence that raised it. A request
	// already noted while it was overdue has its note brought up to date.
	n := note{rt: rt, evidence: rt > 2*(l.base+l.slack())+tol || kind == inverted}
	if r.overdue {
		l.learn.update(r.note, n)
	} else {
		l.learn.add(n)
	}

	// A 400 that the request's own round trip does not explain (it was not an
	// outlier against the order rule's delay) shows that the order rule's delay is
	// too short for the incoming delays: raise it by a quarter, never past what
	// this request could have taken one way (its round trip); or, where the rule
	// was eased, take it back to the delay proven before.
	if kind == inverted && rt <= 2*l.order()+tol {
		if l.eased > 0 {
			l.eased = 0
		} else {
			l.orderDelay = min(max(l.orderDelay, min(rt, l.orderDelay+l.orderDelay/4)), l.set.ceiling)
		}
	}
	l.ease(kind == inverted)
	l.settle()
}

// ease counts an answer (a 400 when inverted) towards easing the order rule's
// delay: after orderCalm answers in a row without a 400, one step back toward
// the base.
func (l *Limiter) ease(inverted bool) {
	if inverted {
		l.learn.calm = 0
		return
	}
	l.learn.calm++
	if l.learn.calm < orderCalm {
		return
	}
	l.learn.calm = 0
	if o := l.order(); o > l.base {
		l.eased = l.orderDelay - max(l.base, o-o/5)
	}
}

// overdue notes, at now, every request still unanswered 2·base + τ (and the
// slack) after it left: evidence before its answer comes, at its age so far. Its
// answer later brings the note up to date.
func (l *Limiter) overdue(now time.Time) {
	if l.off.has(offOverdue) || len(l.inFlight) == 0 {
		return
	}
	limit := 2*(l.base+l.slack()) + l.set.tolerance
	noted := false
	for _, seq := range l.inFlight {
		r := l.find(Ticket{owner: l, seq: seq})
		if r == nil || !r.hasLeft || r.overdue || now.Sub(r.left) <= limit {
			continue
		}
		r.overdue = true
		r.note = l.learn.add(note{rt: now.Sub(r.left), evidence: true})
		noted = true
	}
	if noted {
		l.settle()
	}
}

// settle sets L from the horizon: the promise (base) while no evidence is in
// sight; the longest recent round trip (a one-way delay is never longer) once
// evidence spreads; unchanged for a lone spike or a lone 400 (whose own request is
// bound by its answer), but never below the order rule's delay, which a 400
// raises. The order rule's delay comes down as the round trips do.
func (l *Limiter) settle() {
	longest := l.learn.longest()
	if l.learn.answers >= horizon {
		l.orderDelay = min(l.orderDelay, max(l.base, longest))
	}
	l.orderDelay = max(l.orderDelay, l.base)
	target := l.maxDelay
	switch {
	case l.learn.recent >= spreadAt && !l.off.has(offSpread):
		target = max(l.base, l.orderDelay, longest)
		l.learn.spread = true
	case l.learn.recent == 0:
		target = l.base
		l.learn.spread = false
	}
	target = max(min(target, l.set.ceiling), l.orderDelay)
	if target != l.maxDelay {
		l.maxDelay = target
		l.changes++
	}
}

// Evidence returns what the limiter has learned.
func (l *Limiter) Evidence() Evidence {
	l.init()
	return Evidence{
		MaxDelay: l.maxDelay, OrderDelay: l.order(), BaseDelay: l.base, Lag: l.learn.lag,
		Spread: l.learn.spread, Outliers: l.learn.outliers, Inversions: l.learn.inversions, Recent: l.learn.recent,
		Answers: l.learn.ended, Busy: l.learn.busy,
		Tolerance: l.set.tolerance, MaxArrival: l.arrival(),
	}
}
