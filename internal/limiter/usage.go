package limiter

import (
	"fmt"
	"time"
)

// Usage the upstream reports
//
// Some upstreams say, with every answer, how much of a rule's budget the key has
// used (Binance's X-MBX-USED-WEIGHT-1M) or has left (OpenAI's
// x-ratelimit-remaining-requests). Where another client uses the same key, the
// count holds its units too, and nothing else shows them before a 429. Observed
// takes that count as evidence, and only ever to send less: the windows (a), the
// fixed intervals and the sliding alternative of a fixed rule then hold at most
// N − R units of this limiter's, R the rule's reservation, so the key's own sends
// never take what the other client has been seen to use.
//
// The estimate. The answer to send j carries the count c the upstream held at
// some instant u of its own, after j arrived and before its answer came back:
// left_j ≤ u ≤ r_j (sent_j when j was never reported written). A unit of an
// earlier send i is surely in that count when it was surely accepted (its answer
// carried a report, and it was no 429) and surely in the rule's span at every
// such u: for a sliding rule s_i ≥ r_j − W and ub_i ≤ left_j, for a fixed rule
// both s_i and ub_i in the interval that holds every u, whatever the clock offset
// (j's own units count too once accepted, where j left within W of its answer:
// they arrived before u). Where the upstream takes nonces (Config.Unordered
// unset, nonces taken in send order), a counted send i before j whose answer was
// no 400 arrived before j when j was counted and no 400 either: had j arrived
// first, i's nonce would have come after a later one and been refused. So i is
// in the count at every u without its bound: the bounds of the sends in flight
// around j no longer make o err high. With own the units so found, o = c − own
// is at least the other client's units in the count: own is a lower bound of
// this limiter's units counted, so o errs high, by the units whose arrival the
// bounds cannot place (sent within a round trip of the span's start), and by
// those the limiter no longer keeps. With mine the units of every send that may
// be in the count (sent by r_j, bound after left_j − W − 1 ms; not refused, not
// unsent), c − mine is at most the other client's units: the report proves that
// many.
//
// The prediction. The other client keeps calling, so what it used in one window
// it is taken to use in the next. A window (for a sliding rule the windows of
// the answer times, for a fixed one its intervals) is cut into usageGroups
// groups by answer time; the spans of the reports of one group end within W/2
// of each other. A group shows the smallest o of its reports (an upper bound
// of the other client's units in one of its spans), or, if larger, the largest
// proof (at least that many in one of its spans). Over the last usageEpochs
// windows, while no report proves the other client's count differs from one
// span to another (no proof above the smallest o), R is the most a group
// showed; once one does (the client is not steady), R is the larger of that
// most plus the spread (the largest proof less the smallest o) and the largest
// o of any report; and 0 once those windows showed no outside usage.
// Only windows with evidence count: a key
// that sends nothing keeps its reservation until its answers show otherwise.
// Until a rule's first report (Config.Reported), the rule holds one send: the
// key sends once, reads the count from its answer, and only then fills what is
// left.
//
// What it assumes. The smallest o of a group bounds one of its spans, not each:
// the reservation covers the other client in every span only while its count
// differs between spans ending within W/2 of each other by no more than the
// spread the reports prove. A steady client (evenly spaced calls, or one burst
// a window) holds the same count, give or take one call, in every span, and a
// count that does change by a call shows in the proofs of the spans that hold
// it once the key's own sends can be placed around them (most reports: the
// uncertain sends are the few within a round trip of the span's start). A
// client whose calls come in bursts less often than a window, or whose rate
// changes faster than the reports follow, can hold more in a span than R: its
// call, or the key's, then draws a 429, which pauses the key as any 429 does
// (measured in simulation, 3 seeds of 3,000 sends for each of 20 %, 30 %,
// 32.5 %, 42.5 % and 47.5 % of the key in bursts of 1, 2, 3 and 5 calls: 10 ×
// 429 in all, 6 of them at 47.5 % in bursts of 3, where the rule of the largest
// o plus max(1, o/8) alone drew 3 and kept 0.78 of what a steady client at
// 30 % leaves, against 0.92 here; steady clients and one burst a window drew
// none).
//
// Why it is safe. The reservation only lowers the limit each rule's test uses,
// and every test is shown safe for any limit up to the rule's own (the proofs
// above count units against N − w; they hold for any smaller N): R can only delay
// a send, never let one leave that the rule without R would hold. With R at least
// the other client's units in any window (see What it assumes), the two together
// stay within N.
//
// What it cannot catch. The count only shows what the other client managed to
// use: while this limiter fills a window, the other's calls find no room, and a
// client that starts, or grows by more than the headroom, after the last report
// is unseen until its calls land; one whose bursts come less often than
// usageEpochs windows may be forgotten between them. A 429 then says so, and
// pauses the key as any 429 does. A Bucket's count is not read: its reports are
// ignored. A Fixed rule's report within the clock offset of an interval's
// boundary cannot be placed, and is skipped (Config.Reported refuses a Fixed
// rule whose offset covers every alignment).

// usageEpochs is how many recent windows with evidence the reservation keeps the
// largest outside count of.
const usageEpochs = 4

// usageGroups is how many groups of reports a window is cut into: reports whose
// answers came within W/usageGroups of each other (the same group) read counts
// over nearly the same span.
const usageGroups = 2

// usage is what the reports of one rule showed.
type usage struct {
	reported bool // Config.Reported names the rule: before its first report, hold back
	seen     bool // a report came
	epochs   [usageEpochs]epochMost
	n        int // epochs noted so far; epochs[(n-1)%usageEpochs] is the latest
	reserve  int
}

// epochMost is what the reports of one window showed of the other client.
type epochMost struct {
	k    int64
	most int // the largest value of its groups before the current one
	// The current group g: the smallest upper bound and the largest lower bound
	// of the other client's units among its reports.
	g            int64
	tight, least int
	// The smallest upper bound and the largest lower bound among all its
	// reports: where the second exceeds the first, the other client's count
	// was seen to differ from one span to another.
	lowest, highest int
	// peak is the largest upper bound among all its reports.
	peak int
}

// value is the most the window's reports showed, its current group included.
func (e epochMost) value() int { return max(e.most, e.tight, e.least) }

// Observed reads a report of the upstream that came with the answer to the send
// of t: the rule r (one of Config.Rules) held used units of the key when the
// upstream answered. A limit less what is left (a "remaining" header) is used.
// Report after the answer (Answered, Inverted or Rejected); a report on a send
// that has not ended, that the limiter no longer keeps, or on a rule it does not
// enforce or cannot read (a Bucket) changes nothing. It only ever makes sends
// wait: see Usage the upstream reports.
func (l *Limiter) Observed(t Ticket, r Rule, used int) {
	l.init()
	rec := l.find(t)
	if rec == nil || rec.fate != answered || rec.prior {
		return
	}
	if !rec.refused {
		rec.counted = true
	}
	for i := range l.set.rules {
		rr := &l.set.rules[i]
		if rr.Rule != r || rr.Kind == Bucket {
			continue
		}
		est, ok := l.outside(rr, rec, used)
		if !ok {
			continue
		}
		l.note(i, est)
	}
}

// estimate is what one report shows of the other client: at least least and at
// most out of its units in the span the count was read over, which ends in
// window (or interval) k and, by its answer, in group g of the rule's groups.
type estimate struct {
	k, g       int64
	out, least int
}

// outside returns what the report on rec shows of the other client; false when
// the report cannot be placed.
func (l *Limiter) outside(r *rule, rec *record, used int) (estimate, bool) {
	lo := rec.sent
	if rec.hasLeft {
		lo = later(lo, rec.left)
	}
	hi := rec.at
	win := l.window()
	w := r.Window.Milliseconds()
	est := estimate{g: floorDiv(hi.UnixMilli()*usageGroups, w)}
	// Where the upstream takes nonces, taken in send order, a counted send whose
	// nonce was not refused arrived before every later one that was counted:
	// before rec, so before u.
	ordered := !l.set.unordered && !rec.inverted && !rec.refused
	before := func(o *record) bool {
		return ordered && o.seq < rec.seq && !o.inverted && !o.prior
	}
	in := func(o *record) bool { // the unit surely counted at every u in [lo, hi]
		return !o.sent.Before(hi.Add(-r.Window)) && (before(o) || !l.windowBound(o, win, hi).After(lo))
	}
	// The unit may be counted at some u in [lo, hi] (floored to whole
	// milliseconds, so a millisecond more on either side).
	maybe := func(o *record) bool {
		return !o.sent.After(hi) && !l.windowBound(o, win, hi).Before(lo.Add(-r.Window-time.Millisecond))
	}
	if r.Kind == Fixed {
		e := r.edge
		k := floorDiv(lo.UnixMilli()-e, w)
		if floorDiv(hi.UnixMilli()+e, w) != k {
			return est, false // the interval the count is of is not known
		}
		est.k = k
		pinned := func(t time.Time) bool {
			return floorDiv(t.UnixMilli()-e, w) == k && floorDiv(t.UnixMilli()+e, w) == k
		}
		in = func(o *record) bool {
			if o == rec {
				return pinned(o.sent)
			}
			return pinned(o.sent) && (before(o) || pinned(l.windowBound(o, win, hi)))
		}
		maybe = func(o *record) bool {
			return floorDiv(o.sent.UnixMilli()-e, w) <= k && floorDiv(l.windowBound(o, win, hi).UnixMilli()+e, w) >= k
		}
	} else {
		est.k = floorDiv(hi.UnixMilli(), w)
	}
	own, mine := 0, 0 // own: surely counted; mine: perhaps counted
	for i := range l.recs {
		o := &l.recs[i]
		if o.refused || o.fate == unsent {
			continue // the upstream did not count it
		}
		switch {
		case !o.counted:
		case o == rec && r.Kind != Fixed:
			// It arrived before the count was read; in its span if it left
			// within W of the answer.
			if !o.sent.Before(hi.Add(-r.Window)) {
				own += o.units
			}
		case in(o):
			own += o.units
		}
		if o == rec || maybe(o) {
			mine += o.units
		}
	}
	est.out, est.least = max(used-own, 0), max(used-mine, 0)
	if l.off.has(offUsageProven) {
		est.least = 0
	}
	return est, true
}

// note records what a report showed in its window and group of rule i, and
// sets the rule's reservation.
func (l *Limiter) note(i int, est estimate) {
	u := &l.usage[i]
	if !u.seen {
		u.seen = true
		l.changes++ // the rule's limit is no longer held back for the first report
	}
	switch last := &u.epochs[(u.n+usageEpochs-1)%usageEpochs]; {
	case u.n > 0 && last.k == est.k && last.g == est.g:
		last.tight = min(last.tight, est.out)
		last.least = max(last.least, est.least)
		last.lowest, last.highest = min(last.lowest, est.out), max(last.highest, est.least)
		last.peak = max(last.peak, est.out)
	case u.n > 0 && last.k == est.k && est.g > last.g:
		last.most = last.value()
		last.g, last.tight, last.least = est.g, est.out, est.least
		last.lowest, last.highest = min(last.lowest, est.out), max(last.highest, est.least)
		last.peak = max(last.peak, est.out)
	case u.n > 0 && (est.k < last.k || est.g < last.g):
		// A report of an earlier window or group, answered late: it counts in
		// the latest, on its own.
		last.most = max(last.most, est.out)
		last.lowest, last.highest = min(last.lowest, est.out), max(last.highest, est.least)
		last.peak = max(last.peak, est.out)
	default:
		u.epochs[u.n%usageEpochs] = epochMost{k: est.k, g: est.g, tight: est.out, least: est.least, lowest: est.out, highest: est.least, peak: est.out}
		u.n++
	}
	most, lowest, highest, peak := 0, -1, 0, 0
	for _, e := range u.epochs[:min(u.n, usageEpochs)] {
		most = max(most, e.value())
		peak = max(peak, e.peak)
		if lowest < 0 || e.lowest < lowest {
			lowest = e.lowest
		}
		highest = max(highest, e.highest)
	}
	reserve := 0
	switch {
	case most > 0 && highest <= lowest:
		reserve = most
	case most > 0 && l.off.has(offUsagePeak):
		reserve = most + highest - lowest
	case most > 0:
		reserve = max(most+highest-lowest, peak)
	}
	if reserve != u.reserve {
		u.reserve = reserve
		l.changes++
	}
}

// limitOf returns the limit rule i's tests use for a send of w units: its
// Limit less the reservation, but never below what one send of w needs (the key
// keeps sending, one send a window, whatever the reports say).
func (l *Limiter) limitOf(i, w int) int {
	r := l.set.rules[i]
	if len(l.usage) == 0 || l.off.has(offReserve) {
		return r.Limit
	}
	u := l.usage[i]
	reserve := u.reserve
	if u.reported && !u.seen {
		reserve = r.Limit
	}
	return max(r.Limit-reserve, min(w, r.Limit))
}

// Reservation returns the units of rule r (one of Config.Rules) the limiter
// keeps for another client's usage, as the upstream's reports show it (see
// Observed), and false for a rule it does not enforce.
func (l *Limiter) Reservation(r Rule) (int, bool) {
	l.init()
	for i, rr := range l.set.rules {
		if rr.Rule == r {
			if len(l.usage) == 0 {
				return 0, true
			}
			u := l.usage[i]
			if u.reported && !u.seen {
				return r.Limit, true
			}
			return u.reserve, true
		}
	}
	return 0, false
}

// reportedRules checks Config.Reported against the rules and marks the usage of
// each rule it names.
func (s *settings) reportedRules(reported []Rule) error {
	if len(reported) == 0 {
		return nil
	}
	s.usage = make([]bool, len(s.rules))
	for _, r := range reported {
		found := false
		for i, rr := range s.rules {
			if rr.Rule == r {
				s.usage[i], found = true, true
			}
		}
		switch {
		case !found:
			return fmt.Errorf("%w: reported rule %v is not among the rules", ErrInvalidConfig, r)
		case r.Kind == Bucket:
			return fmt.Errorf("%w: reported rule %v: a bucket's reported usage is not read; report a sliding or fixed rule", ErrInvalidConfig, r)
		}
		for _, rr := range s.rules {
			if rr.Rule == r && rr.Kind == Fixed && 2*rr.edge >= r.Window.Milliseconds() {
				return fmt.Errorf("%w: reported rule %v: its clock offset covers every alignment of its intervals, so no count can be placed in one; lower the clock offset below half the window", ErrInvalidConfig, r)
			}
		}
	}
	return nil
}
