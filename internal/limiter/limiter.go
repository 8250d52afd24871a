// Package limiter decides when the next request of one API key may leave, so that
// the upstream never rejects it, and learns from what happened to each request.
// It is pure logic over times: the caller passes the time to every method, waits
// by itself, and serialises its calls.
//
// # The upstream's rule
//
// Per key, the upstream records the arrival time, floored to whole milliseconds,
// of every unit it accepts (a request of weight w is w units arriving together),
// and accepts a request only if, for each of its units, that unit's arrival minus
// the arrival of the N-th previous accepted unit is more than W (a Rule; N = 20,
// W = 1000 ms by default). Rejections (429) do not enter its record. Where the
// upstream takes a nonce, nonces must arrive in increasing order. Several rules
// may hold at once.
//
// That is a sliding window (Sliding, the default Kind). An upstream may also
// count per calendar interval, from 0 at each boundary of its clock (Fixed: a
// minute's count starts at :00), or with a counter that each unit raises and
// that falls at a steady rate (Bucket: a token bucket). Both are enforced with
// the same bounds as the sliding window below; fixed.go and bucket.go derive
// their conditions, show them safe, and say what they cost.
//
// # What the client knows
//
// The client never sees an arrival time a_j. Of send j it knows s_j ≤ a_j ≤ ub_j,
// where s_j is when it was Sent (the request cannot arrive before) and ub_j, its
// bound, depends on what happened to it:
//
//   - not yet reported written (Wrote): it may still leave at any moment, so
//     ub_j = now + L keeps moving with now;
//   - written at left_j, no answer yet: ub_j is open. A request in flight may
//     arrive at any moment until its answer, however late that is: it keeps one
//     place (w places, for a weight w) of every window for as long as it is open;
//   - answered at r_j (Answered, Inverted, Rejected): ub_j = min(left_j + L_j, r_j),
//     or r_j where the answer proved the request slower than L (below); L_j is the
//     largest L since the answer, so L going down never tightens an earlier bound;
//   - given up at g_j with no answer (Lost, a client timeout or a broken
//     connection): the request may still arrive. Its bound is the latest instant
//     the limiter can justify: ub_j = max(g_j + L, left_j + H), with H the arrival
//     horizon (Config.MaxArrival, 30 s by default; raised to the longest round
//     trip the key has seen, since a one-way delay that long has been seen
//     possible). Past H an upstream has dropped the request: servers and load
//     balancers end requests queued that long, and exchanges refuse requests
//     older than their receive window. A timeout therefore costs its request's
//     place for H, never a 429;
//   - answered by a gateway, not the upstream (LostUntil): the gateway may pass it
//     on until a hold it allows: ub_j = max(until, left_j + L);
//   - never left (Unsent: the transport refused before writing a byte): it cannot
//     arrive, and counts nowhere.
//
// In every bound of the window rule, L stands for L + R, with R the registration
// allowance (Config.Registration, 5 ms by default): an upstream registers an
// arrival after its delay once it has read the request and run the code that
// counts it, and on a loaded host that can be milliseconds later, while the
// round trip hides it among the delays. Measured on a 2-core box at 93 requests
// a second with nothing else loading it, the simulator registered about 1 %
// of requests 3 ms or more past their delay and 0.3 % 5 ms or more (up to 21 ms,
// in stalls of the whole machine); the partner of a 429 in a failover run was
// one of them. The order rule does not take R (see (b)).
//
// An answer only moves ub_j earlier than an open bound; a report after the
// request ended is ignored. Every time is compared with Go's monotonic readings
// where the caller's clock has them (time.Now does): a wall-clock step moves no
// bound.
//
// # The invariants
//
// With M the margin (Config.Margin), the limiter keeps, for every send m of w_m
// units:
//
// (a) Window, for every rule (N, W): s_m ≥ U + W + 1 ms + M, where U is the
// (N − w_m + 1)-th latest unit bound of all the sends before m (a send of w units
// counts its bound w times; U is the zero time when they hold fewer units). Then
// at most N − w_m units of earlier sends may arrive after U, and every other unit,
// of an earlier send i, arrived by
//
//	a_i ≤ ub_i ≤ U ≤ s_m − W − 1 ms − M ≤ a_m − W − 1 ms,
//
// so, as W is a whole number of milliseconds,
//
//	floor(a_m) ≥ floor(a_i + W + 1 ms) = floor(a_i) + W + 1 ms > floor(a_i) + W.
//
// Any N+1 of the key's units therefore span more than W: take m the latest send
// among them; it holds at most w_m of them, so at least N + 1 − w_m belong to
// earlier sends, of which at most N − w_m arrive after U: one arrived more than W
// before a_m. That is the upstream's test, in whatever order the requests arrived.
// Every send is counted, also those rejected, lost or never arrived: counting
// sends the upstream did not record only makes the limiter wait longer. A late
// request (a spike) holds its own places until its bound, not every send after
// it: where the bounds grow with the sends, U is simply the bound of the send
// N − w_m + 1 units back.
//
// The proof needs each ub_j to hold until the request can no longer arrive: that
// is why an open request's bound is open and a lost one's reaches H. It holds for
// every rule at once (each has its own N and W, long windows included), for any
// weights, and whichever way L moves: L going up raises every bound it enters,
// and a bound computed with L never falls when L does (L_j above).
//
// A Fixed rule allows a send when either its own interval count or the sliding
// window (a) for the same Limit and Window does (fixed.go); a Bucket rule when
// its counter, had every earlier unit arrived on its bound, plus every unit
// that may still arrive, has room for the send's (bucket.go).
//
// (b) Order, only where the upstream takes a nonce (Config.Unordered unset):
// s_{j+1} ≥ ob_j + 1 ms, with ob_j the order bound of the last send before: as ub_j
// but with the order rule's delay Lo ≤ L, and for a request still in flight or
// given up, left_j + Lo. So a_{j+1} ≥ a_j + 1 ms while the incoming delays stay
// within Lo: several requests of a key may be in flight at once, but each arrives a
// whole millisecond after the one before, and nonces taken in send order arrive in
// order even where the upstream compares in whole milliseconds. A request slower
// than Lo is overtaken: its nonce arrives late and only it is refused (a 400),
// which costs its own retry, and teaches Lo (below); the order rule never waits
// for a request's open or lost bound, or a late request would stall the key.
//
// (c) The limiter keeps every send whose bound may still count: open, or within
// the longest window (plus 1 ms and M) of now; for a Fixed rule the window and
// twice its clock offset, for a Bucket the time it takes to drain, into whose
// counter it folds the sends it forgets. Tickets of sends it forgot change
// nothing; a send it still keeps is found by its ticket whatever came after it.
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
// W + 1 ms + M + E[ub_j - s_j] = W + 1 ms + M + E[min(L + R, d_in + d_out)], with
// d_in and d_out the delays each way. Against the reference upstream (W = 1000 ms,
// N = 20, delays uniform over 0..50 ms each way, L = 50 ms) that is
// 1000 + 1 + 1 + 43.8 ms per 20 requests: at most 19.12 requests a second per key,
// 95.6 for five keys, where the hard ceiling is 99.9 (without R, 41.5 ms: 19.17
// and 95.8, the reference's safe bound). Rule (b) costs a little more where
// consecutive bounds crowd together: in simulation a key sends 18.98 a second,
// 94.9 for five keys, 0.7% under that bound and 1.0% under the reference's
// (95.25 without R). Open bounds cost nothing
// there: a request in flight is one of the last N sends anyway. A request slower
// than its neighbours holds one place of N for as long as it is late (a 2.5 s
// spike: 2.5 s of a twentieth of the key); a timeout holds one for H.
//
// # Learning from evidence
//
// The invariants hold while every incoming delay of an answered request is at
// most L. The limiter does not wait for a 429 to learn that L is wrong; it reads
// the evidence it gets.
//
// Round trips. With rt_j = r_j - left_j and τ the tolerance (Config.Tolerance,
// 10 ms: the reference's longest round trip is exactly 2L = 100 ms, and loopback,
// HTTP and scheduling add a few ms), rt_j > 2L + τ proves that one way took longer
// than L. Such an outlier's bound becomes its answer time r_j (always an upper
// bound of its arrival), so a lone late request is bound by its own answer and
// costs only its own place in the window, up to r_j. A request still unanswered
// 2L + τ after it left is evidence too, before its answer comes: it is noted in the
// horizon at its current age (and updated when its answer comes), so two slow
// requests in flight raise L at once.
//
// 400s. Inverted reports a nonce that arrived after a later one: a_j > s_{j+1}, so
// the order rule's delay was short for it. Unless its own round trip explains it
// (rt_j > 2·Lo + τ, a spike), the order rule's delay Lo rises by a quarter, never
// past rt_j (a one-way delay is at most the round trip). Lo comes back down with R
// (below), but at the reference delays R reaches 2L, so after orderCalm answers
// in a row without a 400 the order rule eases a fifth of the way back toward
// base, step by step; L keeps Lo meanwhile (the delay the 400 proved), and a
// 400 while eased takes the rule back to Lo without raising it.
//
// L up. The last 64 answers are the horizon. Evidence there is a round trip over
// 2·base + τ, or a 400, where base is the configured L (or what 429s widened it
// to). One such answer alone is a spike and leaves L. Two or more are a spread,
// and so is Lo > base: L becomes max(base, Lo, R), R the longest round trip of the
// horizon, and follows R up at once. Safe for the window: every recent request's
// incoming delay is at most its round trip, so at most R; raising L raises every
// bound it enters, which covers every send still to leave, and the evidence comes
// back within a round trip, long before a send that relies on that request having
// arrived (about W later). Safe for the order rule: Lo only rises on a 400 and
// L ≥ Lo.
//
// L down, only on evidence: as long round trips leave the horizon, L falls with R
// (never below base or Lo); once the horizon holds no evidence at all (64 answers
// within 2·base + τ, no 400), L returns to base. Lo falls to max(base, R) once
// the horizon is full. A lower L applies to the requests answered after it:
// earlier bounds keep the L they were answered under.
//
// Two delays. The window uses L; the order rule uses Lo ≤ L. A too-short Lo costs a
// 400 (a slot and a retry, reported, so it learns), a too-short L a 429 (a tenth of
// the key's life): so L is the conservative R, and Lo is learned from 400s. The
// window's proof (a) needs no arrival order, so a 400 never costs a 429.
//
// Lateness. The limiter sees how late its process is: a send that left later
// than the instant it waited for (Late, told by the caller, which knows when it
// waited: Next is a pure query, so a peek records nothing; a send on time counts
// as 0), and the time between Sent and Wrote (leaving took long). The largest over the last 64 sends, beyond
// τ, is added to L for the window rule, before the upstream shows anything: an
// overloaded box also registers its arrivals late. Evidence.Lag reports it. The
// order rule keeps Lo: an inversion costs a 400, and Lo learns from it; measured
// at 200 keys on a saturated 2-core machine, adding the lateness to Lo too cost a
// tenth of the rate to spare a 400 in every thousand requests.
//
// A busy machine. Whatever registers arrivals on a busy machine (an upstream on
// the same box, or one as loaded) can be late by more than this process's own
// lateness shows: measured on one 2-core box serving 100 keys, the simulator
// registered requests up to 11 ms past left + L while their round trips stayed
// under 2L and the worker's own timers were under τ late, and each was the window
// partner of a 429. So once the process has been late by more than τ/2 (over the
// last 64 sends, or, with a Lateness shared by a process's limiters
// (Config.Lateness), by any of its keys over the last 2 s), or the machine's
// cores were busy in the last 2 s (Lateness.Loaded: a process on one core of a
// loaded machine can stay on time while its neighbours run late), every answer
// that comes back bounds its request by itself: ub_j = r_j, which always holds, since
// an answer leaves after its arrival. Cost: on a busy machine, more than the
// E[r_j − min(left_j + L, r_j)] it adds to each bound on average (at the
// reference delays, 8.5 ms in 1043, 0.8 %), since the window waits for the N-th
// latest bound and answers spread twice as wide as the bounds: in simulation
// 0.977 of the bound against 0.994 (TestLimiter_ABusyMachineCostsTheSpreadOfTheAnswers);
// measured at 50 keys on a 72 % busy 2-core box, 0.976, against 0.988 to 0.990
// with weaker rules that each drew 429s, see stressed. None while the process is
// on time and the machine idle.
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
// # Another client on the key
//
// Where the upstream reports a rule's usage with its answers (Observed), the
// units another client used are estimated from the count, erring high, and kept
// back: each test of the rule uses its Limit less that reservation, so a report
// only ever makes sends wait. usage.go derives the estimate and the prediction,
// shows them safe and says what they cannot catch.
//
// # Memory and handoff
//
// A Limiter keeps one record per send while its bound may count (c): at most the
// sends of the longest window and H, plus those in flight, which the caller
// bounds. A Ticket names one of them. State and Restore carry the unit bounds of
// the last max(N) units (raised to those before them, so they grow; a request
// still open is taken as if given up then), the assumed delay, the pause and the
// 429 count to the next holder of a key, which then waits at least as long as the
// windows require.
package limiter

import (
	"errors"
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

// forever is the bound of a request in flight: it may arrive at any moment until
// its answer or until it is given up.
var forever = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)

// Ticket names one send, for reporting what happened to it. The zero Ticket names
// no send; reporting on it, or on a send the limiter no longer keeps, changes
// nothing but what Rejected does to the whole key.
type Ticket struct {
	owner *Limiter
	seq   uint64
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

// fate is what became of a send.
type fate uint8

const (
	open     fate = iota // no answer yet
	answered             // an answer came back: it arrived by then
	lost                 // given up without an answer: it may still arrive
	unsent               // it never left: it arrives nowhere
)

// record is what the limiter knows of one send.
type record struct {
	seq      uint64
	units    int // its weight, at least 1
	sent     time.Time
	left     time.Time // it finished leaving no later than this, when hasLeft
	hasLeft  bool
	fate     fate
	at       time.Time     // answered: the answer's time; lost: when it was given up
	until    time.Time     // lost through a gateway: it may be passed on until then
	win      time.Duration // the window delay when it ended: L going down leaves its bound
	late     bool          // its answer is its bound, whatever L says (outlier, 400, busy machine)
	prior    bool          // restored from a previous holder: its order rule is in notBefore
	overdue  bool          // noted in the horizon while still unanswered, as note
	note     uint64
	refused  bool // answered 429: the upstream did not count it
	inverted bool // answered 400: its nonce arrived after a later one's
	counted  bool // its answer carried a usage report and was no 429: the upstream counted it
}

// Limiter paces the sends of one API key; see the package doc for the model. It is
// not safe for concurrent use: the caller serialises its calls (a worker holds a
// mutex around it). Make one with New, Restore or NewFull; the zero Limiter is
// New(Config{}), for the reference upstream.
type Limiter struct {
	set settings
	off ablation // rules switched off, in tests only

	maxDelay    time.Duration // L, for the window rule
	orderDelay  time.Duration // the incoming delay 400s proved: L never goes below it
	eased       time.Duration // how far below orderDelay the order rule goes now (calm)
	base        time.Duration // the least L comes back to: the configured delay, or as 429s widened it
	recs        []record      // the sends whose bounds may count, by seq
	compactAt   int           // compact recs when it grows this long
	sends       uint64        // sends so far, including those restored
	inFlight    []uint64      // the seqs of open sends
	scratch     []unitBound   // reused by windowAt
	changes     uint64        // counts changes to the records, for the cache
	cache       []windowEntry
	latest      time.Time     // the latest time reported to the limiter
	pendingLate time.Duration // what Late told of the next send
	pauseUntil  time.Time     // set by 429s
	notBefore   time.Time     // the previous holder's next free slot, after a Restore
	rejections  int
	quarantine  bool
	last        *Rejection
	learn       learner
	usage       []usage // per rule, what the upstream's usage reports showed

	seeds          []seed        // per rule, for a Bucket: what the sends it forgot left in its counter
	arrivalScratch []arrival     // reused by arrivals
	fixedScratch   []countChange // reused by fixedAt
	bucketScratch  []unitBound   // reused by bucketAt
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
	l := &Limiter{set: s, maxDelay: s.maxDelay, orderDelay: s.maxDelay, base: s.maxDelay}
	l.usage = make([]usage, len(s.rules))
	for i := range s.usage {
		l.usage[i].reported = s.usage[i]
	}
	return l
}

// init makes the zero Limiter New(Config{}).
func (l *Limiter) init() {
	if l.set.capacity > 0 {
		return
	}
	s, _ := Config{}.settings() // the defaults are valid
	*l = *newLimiter(s)
}

// NewFull returns a Limiter for a key whose recent sends are unknown, as after a
// holder crashed: it assumes every rule's window was filled by requests that may
// have left as late as lastLeft, and so may arrive until lastLeft + L. The first
// send leaves at lastLeft + L + W + 1 ms + margin, for the longest window W (for a
// Fixed rule, at the start of the next interval plus its offset if that is
// earlier; a Bucket is taken as full then, and waits for the send's units to
// drain).
func NewFull(cfg Config, lastLeft time.Time) (*Limiter, error) {
	s, err := cfg.settings()
	if err != nil {
		return nil, err
	}
	l := newLimiter(s)
	ub := lastLeft.Add(s.maxDelay)
	l.restored(uint64(s.capacity), s.capacity, func(int) time.Time { return ub })
	l.seedFull(ub)
	return l, nil
}

// restored fills the record with n sends of one unit, the last of sends, whose
// bound of the i-th (oldest first) is ub(i).
func (l *Limiter) restored(sends uint64, n int, ub func(i int) time.Time) {
	l.sends = sends - uint64(n)
	for i := range n {
		b := ub(i)
		l.sends++
		l.recs = append(l.recs, record{seq: l.sends, units: 1, sent: b, left: b, hasLeft: true, fate: answered, at: b, late: true, prior: true})
		l.latest = later(l.latest, b)
	}
	l.changes++
}

// Next returns the earliest instant, not before now, at which the next send may
// leave. It changes nothing: call it as often as you like. Once the key is
// quarantined it returns now, so a caller waiting on Next learns of the
// quarantine from Sent at once instead of waiting forever.
func (l *Limiter) Next(now time.Time) time.Time { return l.NextN(now, 1) }

// earliest is the core of Next, NextN, Sent, SentN and State: the latest of the
// pause, the order rule (b) for the last send, and every rule's window (a) for a
// send of w units.
func (l *Limiter) earliest(now time.Time, w int) time.Time {
	now = later(now, l.latest)
	t := later(l.pauseUntil, l.notBefore)
	if len(l.recs) == 0 {
		return t
	}
	if !l.set.unordered && !l.off.has(offOrder) {
		if ob, ok := l.orderBound(now); ok {
			t = later(t, ob.Add(orderGap))
		}
	}
	return later(t, l.windowAt(now, w))
}

// orderBound returns the order bound of the last send that may arrive.
func (l *Limiter) orderBound(now time.Time) (time.Time, bool) {
	lo := l.order()
	for i := len(l.recs) - 1; i >= 0; i-- {
		r := &l.recs[i]
		switch {
		case r.fate == unsent:
			continue
		case r.prior:
			return time.Time{}, false // the previous holder's order rule is in notBefore
		case r.fate == answered && (r.late || !r.hasLeft):
			return r.at, true
		case r.fate == answered:
			return earlier(r.left.Add(lo), r.at), true
		case r.hasLeft:
			return r.left.Add(lo), true // in flight or given up: a slower one is overtaken
		case r.fate == lost:
			return r.at.Add(lo), true // it may have left as late as it was given up
		}
		return now.Add(lo), true // still leaving
	}
	return time.Time{}, false
}

// unitBound is one send's window bound and its units.
type unitBound struct {
	ub    time.Time
	units int
}

// arrival is where one send's units may arrive, for the Fixed and Bucket rules.
type arrival struct {
	lo, ub time.Time // from lo (zero when unknown: restored) to ub, its window bound
	units  int
	prior  bool // restored from a previous holder
}

// windowEntry is one cached result of windowAt, valid while the records and the
// window delay are unchanged.
type windowEntry struct {
	w       int
	win     time.Duration
	changes uint64
	t       time.Time
}

// windowAt returns the earliest instant every rule's window (a) allows a send of
// w units.
func (l *Limiter) windowAt(now time.Time, w int) time.Time {
	win := l.window()
	for _, e := range l.cache {
		if e.w == w && e.win == win && e.changes == l.changes {
			return e.t
		}
	}
	bounds, cacheable := l.bounds(now, win)
	var arrivals []arrival // for the Fixed and Bucket rules, made once
	if l.set.kinds {
		arrivals = l.arrivals(now, win)
	}
	var t time.Time
	sorted := false
	for i, r := range l.set.rules {
		if r.Kind == Bucket {
			t = later(t, l.bucketAt(i, arrivals, w))
			continue
		}
		lim := l.limitOf(i, w) // the Limit, less what another client is seen to use
		k := lim - w + 1
		if l.off.has(offWeight) {
			k = lim
		}
		bs := bounds
		if l.off.has(offNth) {
			bs = lastUnits(bounds, r.Limit)
			sorted = false
		}
		var at time.Time // the sliding window's earliest instant
		u, ok := kthLatest(bs, k, &sorted)
		if ok {
			gap := r.Window + time.Millisecond
			if l.off.has(offGap) {
				gap = r.Window
			}
			at = u.Add(gap + l.set.margin)
		}
		if r.Kind == Fixed {
			// Either test proves the send safe: the earlier instant.
			fr := r
			fr.Limit = lim
			at = earlier(at, l.fixedAt(fr, arrivals, w))
		}
		t = later(t, at)
	}
	if cacheable {
		e := windowEntry{w: w, win: win, changes: l.changes, t: t}
		if i := slices.IndexFunc(l.cache, func(e windowEntry) bool { return e.w == w }); i >= 0 {
			l.cache[i] = e
		} else {
			l.cache = append(l.cache, e)
		}
	}
	return t
}

// bounds returns the window bounds of the kept sends that may arrive, by seq,
// and whether they do not depend on now.
func (l *Limiter) bounds(now time.Time, win time.Duration) ([]unitBound, bool) {
	out := l.scratch[:0]
	cacheable := true
	for i := range l.recs {
		r := &l.recs[i]
		if r.fate == unsent {
			continue
		}
		if r.fate == open && !r.hasLeft {
			cacheable = false
		}
		out = append(out, unitBound{ub: l.windowBound(r, win, now), units: r.units})
	}
	l.scratch = out
	return out, cacheable
}

// arrivals returns where the kept sends that may arrive may do so, by seq.
func (l *Limiter) arrivals(now time.Time, win time.Duration) []arrival {
	out := l.arrivalScratch[:0]
	for i := range l.recs {
		r := &l.recs[i]
		if r.fate != unsent {
			out = append(out, l.arrivalOf(r, l.windowBound(r, win, now)))
		}
	}
	l.arrivalScratch = out
	return out
}

// arrivalOf returns where r may arrive, with ub its bound.
func (l *Limiter) arrivalOf(r *record, ub time.Time) arrival {
	a := arrival{lo: r.sent, ub: ub, units: r.units, prior: r.prior}
	if r.prior {
		a.lo = time.Time{} // it may have arrived at any time before its bound
	}
	return a
}

// lastUnits returns a copy of the sends of bs (in seq order) that hold its last n
// units: the window of a limiter that forgets older sends, for the ablation
// tests.
func lastUnits(bs []unitBound, n int) []unitBound {
	i, acc := len(bs), 0
	for i > 0 && acc < n {
		i--
		acc += bs[i].units
	}
	return slices.Clone(bs[i:])
}

// kthLatest returns the k-th latest unit bound of bs (in seq order), and false
// when they hold fewer than k units. In the usual case the bounds grow with seq
// and it is the bound k units back; otherwise it sorts bs (once: sorted tells).
func kthLatest(bs []unitBound, k int, sorted *bool) (time.Time, bool) {
	if k < 1 {
		k = 1
	}
	back := func() (int, bool) {
		acc := 0
		for i := len(bs) - 1; i >= 0; i-- {
			acc += bs[i].units
			if acc >= k {
				return i, true
			}
		}
		return 0, false
	}
	i, ok := back()
	if !ok {
		return time.Time{}, false
	}
	if *sorted {
		return bs[i].ub, true
	}
	v := bs[i].ub
	grows := true
	for j := range bs {
		if (j < i && bs[j].ub.After(v)) || (j > i && bs[j].ub.Before(v)) {
			grows = false
			break
		}
	}
	if grows {
		return v, true
	}
	slices.SortStableFunc(bs, func(a, b unitBound) int { return a.ub.Compare(b.ub) })
	*sorted = true
	i, _ = back()
	return bs[i].ub, true
}

// windowBound is the latest instant r may arrive, for the window rule (a), with
// win the window's delay now.
func (l *Limiter) windowBound(r *record, win time.Duration, now time.Time) time.Time {
	if !l.off.has(offKeepL) {
		win = max(win, r.win)
	}
	switch r.fate {
	case answered:
		if r.late || !r.hasLeft {
			return r.at
		}
		return earlier(r.left.Add(win), r.at)
	case lost:
		return l.lostBound(r, win)
	}
	if !r.hasLeft {
		return now.Add(win) // it may still leave at any moment
	}
	if l.off.has(offHold) {
		return r.left.Add(win)
	}
	return forever // in flight: it may arrive until it is answered or given up
}

// lostBound is the window bound of a send given up without an answer of the
// upstream's own; see the package doc.
func (l *Limiter) lostBound(r *record, win time.Duration) time.Time {
	left := r.at // never reported written: it may have left as late as it was given up
	if r.hasLeft {
		left = r.left
	}
	if !r.until.IsZero() {
		return later(r.until, left.Add(win))
	}
	if l.off.has(offLostHold) {
		return left.Add(win)
	}
	return later(r.at.Add(win), left.Add(l.arrival()))
}

// arrival returns H: the arrival horizon, raised to the longest round trip seen.
func (l *Limiter) arrival() time.Duration { return max(l.set.arrival, l.learn.longestEver) }

// hardBound is an upper bound of r's arrival whatever L becomes, for forgetting
// an answered or lost send that can no longer count.
func (l *Limiter) hardBound(r *record) time.Time {
	switch r.fate {
	case answered:
		return r.at
	case lost:
		return l.lostBound(r, 2*l.set.ceiling) // L and the slack stay below
	}
	return forever
}

// counts reports whether an arrival by ub may still share a window with a send
// at now or later, with a ceiling to spare: forgetting a send a little late
// costs a record, a little early could cost a 429.
func (l *Limiter) counts(ub, now time.Time) bool {
	return !now.After(ub.Add(l.set.longest + l.set.ceiling))
}

// Sent records a send of one unit at now and returns its Ticket, to report on
// with Wrote and then one of Answered, Inverted, Rejected, Lost, LostUntil or
// Unsent. Call it before the request starts to leave: its arrival is taken to be
// no earlier than now. It returns an error wrapping ErrTooEarly if now is before
// Next(now), and ErrQuarantined once the ban guard has tripped; either way nothing
// is recorded.
func (l *Limiter) Sent(now time.Time) (Ticket, error) { return l.SentN(now, 1) }

// Late notes that a send the caller waited for left d later than the instant
// Next gave, at at: its timer fired late, or the process was busy. Only the
// caller knows that it waited (Next records nothing), so it tells.
func (l *Limiter) Late(at time.Time, d time.Duration) {
	l.init()
	l.pendingLate = max(l.pendingLate, d)
}

// Wrote records that the request finished leaving at at: it arrives by at + L
// if answered in time, and may arrive until its answer otherwise. A later report
// for the same request keeps the latest time; a report after the request ended is
// ignored.
func (l *Limiter) Wrote(t Ticket, at time.Time) {
	l.init()
	l.observe(at)
	r := l.open(t)
	if r == nil {
		return
	}
	at = later(at, r.sent)
	if r.hasLeft && !at.After(r.left) {
		return
	}
	if !r.hasLeft {
		l.lagged(at, at.Sub(r.sent)) // departure time: how long leaving took
	}
	r.left, r.hasLeft = at, true
	l.changes++
}

// Answered records that an answer other than a 429 or a 400 came back at at from
// the upstream (200, 401, a 5xx of the upstream's own): the request arrived by at,
// which may let later sends leave earlier, and its round trip is evidence (see the
// package doc). A 429 goes to Rejected, a 400 to Inverted; a transport error or a
// timeout to Lost; an answer of a proxy that may pass the request on to LostUntil.
func (l *Limiter) Answered(t Ticket, at time.Time) { l.answer(t, at, answeredKind) }

// Inverted records a 400 for a nonce that arrived after a later one (a nonce
// inversion) at at: as Answered, and evidence that the order rule's delay was
// too short for this request.
func (l *Limiter) Inverted(t Ticket, at time.Time) { l.answer(t, at, inverted) }

func (l *Limiter) answer(t Ticket, at time.Time, kind answerKind) {
	l.init()
	l.observe(at)
	if r := l.open(t); r != nil {
		l.arrivedBy(r, at, kind)
	}
}

// arrivedBy ends r, which arrived no later than at.
func (l *Limiter) arrivedBy(r *record, at time.Time, kind answerKind) {
	if at.Before(r.sent) {
		// An answer before its send: the clock is not to be trusted. Keep the
		// bound that does not depend on the answer.
		l.giveUp(r, l.latest)
		return
	}
	l.learnFrom(r, at, kind)
	r.fate, r.at = answered, at
	r.inverted = kind == inverted
	r.win = l.window()
	l.ended(r)
}

// Lost records that no answer came back (a timeout, a broken connection) and that
// the caller gave up at at. The request may still arrive: it keeps its place
// until max(at + L, left + H), H the arrival horizon (Config.MaxArrival, or the
// longest round trip seen); if it was never reported written, it may have left as
// late as at.
func (l *Limiter) Lost(t Ticket, at time.Time) {
	l.init()
	l.observe(at)
	if r := l.open(t); r != nil {
		l.giveUp(r, at)
	}
}

func (l *Limiter) giveUp(r *record, at time.Time) {
	r.fate, r.at = lost, later(at, r.sent)
	r.win = l.window()
	l.ended(r)
}

// ended drops r from the sends in flight and the caches.
func (l *Limiter) ended(r *record) {
	l.inFlight = slices.DeleteFunc(l.inFlight, func(s uint64) bool { return s == r.seq })
	l.changes++
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
	if r := l.find(t); r != nil {
		rej.SentAt = r.sent
		// A request sent before the previous 429 came back was paced by the model
		// that 429 already corrected: its rejection says nothing new about L.
		widen = l.last == nil || r.sent.After(l.last.At)
		if r.fate == open {
			r.refused = true
			l.arrivedBy(r, at, rejected)
		}
	}
	if widen {
		// Round trips did not show what the 429 did: the delay model may be one
		// no round trip reveals, so the wider L becomes the floor it returns to.
		l.base = min(max(2*l.maxDelay, l.maxDelay+time.Millisecond), l.set.ceiling)
		l.maxDelay = max(l.maxDelay, l.base)
		l.orderDelay = max(l.orderDelay, l.base)
		l.changes++
	}
	pause := at.Add(l.set.longest + time.Millisecond + l.set.margin)
	if retryAfter > 0 {
		pause = later(pause, at.Add(retryAfter))
		if l.set.trustRA {
			pause = at.Add(retryAfter)
		}
	}
	if !l.off.has(offPause) {
		l.pauseUntil = later(l.pauseUntil, pause)
	}
	l.rejections++
	if l.rejections >= l.set.guard {
		l.quarantine = true
	}
	rej.MaxDelay, rej.PauseUntil, rej.Count, rej.Quarantined = l.maxDelay, l.pauseUntil, l.rejections, l.quarantine
	l.last = &rej
}

// forget drops the sends whose bounds can count no more, at now: all but the
// last, which the order rule reads. It runs when the record has doubled since
// it last ran, so it costs O(1) a send.
func (l *Limiter) forget(now time.Time) {
	if len(l.recs) < l.compactAt {
		return
	}
	last := len(l.recs) - 1
	keep := l.recs[:0]
	var gone []arrival // for the buckets, which keep what they forget
	for i, r := range l.recs {
		switch {
		case i == last || r.fate == open || (r.fate != unsent && l.counts(l.hardBound(&r), now)):
			keep = append(keep, r)
		case r.fate != unsent && l.set.buckets:
			gone = append(gone, l.arrivalOf(&r, l.hardBound(&r)))
		}
	}
	l.fold(gone)
	clear(l.recs[len(keep):])
	l.recs = keep
	l.compactAt = max(2*len(l.recs), 2*l.set.capacity+16)
	l.changes++
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
func (l *Limiter) Quarantined() bool { return l.quarantine }

// MaxDelay returns the largest one-way delay currently assumed (L).
func (l *Limiter) MaxDelay() time.Duration {
	l.init()
	return l.maxDelay
}

// observe notes a reported time: a request not yet written may leave no earlier.
func (l *Limiter) observe(t time.Time) { l.latest = later(l.latest, t) }

// find returns the record of a send of l that it still keeps, or nil.
func (l *Limiter) find(t Ticket) *record {
	if t.owner != l || t.seq == 0 {
		return nil
	}
	i, ok := slices.BinarySearchFunc(l.recs, t.seq, func(r record, seq uint64) int {
		switch {
		case r.seq < seq:
			return -1
		case r.seq > seq:
			return 1
		}
		return 0
	})
	if !ok {
		return nil
	}
	return &l.recs[i]
}

// open returns the record of a send that has not ended, or nil.
func (l *Limiter) open(t Ticket) *record {
	if r := l.find(t); r != nil && r.fate == open {
		return r
	}
	return nil
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func earlier(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
