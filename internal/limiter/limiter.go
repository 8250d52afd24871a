// Package limiter decides when the next request of one API key may leave, so that
// the upstream never rejects it, and learns from what happened to each request.
// It is pure logic over times: the caller passes the time to every method, waits
// by itself, and serialises its calls.
//
// # The upstream's rule
//
// Per key, the upstream records the arrival time, floored to whole milliseconds,
// of every request it accepts, and accepts a request only if its arrival minus the
// arrival of the N-th previous accepted request is more than W (a Rule; N = 20,
// W = 1000 ms by default). Rejections (429) do not enter its record. Nonces must
// arrive in increasing order. Several rules may hold at once.
//
// # What the client knows
//
// The client never sees an arrival time a_j. Of request j it knows
//
//	s_j ≤ a_j ≤ ub_j,  ub_j = min(left_j + L, r_j)
//
// where s_j is when it was Sent (the request cannot arrive before), left_j when it
// finished leaving (Wrote), L the largest one-way delay (Config.MaxDelay) and r_j
// when an answer came back (Answered, Rejected; no r_j when Lost). Until a request
// is reported written or ended it may still leave at any moment, so its ub is
// "now + L" and keeps moving: nothing else may leave meanwhile. A request ended as
// Lost before it was reported written may have left as late as the moment it was
// given up. An answer can only lower ub_j; it never moves a later slot later.
//
// # The invariants
//
// With M the margin (Config.Margin), the limiter keeps, for every send j:
//
// (a) Window, for every rule (N, W): s_m ≥ U + W + 1 ms + M, where U is the N-th
// latest of the bounds ub_i of all the sends i before m. Then at most N-1 earlier
// sends may arrive after U, and every other earlier send i arrived by
//
//	a_i ≤ ub_i ≤ U ≤ s_m − W − 1 ms − M ≤ a_m − W − 1 ms,
//
// so, as W is a whole number of milliseconds,
//
//	floor(a_m) ≥ floor(a_i + W + 1 ms) = floor(a_i) + W + 1 ms > floor(a_i) + W.
//
// Any N+1 of the key's arrivals therefore span more than W: take m the latest
// send among them; of the N others, at most N-1 may arrive after U, so one
// arrived more than W before a_m. That is the upstream's test, in whatever order
// the requests arrived. Every send is counted, also those rejected, lost or never
// arrived: counting sends the upstream did not record only makes the limiter wait
// longer. A late request (a spike, below) thus holds one of the N places until
// its bound, not every send after it: where the bounds grow with the sends, U is
// simply the bound of send m−N.
//
// (b) Order: s_{j+1} ≥ ub_j + 1 ms (with the order rule's delay, below), so
// a_{j+1} ≥ a_j + 1 ms. Several requests of a
// key may be in flight at once, but each arrives a whole millisecond after the one
// before, so nonces taken in send order arrive in order even where the upstream
// compares in whole milliseconds. Here ub_j is raised to the bounds of the sends
// before it (its floor), which is also what a handoff carries: bounds that grow.
//
// (c) Every rule is checked with the same arithmetic against its own N. The
// limiter keeps the last 2·max(N) sends, and the bounds of older ones for as long
// as they may still count (a window after them). A written request not yet
// answered is taken to arrive as late as MaxDelayCeiling allows: it holds one
// place until its answer, and by the time a send could rely on it having arrived
// (about a window later) a round trip that long has proven L wrong anyway.
//
// The margin M (1 ms by default) is not needed by this arithmetic: it absorbs what
// the model leaves out, such as the client's and the upstream's clocks running at
// slightly different rates (1 ms per 1000 ms covers 1000 ppm), or two holders'
// clocks disagreeing after a handoff.
//
// # Cost
//
// Each send leaves at the earliest instant (a) and (b) allow. Where the window
// binds, the N sends of one cycle repeat every
// W + 1 ms + M + E[ub_j - s_j] = W + 1 ms + M + E[min(L, d_in + d_out)], with d_in
// and d_out the delays each way. Against the reference upstream (W = 1000 ms,
// N = 20, delays uniform over 0..50 ms each way, L = 50 ms) that is
// 1000 + 1 + 1 + 41.5 ms per 20 requests: at most 19.17 requests a second per key,
// 95.8 for five keys, where the hard ceiling is 99.9. Rule (b) costs a little
// more where consecutive bounds crowd together: in simulation a key sends 19.05 a
// second, 95.25 for five keys, 0.6% under that bound.
//
// # Learning from evidence
//
// The invariants hold while every incoming delay is at most L. The limiter does
// not wait for a 429 to learn that L is wrong; it reads the evidence it gets.
//
// Round trips. With rt_j = r_j - left_j and τ the tolerance (Config.Tolerance,
// 10 ms: the reference's longest round trip is exactly 2L = 100 ms, and loopback,
// HTTP and scheduling add a few ms), rt_j > 2L + τ proves that one way took longer
// than L. Such an outlier's bound becomes its answer time r_j (always an upper
// bound of its arrival), so a lone late request is bound by its own answer and
// costs only its own place in the window, up to r_j. An outlier, or any request
// still unanswered (taken to arrive by left + the ceiling), never relies on L.
//
// 400s. Inverted reports a nonce that arrived after a later one: a_j > s_{j+1}, so
// the order rule's delay was short for it. Unless its own round trip explains it
// (rt_j > 2·Lo + τ, a spike), the order rule's delay Lo rises by a quarter, never
// past rt_j (a one-way delay is at most the round trip).
//
// L up. The last 64 answers are the horizon. Evidence there is a round trip over
// 2·base + τ, or a 400, where base is the configured L (or what 429s widened it
// to). One such answer alone is a spike and leaves L. Two or more are a spread,
// and so is Lo > base: L becomes max(base, Lo, R), R the longest round trip of the
// horizon, and follows R up at once. Safe for the window: every recent request's
// incoming delay is at most its round trip, so at most R; raising L raises every
// kept bound (the bounds are computed from L when asked), which covers every send
// still to leave, and the evidence comes back within a round trip, long before a
// send that relies on that request having arrived (about W later). Safe for the
// order rule: Lo only rises on a 400 and L ≥ Lo.
//
// L down, only on evidence: as long round trips leave the horizon, L falls with R
// (never below base or Lo); once the horizon holds no evidence at all (64 answers
// within 2·base + τ, no 400), L returns to base. Lo falls to max(base, R) once
// the horizon is full.
//
// Two delays. The window uses L; the order rule uses Lo ≤ L. A too-short Lo costs a
// 400 (a slot and a retry, reported, so it learns), a too-short L a 429 (a tenth of
// the key's life): so L is the conservative R, and Lo is learned from 400s. The
// window's proof (a) needs no arrival order, so a 400 never costs a 429. Each
// send's floor, the largest bound of the sends before it, is recomputed whenever
// a bound changes.
//
// Lateness. The limiter sees how late its process is: a Sent later than the
// instant the last Next told the caller to wait for (the timer fired late), and
// the time between Sent and Wrote (leaving took long). The largest over the last
// 64 sends, beyond τ, is added to L for the window rule, before the upstream
// shows anything: an overloaded box also registers its arrivals late.
// Evidence.Lag reports it. The order rule keeps Lo: an inversion costs a 400,
// and Lo learns from it; measured at 200 keys on a saturated 2-core machine,
// adding the lateness to Lo too cost a tenth of the rate to spare a 400 in
// every thousand requests.
//
// A busy machine. Whatever registers arrivals on a busy machine (an upstream on
// the same box, or one as loaded) can be late by more than this process's own
// lateness shows: measured on one 2-core box serving 100 keys, the simulator
// registered requests up to 11 ms past left + L while their round trips stayed
// under 2L and the worker's own timers were under τ late, and each was the window
// partner of a 429. So once the process has been late by more than τ/2 (over the
// last 64 sends, or, with a Lateness shared by a process's limiters
// (Config.Lateness), by any of its keys over the last 2 s), every answer that
// comes back bounds its request by itself: ub_j = r_j, which always holds, since
// an answer leaves after its arrival. Cost: on a busy machine, about
// E[r_j − min(left_j + L, r_j)] per window cycle (at the reference delays, 8 ms
// in 1043, 0.8 %; measured at 100 keys on a 91 % busy machine, 0.7 to 0.9 %,
// where it spared 8 × 429 in 30 s); none while the process is on time (at the
// reference its timers were at most 3.5 ms late).
//
// Cost at the reference: no round trip exceeds 2L + τ and no nonce is inverted,
// so nothing moves and the rate is that of the invariants (the property tests
// check both). A spread costs what its delays cost (in 0..100 ms, out 0..50 ms:
// 0.975 of a limiter that knows L = 100 ms, a few 400s while Lo learns); a 1 %
// share of 300 ms spikes costs about 1.5 % in simulation (each spike holds one
// place of the window until its answer, and is overtaken: one 400 per spike).
// Keeping the N-th latest bound instead of the partner's costs a sort of 2·N
// bounds when the bounds do not grow, and is cached until the records change.
//
// What no evidence shows. A model whose round trips look like the reference's
// and whose requests never overtake each other shows nothing: all of the delay on
// the way in, changing slowly (the incoming delay a wave from 0 to 2L, the outgoing
// one the rest of a 2L round trip). Constant incoming delays are harmless; random
// ones with the reference's round-trip distribution are caught by 400s. Where
// nothing shows, the ban guard protects the key.
//
// # When the model is wrong anyway
//
// A 429 means some request took longer than L (or another client used the key).
// Rejected then pauses the key for the longest window from the answer (or the
// upstream's Retry-After, if longer), so whatever the upstream recorded before it
// has aged out; widens L and base (doubled, capped by Config.MaxDelayCeiling; once
// per incident): the round trips missed it, so L never comes back below it; and
// counts the 429. The upstream blocks a key for good after BanThreshold 429s, so
// after GuardThreshold of them (3 of 10 by default) the ban guard trips:
// Quarantined reports true and Sent refuses with ErrQuarantined.
//
// # Memory and handoff
//
// A Limiter keeps one record per send for the last 2·max(N) sends, in a ring, and
// the bounds of older sends while they may still count. A Ticket names one of
// them; a Ticket that is never resolved holds one place of the window until
// left + the ceiling, and once it has fallen out of the ring it changes nothing.
// The caller bounds how many requests are in flight; by (b), all but the latest
// have arrived and only wait for their answers. State and Restore carry the upper
// bounds of the last max(N) sends (raised to those before them, so they grow), the
// assumed delay, the pause and the 429 count to the next holder of a key, which
// then waits at least as long as the windows require.
package limiter

import (
	"errors"
	"fmt"
	"slices"
	"time"
)

// Errors returned by Sent.
var (
	// ErrTooEarly is returned by Sent when the send would break a window or the
	// order of arrivals: the caller did not wait until Next.
	ErrTooEarly = errors.New("send too early for the key's rate limit")
	// ErrQuarantined is returned by Sent once the ban guard has tripped.
	ErrQuarantined = errors.New("key quarantined by the ban guard")
)

// orderGap separates the latest possible arrival of a request from the send of the
// next one, so arrivals differ by at least a whole millisecond (invariant b).
const orderGap = time.Millisecond

// Ticket names one send, for reporting what happened to it. The zero Ticket names
// no send; reporting on it, or on a Ticket older than the limiter's ring, changes
// nothing but what Rejected does to the whole key.
type Ticket struct {
	owner *Limiter
	seq   uint64
	units uint64 // the send's weight (weight.go); 0 means 1
}

// Rejection describes one 429, for the caller's warning.
type Rejection struct {
	// At is when the 429 came back.
	At time.Time `json:"at"`
	// SentAt is when the rejected request was sent; zero if its ticket was unknown.
	SentAt time.Time `json:"sent_at,omitzero"`
	// RetryAfter is the upstream's Retry-After, zero if none.
	RetryAfter time.Duration `json:"retry_after_ns,omitempty"`
	// MaxDelayBefore and MaxDelay are the assumed one-way delay before and after
	// the 429 widened it.
	MaxDelayBefore time.Duration `json:"max_delay_before_ns"`
	MaxDelay       time.Duration `json:"max_delay_ns"`
	// PauseUntil is when the key may send again.
	PauseUntil time.Time `json:"pause_until"`
	// Count is how many 429s the key has had, this one included, and BanThreshold
	// how many the upstream takes before it blocks the key.
	Count        int `json:"count"`
	BanThreshold int `json:"ban_threshold"`
	// Quarantined reports whether this 429 tripped the ban guard (or it had already).
	Quarantined bool `json:"quarantined,omitempty"`
}

// record is what the limiter knows of one send.
type record struct {
	sent    time.Time // the request cannot arrive before
	left    time.Time // it finished leaving no later than this, when hasLeft
	by      time.Time // it arrived no later than this; zero when unknown
	floor   time.Time // the largest bound of the sends before it: the order rule's and the handoff's bounds grow
	hasLeft bool
	ended   bool // answered, rejected or lost: later reports are ignored
	late    bool // its answer proved it slower than L allows (or it was a 400): by is its bound

	// wb caches windowBound for the window delay wbWin, when wbOK; any change to
	// the record clears wbOK (refloor is called after every change).
	wb    time.Time
	wbWin time.Duration
	wbOK  bool
}

// raw returns the latest instant the request may arrive, with l the assumed
// one-way delay and now the current time (a request not yet written may leave at
// now). A late request's answer is its bound, whatever l says.
func (r *record) raw(l time.Duration, now time.Time) time.Time {
	switch {
	case r.late:
		return r.by
	case r.hasLeft:
		ub := r.left.Add(l)
		if !r.by.IsZero() && r.by.Before(ub) {
			return r.by
		}
		return ub
	case !r.by.IsZero():
		return r.by
	}
	return now.Add(l)
}

// fixed reports whether r's bounds no longer move with now: it was written,
// answered or given up.
func (r *record) fixed() bool { return r.hasLeft || r.ended || !r.by.IsZero() }

// bound is raw raised to the bounds of the sends before it: the order rule (b)
// and the handoff take bounds that grow.
func (r *record) bound(l time.Duration, now time.Time) time.Time {
	return later(r.raw(l, now), r.floor)
}

// Limiter paces the sends of one API key; see the package doc for the model. It is
// not safe for concurrent use: the caller serialises its calls (a worker holds a
// mutex around it). Make one with New, Restore or NewFull; the zero Limiter is
// New(Config{}), for the reference upstream.
type Limiter struct {
	set settings

	maxDelay    time.Duration // L, for the window rule
	orderDelay  time.Duration // for the order rule, at most L
	base        time.Duration // the least L comes back to: the configured delay, or as 429s widened it
	ring        []record      // the last len(ring) sends; send seq is at (seq-1) % len(ring)
	sends       uint64        // sends so far, including those restored
	spilled     []time.Time   // window bounds of sends gone from the ring that may still count
	scratch     []time.Time   // reused by nth
	changes     uint64        // counts changes to the records, for nth's cache
	floorWin    time.Duration // the window delay the floors were computed with
	nthCache    []nthEntry
	latest      time.Time // the latest time reported to the limiter
	pauseUntil  time.Time // set by 429s
	notBefore   time.Time // the previous holder's next free slot, after a Restore
	rejections  int
	quarantined bool
	last        *Rejection
	learn       learner
}

// New returns a Limiter for a key with no recent sends, or an error wrapping
// ErrInvalidConfig that says which setting is wrong.
func New(cfg Config) (*Limiter, error) {
	s, err := cfg.settings()
	if err != nil {
		return nil, err
	}
	return newLimiter(s), nil
}

func newLimiter(s settings) *Limiter {
	return &Limiter{set: s, maxDelay: s.maxDelay, orderDelay: s.maxDelay, base: s.maxDelay, ring: make([]record, ringSpan*s.capacity)}
}

// init makes the zero Limiter New(Config{}).
func (l *Limiter) init() {
	if l.ring != nil {
		return
	}
	s, _ := Config{}.settings() // the defaults are valid
	*l = *newLimiter(s)
}

// NewFull returns a Limiter for a key whose recent sends are unknown, as after a
// holder crashed: it assumes every rule's window was filled by requests that may
// have left as late as lastLeft, and so may arrive until lastLeft + L. The first
// send leaves at lastLeft + L + W + 1 ms + margin, for the longest window W.
func NewFull(cfg Config, lastLeft time.Time) (*Limiter, error) {
	s, err := cfg.settings()
	if err != nil {
		return nil, err
	}
	l := newLimiter(s)
	ub := lastLeft.Add(s.maxDelay)
	for i := range l.ring {
		l.ring[i] = record{sent: ub, by: ub, ended: true}
	}
	l.sends = uint64(len(l.ring))
	l.latest = lastLeft
	return l, nil
}

// Next returns the earliest instant, not before now, at which the next send may
// leave. Once the key is quarantined it returns now, so a caller waiting on Next
// learns of the quarantine from Sent at once instead of waiting forever.
func (l *Limiter) Next(now time.Time) time.Time {
	l.init()
	if l.quarantined {
		return now
	}
	next := later(now, l.earliest(now))
	if next.After(now) {
		l.learn.promised = next // the caller waits for it: Sent tells how late it woke
	}
	return next
}

// earliest is the core of Next and Sent: the latest of the pause and, for the
// last send (order) and every rule's N-th previous send (window), its upper bound
// plus the gap it needs.
func (l *Limiter) earliest(now time.Time) time.Time {
	now = later(now, l.latest)
	t := later(l.pauseUntil, l.notBefore)
	if l.sends == 0 {
		return t
	}
	win := l.window()
	// Order: the last request's bound with the order rule's delay, raised to the
	// bounds before it (so a handoff, which keeps bounds only, waits as long);
	// window: the largest bound up to the N-th previous send.
	t = later(t, l.record(l.sends).bound(l.order(), now).Add(orderGap))
	for _, r := range l.set.rules {
		n := uint64(r.Limit)
		if l.sends < n {
			break // rules are sorted by Limit
		}
		t = later(t, l.nth(r.Limit, win, now).Add(r.Window+time.Millisecond+l.set.margin))
	}
	return t
}

// ringSpan is how many times the largest Limit the ring keeps: a late request
// keeps its own slot (see nth) while it may still count, about one window after
// its answer, and the sends of two windows cover that at full rate.
const ringSpan = 2

// nth returns the n-th latest window bound among the earlier sends, with win the
// window's delay: no more than n-1 earlier sends may arrive after it. A request
// written and still unanswered is taken to arrive as late as the ceiling allows,
// until it is answered (its answer is then its bound) or given up (Lost): while
// it is among the n-1 latest this changes nothing, and by the time a send could
// rely on it having arrived, about a window later, a round trip that long has
// proven L wrong whichever way the time went.
func (l *Limiter) nth(n int, win time.Duration, now time.Time) time.Time {
	for _, e := range l.nthCache {
		if e.n == n && e.win == win && e.changes == l.changes {
			return e.ub
		}
	}
	ub, cacheable := l.nthFast(n, win, now)
	if ub.IsZero() {
		ub, cacheable = l.nthFull(n, win, now)
	}
	if cacheable {
		// Spilled bounds that stop counting stay in the cached value until the
		// records change: that only errs on the side of waiting.
		e := nthEntry{n: n, win: win, changes: l.changes, ub: ub}
		if i := slices.IndexFunc(l.nthCache, func(e nthEntry) bool { return e.n == n }); i >= 0 {
			l.nthCache[i] = e
		} else {
			l.nthCache = append(l.nthCache, e)
		}
	}
	return ub
}

// nthFast returns nth in the usual case, the bound of the n-th latest send,
// where every send after it may arrive no earlier and every send before it no
// later; zero otherwise.
func (l *Limiter) nthFast(n int, win time.Duration, now time.Time) (ub time.Time, cacheable bool) {
	if l.sends < uint64(n) {
		return time.Time{}, false
	}
	cacheable = true
	p := l.sends + 1 - uint64(n)
	v := l.windowBound(l.record(p), win, now)
	for seq := p + 1; seq <= l.sends; seq++ {
		r := l.record(seq)
		cacheable = cacheable && r.fixed()
		if l.windowBound(r, win, now).Before(v) {
			return time.Time{}, false
		}
	}
	for seq := l.sends - min(l.sends, uint64(len(l.ring))) + 1; seq < p && seq > 0; seq++ {
		if l.windowBound(l.record(seq), win, now).After(v) {
			return time.Time{}, false
		}
	}
	for _, s := range l.spilled {
		if s.After(v) {
			return time.Time{}, false
		}
	}
	return v, cacheable
}

// nthFull computes nth from every bound that may count.
func (l *Limiter) nthFull(n int, win time.Duration, now time.Time) (ub time.Time, cacheable bool) {
	vals := l.scratch[:0]
	cacheable = true
	for seq := l.sends - min(l.sends, uint64(len(l.ring))) + 1; seq <= l.sends && seq > 0; seq++ {
		r := l.record(seq)
		cacheable = cacheable && r.fixed()
		vals = append(vals, l.windowBound(r, win, now))
	}
	keep := l.spilled[:0]
	for _, v := range l.spilled {
		if l.counts(v, now) {
			keep = append(keep, v)
			vals = append(vals, v)
		}
	}
	l.spilled = keep
	l.scratch = vals
	if len(vals) >= n {
		slices.SortFunc(vals, func(a, b time.Time) int { return b.Compare(a) })
		ub = vals[n-1]
	}
	return ub, cacheable
}

// nthEntry is one cached result of nth, valid while the records are unchanged.
type nthEntry struct {
	n       int
	win     time.Duration
	changes uint64
	ub      time.Time
}

// windowBound is the latest instant r may arrive, for the window rule.
func (l *Limiter) windowBound(r *record, win time.Duration, now time.Time) time.Time {
	if r.wbOK && r.wbWin == win {
		return r.wb
	}
	ub := r.raw(win, now)
	if r.hasLeft && !r.ended {
		ub = later(ub, r.left.Add(l.set.ceiling))
	}
	if r.fixed() {
		r.wb, r.wbWin, r.wbOK = ub, win, true
	}
	return ub
}

// counts reports whether an arrival by ub may still share a window with a send
// at now or later.
func (l *Limiter) counts(ub, now time.Time) bool {
	return !now.After(ub.Add(l.set.longest + time.Millisecond + l.set.margin))
}

// Sent records a send at now and returns its Ticket, to report on with Wrote and
// then one of Answered, Inverted, Lost or Rejected. Call it before the request
// starts to leave: its arrival is taken to be no earlier than now. It returns an
// error wrapping ErrTooEarly if now is before Next(now), and ErrQuarantined once
// the ban guard has tripped; either way nothing is recorded.
func (l *Limiter) Sent(now time.Time) (Ticket, error) {
	l.init()
	if l.quarantined {
		return Ticket{}, ErrQuarantined
	}
	if next := l.earliest(now); now.Before(next) {
		return Ticket{}, fmt.Errorf("%w: next send at %s, in %v", ErrTooEarly, next.Format(time.RFC3339Nano), next.Sub(now))
	}
	if p := l.learn.promised; !p.IsZero() && now.After(p) {
		l.lagged(now, now.Sub(p)) // woke later than it was told: the process is late
	}
	l.learn.promised = time.Time{}
	if n := uint64(len(l.ring)); l.sends >= n {
		// The oldest send falls out of the ring: the next one's floor keeps its
		// bound, and its window bound is kept for as long as it may count.
		if ub := l.windowBound(l.record(l.sends+1-n), l.window(), later(now, l.latest)); l.counts(ub, now) {
			l.spilled = append(slices.DeleteFunc(l.spilled, func(v time.Time) bool { return !l.counts(v, now) }), ub)
		}
		if n > 1 {
			l.refloor(l.sends + 1 - n)
		}
	}
	var floor time.Time
	if l.sends > 0 {
		prev := l.record(l.sends)
		floor = prev.bound(l.window(), later(now, l.latest))
	}
	l.sends++
	l.changes++
	*l.record(l.sends) = record{sent: now, floor: floor}
	l.latest = later(l.latest, now)
	return Ticket{owner: l, seq: l.sends}, nil
}

// Wrote records that the request finished leaving at at: it arrives by at + L.
// Until then, nothing else may leave. A later report for the same request keeps the
// latest time; a report after the request ended is ignored.
func (l *Limiter) Wrote(t Ticket, at time.Time) {
	l.observe(at)
	r := l.open(t)
	if r == nil {
		return
	}
	at = later(at, r.sent)
	defer l.spread(t)
	if r.hasLeft {
		if !at.After(r.left) {
			return
		}
		r.left = at
		l.refloor(t.seq) // a send may have followed the earlier report
		return
	}
	r.left, r.hasLeft = at, true
	l.lagged(at, at.Sub(r.sent)) // departure time: how long leaving took
	l.refloor(t.seq)
}

// Answered records that an answer other than a 429 or a 400 came back at at from
// the upstream (200, 401, a 5xx of the upstream's own): the request arrived by at,
// which may let later sends leave earlier, and its round trip is evidence (see the
// package doc). A 429 goes to Rejected, a 400 to Inverted; an error of the
// transport or of a proxy that may not have passed the request on goes to Lost.
func (l *Limiter) Answered(t Ticket, at time.Time) { l.answer(t, at, answered) }

// Inverted records a 400 for a nonce that arrived after a later one (a nonce
// inversion) at at: as Answered, and evidence that the order rule's delay was
// too short for this request.
func (l *Limiter) Inverted(t Ticket, at time.Time) { l.answer(t, at, inverted) }

func (l *Limiter) answer(t Ticket, at time.Time, kind answerKind) {
	l.init()
	l.observe(at)
	if r := l.open(t); r != nil {
		l.arrivedBy(r, t.seq, at, kind)
		l.spread(t)
	}
}

// arrivedBy ends r, which arrived no later than at.
func (l *Limiter) arrivedBy(r *record, seq uint64, at time.Time, kind answerKind) {
	if at.Before(r.sent) {
		// An answer before its send: the clock is not to be trusted. Keep the
		// bound that does not depend on the answer.
		l.lost(r, seq, l.latest)
		return
	}
	r.by = at
	l.learnFrom(r, at, kind)
	r.ended = true
	l.refloor(seq)
}

// Lost records that no answer came back (a timeout, a broken connection) and that
// the caller gave up at at. The request may still have arrived: by left + L, or,
// if it was never reported written, by at + L.
func (l *Limiter) Lost(t Ticket, at time.Time) {
	l.observe(at)
	if r := l.open(t); r != nil {
		l.lost(r, t.seq, at)
		l.spread(t)
	}
}

func (l *Limiter) lost(r *record, seq uint64, at time.Time) {
	if !r.hasLeft {
		r.left, r.hasLeft = later(at, r.sent), true
	}
	r.ended = true
	l.refloor(seq)
}

// Rejected records a 429 that came back at at, with the upstream's Retry-After
// (zero if none): the model was wrong. It pauses the whole key until at plus the
// longest window, 1 ms and the margin, or at + retryAfter if later; widens the
// assumed delay L and the least it comes back down to (doubled, at most
// MaxDelayCeiling), unless the request was sent before an earlier 429 of the same
// incident; and counts the 429 toward the ban guard. LastRejection then describes
// what happened, for a warning.
func (l *Limiter) Rejected(t Ticket, at time.Time, retryAfter time.Duration) {
	l.init()
	l.observe(at)
	rej := Rejection{At: at, RetryAfter: max(retryAfter, 0), MaxDelayBefore: l.maxDelay, BanThreshold: l.set.ban}
	widen := true
	if l.owns(t) {
		r := l.record(t.seq)
		rej.SentAt = r.sent
		// A request sent before the previous 429 came back was paced by the model
		// that 429 already corrected: its rejection says nothing new about L.
		widen = l.last == nil || r.sent.After(l.last.At)
		if !r.ended {
			l.arrivedBy(r, t.seq, at, rejected)
			l.spread(t)
		}
	}
	if widen {
		// Round trips did not show what the 429 did: the delay model may be one
		// no round trip reveals, so the wider L becomes the floor it returns to.
		l.base = min(max(2*l.maxDelay, l.maxDelay+time.Millisecond), l.set.ceiling)
		l.maxDelay = max(l.maxDelay, l.base)
		l.orderDelay = max(l.orderDelay, l.base)
		l.refloor(0)
	}
	pause := at.Add(l.set.longest + time.Millisecond + l.set.margin)
	if retryAfter > 0 {
		pause = later(pause, at.Add(retryAfter))
		if l.set.trustRA {
			pause = at.Add(retryAfter)
		}
	}
	l.pauseUntil = later(l.pauseUntil, pause)
	l.rejections++
	if l.rejections >= l.set.guard {
		l.quarantined = true
	}
	rej.MaxDelay, rej.PauseUntil, rej.Count, rej.Quarantined = l.maxDelay, l.pauseUntil, l.rejections, l.quarantined
	l.last = &rej
}

// refloor recomputes the floors of the sends after seq (all kept sends for 0):
// each is the largest window bound of the sends before it. The oldest kept send's
// floor keeps the bounds of the sends that fell out of the ring. It is called
// after every change to send seq (to every send, for 0), so it also drops what
// windowBound and nth cached.
func (l *Limiter) refloor(seq uint64) {
	l.changes++
	if seq == 0 {
		for i := range l.ring {
			l.ring[i].wbOK = false
		}
	} else if l.owns(Ticket{owner: l, seq: seq}) {
		l.record(seq).wbOK = false
	}
	oldest := l.sends - min(l.sends, uint64(len(l.ring))) + 1
	// Only send seq changed, with the window delay the floors were computed
	// with: once a floor comes out as it was, those after it are as they were.
	settled := seq > 0 && l.window() == l.floorWin
	seq = max(seq, oldest)
	win := l.window()
	l.floorWin = win
	for ; seq < l.sends && seq > 0; seq++ {
		f := l.record(seq).bound(win, l.latest)
		next := l.record(seq + 1)
		if settled && f.Equal(next.floor) {
			break
		}
		next.floor = f
	}
}

// LastRejection returns the latest 429 and true, or false if there was none.
func (l *Limiter) LastRejection() (Rejection, bool) {
	if l.last == nil {
		return Rejection{}, false
	}
	return *l.last, true
}

// Quarantined reports whether the ban guard has tripped. It stays tripped; a
// quarantined key needs an operator.
func (l *Limiter) Quarantined() bool { return l.quarantined }

// MaxDelay returns the largest one-way delay currently assumed (L).
func (l *Limiter) MaxDelay() time.Duration {
	l.init()
	return l.maxDelay
}

// observe notes a reported time: a request not yet written may leave no earlier.
func (l *Limiter) observe(t time.Time) { l.latest = later(l.latest, t) }

// owns reports whether t names a send of l still in the ring.
func (l *Limiter) owns(t Ticket) bool {
	return t.owner == l && t.seq >= 1 && t.seq <= l.sends && l.sends-t.seq < uint64(len(l.ring))
}

// open returns the record of a send that has not ended, or nil.
func (l *Limiter) open(t Ticket) *record {
	if !l.owns(t) {
		return nil
	}
	if r := l.record(t.seq); !r.ended {
		return r
	}
	return nil
}

// record returns the ring slot of send seq (1-based); nil for seq 0.
func (l *Limiter) record(seq uint64) *record {
	if seq == 0 {
		return nil
	}
	return &l.ring[(seq-1)%uint64(len(l.ring))]
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
