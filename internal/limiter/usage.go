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
// they arrived before u). With own the
// units so found, o = c − own is at least the other client's units in the count:
// own is a lower bound of this limiter's units counted, so o errs high. It errs
// high by the units whose arrival the bounds cannot place (in flight around u),
// and by those the limiter no longer keeps.
//
// The prediction. The other client keeps calling, so what it used in one window
// it is taken to use in the next: R is the largest o seen in the last
// usageEpochs windows (for a sliding rule the windows of the answer times, for a
// fixed one its intervals) plus a headroom of max(1, o/8) units, and 0 once those
// windows showed no outside usage. Only windows with evidence count: a key that
// sends nothing keeps its reservation until its answers show otherwise. Until a
// rule's first report (Config.Reported), the rule holds one send: the key sends
// once, reads the count from its answer, and only then fills what is left.
//
// Why it is safe. The reservation only lowers the limit each rule's test uses,
// and every test is shown safe for any limit up to the rule's own (the proofs
// above count units against N − w; they hold for any smaller N): R can only delay
// a send, never let one leave that the rule without R would hold. With R at least
// the other client's units in any window, the two together stay within N.
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

// usage is what the reports of one rule showed.
type usage struct {
	reported bool // Config.Reported names the rule: before its first report, hold back
	seen     bool // a report came
	epochs   [usageEpochs]epochMost
	n        int // epochs noted so far; epochs[(n-1)%usageEpochs] is the latest
	reserve  int
}

// epochMost is the largest outside count seen in one window.
type epochMost struct {
	k    int64
	most int
}

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
		k, out, ok := l.outside(rr, rec, used)
		if !ok {
			continue
		}
		l.note(i, k, out)
	}
}

// outside returns the window (or interval) k the report on rec counts in and the
// outside units it shows, erring high; false when the report cannot be placed.
func (l *Limiter) outside(r *rule, rec *record, used int) (int64, int, bool) {
	lo := rec.sent
	if rec.hasLeft {
		lo = later(lo, rec.left)
	}
	hi := rec.at
	win := l.window()
	w := r.Window.Milliseconds()
	var k int64
	in := func(o *record) bool { // the unit surely counted at every u in [lo, hi]
		return !o.sent.Before(hi.Add(-r.Window)) && !l.windowBound(o, win, hi).After(lo)
	}
	if r.Kind == Fixed {
		e := r.edge
		k = floorDiv(lo.UnixMilli()-e, w)
		if floorDiv(hi.UnixMilli()+e, w) != k {
			return 0, 0, false // the interval the count is of is not known
		}
		pinned := func(t time.Time) bool {
			return floorDiv(t.UnixMilli()-e, w) == k && floorDiv(t.UnixMilli()+e, w) == k
		}
		in = func(o *record) bool {
			if o == rec {
				return pinned(o.sent)
			}
			return pinned(o.sent) && pinned(l.windowBound(o, win, hi))
		}
	} else {
		k = floorDiv(hi.UnixMilli(), w)
	}
	own := 0
	for i := range l.recs {
		o := &l.recs[i]
		if !o.counted {
			continue
		}
		if o == rec && r.Kind != Fixed {
			// It arrived before the count was read; in its span if it left
			// within W of the answer.
			if !o.sent.Before(hi.Add(-r.Window)) {
				own += o.units
			}
			continue
		}
		if in(o) {
			own += o.units
		}
	}
	return k, max(used-own, 0), true
}

// note records an outside count out in window k of rule i, and sets the rule's
// reservation.
func (l *Limiter) note(i int, k int64, out int) {
	u := &l.usage[i]
	if !u.seen {
		u.seen = true
		l.changes++ // the rule's limit is no longer held back for the first report
	}
	switch last := &u.epochs[(u.n+usageEpochs-1)%usageEpochs]; {
	case u.n > 0 && last.k == k:
		last.most = max(last.most, out)
	case u.n > 0 && k < last.k:
		// A report of an earlier window, answered late: it counts in the latest.
		last.most = max(last.most, out)
	default:
		u.epochs[u.n%usageEpochs] = epochMost{k: k, most: out}
		u.n++
	}
	most := 0
	for _, e := range u.epochs[:min(u.n, usageEpochs)] {
		most = max(most, e.most)
	}
	reserve := 0
	if most > 0 {
		reserve = most + max(1, most/8)
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
