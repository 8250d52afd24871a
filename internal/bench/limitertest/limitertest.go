// Package limitertest simulates the upstream and one key's client on a simulated
// clock, so pacers can be tested and compared without sleeping or a network.
//
// The simulated upstream follows the reference rules: it records the arrival
// times of accepted requests floored to whole milliseconds, accepts a request only
// if its arrival minus that of the Limit-th previous accepted one is more than the
// Window for every rule (rejected requests are not recorded), and then checks that
// the nonce is above the last accepted one. It counts the other kinds of rule
// too: a Fixed rule per calendar interval of its own clock (Upstream.Offset from
// the simulation's), a Bucket rule as a counter falling at its Rate (in steps of
// its Window, if set) that refuses units taking it above its Limit. Requests are checked in arrival order;
// requests arriving at the very same instant are checked latest nonce first, the
// worst order for the client.
//
// The simulated client is as unkind as the world: it sends request i as soon as
// it is ready and the pacer allows (its timer may fire late, Run.Late), reports
// it written once it has left (Run.Leave after the send), and reports the answer
// when it comes back: Answered, Inverted for a 400, Rejected for a 429, or Lost
// when none came back within its timeout (Run.GiveUp), though the request may
// still arrive afterwards. It may peek at Next at any moment (Run.Peek), send
// weights (Run.Weight), and read its times from a clock that steps
// (Run.Clock).
package limitertest

import (
	"container/heap"
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"github.com/ratefleet/ratefleet/internal/limiter"
)

// Pacer is what the simulated client drives: the limiter, or a baseline.
type Pacer interface {
	Next(now time.Time) time.Time
	Late(at time.Time, d time.Duration)
	Sent(now time.Time) (limiter.Ticket, error)
	Wrote(t limiter.Ticket, at time.Time)
	Answered(t limiter.Ticket, at time.Time)
	Inverted(t limiter.Ticket, at time.Time)
	Lost(t limiter.Ticket, at time.Time)
	Rejected(t limiter.Ticket, at time.Time, retryAfter time.Duration)
	Quarantined() bool
}

// Observer is a Pacer that reads the upstream's usage reports, as
// limiter.Limiter does (Run.Usage).
type Observer interface {
	Observed(t limiter.Ticket, r limiter.Rule, used int)
}

// Weighted is a Pacer that counts weights, as limiter.Limiter does.
type Weighted interface {
	NextN(now time.Time, w int) time.Time
	SentN(now time.Time, w int) (limiter.Ticket, error)
}

// Upstream is the simulated upstream's state for one key.
type Upstream struct {
	rules     []limiter.Rule
	rings     [][]int64 // per Sliding rule, the arrivals in whole ms of the last Limit accepted requests
	pos       []int
	interval  []int64   // per Fixed rule, the interval counted
	count     []int     // and its count
	level     []float64 // per Bucket rule, the counter
	levelAt   []int64   // as of this arrival, in whole ms
	lastNonce uint64

	// Offset is how far the upstream's clock is behind the simulation's: it
	// starts its Fixed intervals (and its Buckets' decay steps) Offset past each
	// multiple of the rule's Window on the simulation's clock.
	Offset time.Duration

	// Accepted, RateLimited and BadNonce count the answers 200, 429 and 400.
	Accepted, RateLimited, BadNonce int
}

// NewUpstream returns an upstream enforcing rules (limiter.DefaultRule when none).
// Its record starts all zeros, as the reference upstream's; its fixed counts and
// buckets start empty.
func NewUpstream(rules []limiter.Rule) *Upstream {
	if len(rules) == 0 {
		rules = []limiter.Rule{limiter.DefaultRule}
	}
	n := len(rules)
	u := &Upstream{rules: rules, rings: make([][]int64, n), pos: make([]int, n),
		interval: make([]int64, n), count: make([]int, n), level: make([]float64, n), levelAt: make([]int64, n)}
	for i, r := range rules {
		if r.Kind == limiter.Sliding {
			u.rings[i] = make([]int64, r.Limit)
		}
		u.interval[i] = math.MinInt64
		u.levelAt[i] = math.MinInt64
	}
	return u
}

// Arrive checks a request of one unit with the given nonce arriving at a and
// returns the HTTP status of its answer: 200, 429 or 400. A nonce of 0 is none:
// the upstream checks no order.
func (u *Upstream) Arrive(a time.Time, nonce uint64) int { return u.ArriveN(a, nonce, 1) }

// ArriveN is Arrive for a request of w units: for a Sliding rule each unit must
// be more than the Window past the Limit-th previous accepted unit, the
// request's own earlier units included; a Fixed rule's interval must hold the
// w units, and a Bucket's counter take them. Arrivals must come in time order.
func (u *Upstream) ArriveN(a time.Time, nonce uint64, w int) int {
	ms := a.UnixMilli()
	w = max(w, 1)
	ok := true
	for i, r := range u.rules {
		switch r.Kind {
		case limiter.Fixed:
			k := floorDiv(a.UnixNano()-int64(u.Offset), int64(r.Window))
			if k != u.interval[i] {
				u.interval[i], u.count[i] = k, 0
			}
			ok = ok && u.count[i]+w <= r.Limit
		case limiter.Bucket:
			u.drain(i, r, a)
			ok = ok && u.level[i]+float64(w) <= float64(r.Limit)+1e-9
		default:
			n := len(u.rings[i])
			if w > n {
				ok = false
				continue
			}
			for k := range w {
				if ms-u.rings[i][(u.pos[i]+k)%n] <= r.Window.Milliseconds() {
					ok = false
				}
			}
		}
	}
	if !ok {
		u.RateLimited++
		return 429
	}
	for i, r := range u.rules {
		switch r.Kind {
		case limiter.Fixed:
			u.count[i] += w
		case limiter.Bucket:
			u.level[i] += float64(w)
		default:
			for range w {
				u.rings[i][u.pos[i]] = ms
				u.pos[i] = (u.pos[i] + 1) % len(u.rings[i])
			}
		}
	}
	if nonce == 0 {
		u.Accepted++
		return 200
	}
	if nonce <= u.lastNonce {
		u.BadNonce++
		return 400
	}
	u.lastNonce = nonce
	u.Accepted++
	return 200
}

// drain lowers bucket i's counter from its last arrival to a, as the upstream's
// clock (Offset behind the simulation's) reads them in whole milliseconds.
func (u *Upstream) drain(i int, r limiter.Rule, a time.Time) {
	now := floorDiv(a.UnixNano()-int64(u.Offset), int64(time.Millisecond)) * int64(time.Millisecond)
	from := u.levelAt[i]
	u.levelAt[i] = now
	if from == math.MinInt64 || now <= from {
		return
	}
	var fall float64
	if step := int64(r.Window); step > 0 {
		fall = float64(floorDiv(now, step)-floorDiv(from, step)) * r.Rate * r.Window.Seconds()
	} else {
		fall = time.Duration(now-from).Seconds() * r.Rate
	}
	u.level[i] = max(0, u.level[i]-fall)
}

// Used returns the units rule i counts at t, as a usage header reports them: a
// Sliding rule's accepted units arriving in [t − Window, t] (in whole ms), a
// Fixed rule's in the interval holding t, a Bucket's counter drained to t.
// Arrivals until t must have been checked.
func (u *Upstream) Used(i int, t time.Time) int {
	r := u.rules[i]
	switch r.Kind {
	case limiter.Fixed:
		if floorDiv(t.UnixNano()-int64(u.Offset), int64(r.Window)) != u.interval[i] {
			return 0
		}
		return u.count[i]
	case limiter.Bucket:
		level, at := u.level[i], u.levelAt[i]
		u.drain(i, r, t)
		used := int(math.Ceil(u.level[i] - 1e-9))
		u.level[i], u.levelAt[i] = level, at
		return used
	}
	from := t.UnixMilli() - r.Window.Milliseconds()
	n := 0
	for _, a := range u.rings[i] {
		if a >= from {
			n++
		}
	}
	return n
}

// Level returns the counter of rule i, a Bucket, as of the last arrival.
func (u *Upstream) Level(i int) float64 { return u.level[i] }

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && a < 0 {
		q--
	}
	return q
}

// Trip is what happens to one request between client and upstream.
type Trip struct {
	// In and Out are the one-way delays to and from the upstream.
	In, Out time.Duration
	// Dropped requests never reach the upstream; no answer comes back.
	Dropped bool
	// Unanswered requests reach the upstream, but their answer never comes back.
	Unanswered bool
}

// Delays returns the trip of request i, counted from 0.
type Delays func(i int) Trip

// Constant gives every request the same delays.
func Constant(in, out time.Duration) Delays {
	return func(int) Trip { return Trip{In: in, Out: out} }
}

// Cycle gives request i the trip trips[i % len(trips)].
func Cycle(trips ...Trip) Delays {
	return func(i int) Trip { return trips[i%len(trips)] }
}

// Blocks gives n requests the trip a, the next n the trip b, and so on: with n the
// rule's Limit, each request of a slow block is the Limit-th previous of one in a
// fast block, the worst case for a pacer that only looks at send times.
func Blocks(n int, a, b Trip) Delays {
	return func(i int) Trip {
		if (i/n)%2 == 0 {
			return a
		}
		return b
	}
}

// Uniform draws each delay uniformly from 0..maxDelay in steps of step (1 ms for
// the reference upstream, 1 ns for arbitrary instants), reproducibly from seed.
// It must be called again for each run: the draws depend on the order of calls.
func Uniform(seed uint64, maxDelay, step time.Duration) Delays {
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	n := int64(maxDelay/step) + 1
	draw := func() time.Duration { return time.Duration(rng.Int64N(n)) * step }
	return func(int) Trip { return Trip{In: draw(), Out: draw()} }
}

// Asymmetric draws the incoming delay uniformly from 0..in and the outgoing one
// from 0..out, in steps of step, reproducibly from seed.
func Asymmetric(seed uint64, in, out, step time.Duration) Delays {
	rng := rand.New(rand.NewPCG(seed, 0xa5))
	draw := func(m time.Duration) time.Duration { return time.Duration(rng.Int64N(int64(m/step)+1)) * step }
	return func(int) Trip { return Trip{In: draw(in), Out: draw(out)} }
}

// WithSpikes wraps d so that a share of requests, drawn reproducibly from seed,
// take extra longer on the way in.
func WithSpikes(d Delays, seed uint64, share float64, extra time.Duration) Delays {
	rng := rand.New(rand.NewPCG(seed, 0x5b1e))
	return func(i int) Trip {
		t := d(i)
		if rng.Float64() < share {
			t.In += extra
		}
		return t
	}
}

// Drifting wraps d so that request i takes i*per longer on the way in, up to
// most: delays that creep up over time.
func Drifting(d Delays, per, most time.Duration) Delays {
	return func(i int) Trip {
		t := d(i)
		t.In += min(time.Duration(i)*per, most)
		return t
	}
}

// WithLoss wraps d so that a share dropped of requests never arrive and a share
// unanswered arrive but get no answer, reproducibly from seed.
func WithLoss(d Delays, seed uint64, dropped, unanswered float64) Delays {
	rng := rand.New(rand.NewPCG(seed, 0x1055))
	return func(i int) Trip {
		t := d(i)
		switch x := rng.Float64(); {
		case x < dropped:
			t.Dropped = true
		case x < dropped+unanswered:
			t.Unanswered = true
		}
		return t
	}
}

// Run is one simulated run of a single key.
type Run struct {
	// Pacer paces the sends.
	Pacer Pacer
	// Rules are the upstream's rules; limiter.DefaultRule when empty.
	Rules []limiter.Rule
	// Requests is how many requests to send.
	Requests int
	// Start is when the run starts; a fixed instant when zero.
	Start time.Time
	// Delays gives each request its trip.
	Delays Delays
	// Ready returns when request i may be sent at the earliest; when nil, every
	// request is ready at Start (a saturating load).
	Ready func(i int) time.Time
	// GiveUp is the client's timeout: a request with no answer that long after
	// it was sent is reported Lost, and an answer coming later is dropped; the
	// request itself still arrives when its trip says. 1 s when 0.
	GiveUp time.Duration
	// Late, if not nil, returns how late the client's timer fires for request i:
	// when the pacer made it wait, it is sent that long after the instant Next
	// gave (an overloaded scheduler), and the pacer is told (Pacer.Late).
	Late func(i int) time.Duration
	// Leave, if not nil, returns how long request i takes to leave after it is
	// sent: it is reported written then, and its trip starts then.
	Leave func(i int) time.Duration
	// Weight, if not nil, returns request i's weight; the Pacer must then be
	// Weighted.
	Weight func(i int) int
	// Unordered sends no nonce: the upstream checks no order.
	Unordered bool
	// Peek calls Next at every event as well, as a worker does to show when the
	// key is free: a pacer whose Next has side effects behaves differently.
	Peek bool
	// Clock, if not nil, maps the true time to the client's clock, which the
	// pacer is given (a clock that steps); the upstream keeps the true time.
	// It must map the true Start to itself.
	Clock func(t time.Time) time.Time
	// Outside are arrivals of another client using the same key (nonce
	// unchecked), which the pacer knows nothing of.
	Outside []time.Time
	// OnSend, if not nil, is called with every send.
	OnSend func(i int, at time.Time)
	// Offset is the upstream's calendar offset (Upstream.Offset).
	Offset time.Duration
	// Usage makes every answer carry the upstream's count of each rule, read as
	// the answer comes back (Upstream.Used), which a Pacer that is an Observer
	// is told after the answer, as usage headers tell a worker.
	Usage bool
}

// Result is what a Run observed.
type Result struct {
	// Sent counts the requests sent; Accepted, RateLimited and BadNonce the
	// upstream's answers 200, 429 (a window broken) and 400 (a nonce arriving out
	// of order) to them, whether or not the client saw them; Lost the requests
	// reported Lost; OutsideRejected the 429s of the other client (Run.Outside).
	Sent, Accepted, RateLimited, BadNonce, Lost, OutsideRejected int
	// Quarantined reports whether the pacer stopped sending because its ban guard
	// tripped.
	Quarantined bool
	// FirstSend and LastSend bound the sends.
	FirstSend, LastSend time.Time
	// Err says how the pacer broke its contract: Next before now, or Sent failing
	// at the instant Next gave.
	Err error
}

// Rate returns the sends a second between the first and the last send.
func (r Result) Rate() float64 {
	d := r.LastSend.Sub(r.FirstSend)
	if r.Sent < 2 || d <= 0 {
		return 0
	}
	return float64(r.Sent-1) / d.Seconds()
}

// Execute runs the simulation to the end: every request sent (or the pacer
// quarantined) and every answer delivered.
func (r Run) Execute() Result {
	start := r.Start
	if start.IsZero() {
		start = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	}
	giveUp := r.GiveUp
	if giveUp <= 0 {
		giveUp = time.Second
	}
	clock := r.Clock
	if clock == nil {
		clock = func(t time.Time) time.Time { return t }
	}
	// Each request's weight is drawn once.
	weights := map[int]int{}
	weight := func(i int) int {
		if r.Weight == nil {
			return 1
		}
		w, ok := weights[i]
		if !ok {
			w = r.Weight(i)
			weights[i] = w
		}
		return w
	}
	next := func(now time.Time, w int) time.Time {
		if wp, ok := r.Pacer.(Weighted); ok && w > 1 {
			return wp.NextN(now, w)
		}
		return r.Pacer.Next(now)
	}
	sent := func(now time.Time, w int) (limiter.Ticket, error) {
		if wp, ok := r.Pacer.(Weighted); ok && w > 1 {
			return wp.SentN(now, w)
		}
		return r.Pacer.Sent(now)
	}
	up := NewUpstream(r.Rules)
	up.Offset = r.Offset
	var (
		res      Result
		events   eventQueue
		now      = start
		seq      uint64
		lateDone = -1 // the request whose late timer already fired
		ended    = map[uint64]bool{}
	)
	push := func(e event) {
		seq++
		e.seq = seq
		heap.Push(&events, e)
	}
	for _, at := range r.Outside {
		push(event{at: at, kind: arrival, outside: true})
	}
	for i := 0; ; {
		sending := i < r.Requests && !res.Quarantined
		var at, wake time.Time
		if sending {
			from := now
			if r.Ready != nil {
				from = later(from, r.Ready(i))
			}
			c := clock(from)
			n := next(c, weight(i))
			if n.Before(c) {
				res.Err = fmt.Errorf("request %d: Next(%s) = %s, before the time given", i, c, n)
				return res
			}
			at = from.Add(n.Sub(c)) // the same wait on the true clock
			wake = at
			if at.After(now) && r.Late != nil && lateDone != i {
				wake = at.Add(max(r.Late(i), 0))
			}
		}
		if len(events) > 0 && (!sending || due(events[0], wake)) {
			e := heap.Pop(&events).(event)
			now = later(now, e.at)
			c := clock(e.at)
			switch e.kind {
			case arrival:
				if e.outside {
					// Counted apart from the client's own answers.
					if up.Arrive(e.at, 0) == 429 {
						res.OutsideRejected++
						up.RateLimited--
					} else {
						up.Accepted--
					}
					break
				}
				status := up.ArriveN(e.at, e.nonce, e.units)
				if !e.trip.Unanswered {
					push(event{at: e.at.Add(e.trip.Out), kind: answer, ticket: e.ticket, status: status, id: e.id})
				}
			case wrote:
				r.Pacer.Wrote(e.ticket, c)
			case answer:
				if ended[e.id] {
					break // the client gave up on it
				}
				ended[e.id] = true
				switch e.status {
				case 429:
					r.Pacer.Rejected(e.ticket, c, 0)
				case 400:
					r.Pacer.Inverted(e.ticket, c)
				default:
					r.Pacer.Answered(e.ticket, c)
				}
				if o, ok := r.Pacer.(Observer); ok && r.Usage {
					for k, rule := range up.rules {
						o.Observed(e.ticket, rule, up.Used(k, e.at))
					}
				}
				res.Quarantined = res.Quarantined || r.Pacer.Quarantined()
			case lost:
				if !ended[e.id] {
					ended[e.id] = true
					res.Lost++
					r.Pacer.Lost(e.ticket, c)
				}
			}
			if r.Peek {
				r.Pacer.Next(c)
			}
			continue
		}
		if !sending {
			break
		}
		if wake.After(now) {
			now = wake
			if wake.After(at) {
				lateDone = i
				r.Pacer.Late(clock(now), wake.Sub(at))
			}
			continue // ask again at that instant: what happened meanwhile counts
		}
		w := weight(i)
		t, err := sent(clock(now), w)
		if err != nil {
			res.Err = fmt.Errorf("request %d: Sent at the instant Next gave (%s): %w", i, now, err)
			return res
		}
		if res.Sent == 0 {
			res.FirstSend = now
		}
		res.Sent++
		res.LastSend = now
		if r.OnSend != nil {
			r.OnSend(i, now)
		}
		left := now
		if r.Leave != nil {
			left = now.Add(max(r.Leave(i), 0))
		}
		if left.Equal(now) {
			r.Pacer.Wrote(t, clock(now))
		} else {
			push(event{at: left, kind: wrote, ticket: t})
		}
		nonce := uint64(i + 1)
		if r.Unordered {
			nonce = 0
		}
		trip := r.Delays(i)
		push(event{at: now.Add(giveUp), kind: lost, ticket: t, id: uint64(i)})
		delete(weights, i)
		if !trip.Dropped {
			push(event{at: left.Add(trip.In), kind: arrival, ticket: t, sent: now, nonce: nonce, units: w, trip: trip, id: uint64(i)})
		}
		i++
	}
	res.Accepted, res.RateLimited, res.BadNonce = up.Accepted, up.RateLimited, up.BadNonce
	return res
}

// due reports whether e happens before a send at next. An arrival at the very
// instant of a send waits for it, so that requests arriving together are checked
// in the worst order even when one was sent at that instant.
func due(e event, next time.Time) bool {
	if e.kind == arrival {
		return e.at.Before(next)
	}
	return !e.at.After(next)
}

type eventKind int

const (
	arrival eventKind = iota // checked first at equal instants
	wrote
	answer
	lost
)

type event struct {
	at     time.Time
	kind   eventKind
	seq    uint64
	ticket limiter.Ticket
	sent   time.Time
	nonce  uint64
	units  int
	status int
	trip   Trip
	id     uint64 // the request's index
	// outside is another client's arrival: no answer to the pacer.
	outside bool
}

// eventQueue orders events by time, then kind; arrivals at the same instant
// latest nonce first (the worst case), the rest in the order they were made.
type eventQueue []event

func (q eventQueue) Len() int { return len(q) }
func (q eventQueue) Less(i, j int) bool {
	a, b := q[i], q[j]
	switch {
	case !a.at.Equal(b.at):
		return a.at.Before(b.at)
	case a.kind != b.kind:
		return a.kind < b.kind
	case a.kind == arrival && a.nonce != b.nonce:
		return a.nonce > b.nonce
	}
	return a.seq < b.seq
}
func (q eventQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *eventQueue) Push(x any)   { *q = append(*q, x.(event)) }
func (q *eventQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	*q = old[:len(old)-1]
	return e
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
