package limiter

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"
)

// Costs in several dimensions
//
// An upstream may count several things at once: requests, a weight per call,
// orders, input and output tokens. A Set keeps one Limiter per Dimension, each
// with the rules that count it, and a send goes only when every dimension it
// costs something in has room for its cost. Each Limiter's argument holds on its
// own (its rules count only its units), so the Set is safe when each is.
//
// A dimension the upstream charges only once it has answered (output tokens,
// known from the answer) is Answered: a send reserves its declared most, and the
// dimension lets a send go only when the rules have room for every reservation
// still open plus the send's own, as if all were charged at the send's arrival;
// when the answer comes back, its actual cost (Used) is charged at the instant
// the answer was read, which is no earlier than the upstream charged it, and the
// reservation is released. A send that ends with no answer is charged its
// reservation as given up then. An upstream that charges the most up front and
// refunds the rest at the end (Anthropic's output tokens) is covered the same way.

// Dimension is one thing the upstream counts, and its rules.
type Dimension struct {
	// Name names it: weight (a request's weight, 1 unless it says more),
	// requests, orders, input_tokens, output_tokens, tokens, or any a profile
	// names.
	Name string
	// Rules are the rules counting it, in its own units (tokens, not Units).
	Rules []Rule
	// Unit is how many of its own units one limiter unit stands for, 1 when 0:
	// a rule may then count up to MaxLimit·Unit (tokens by the hundred
	// thousand). The costs of its sends add up, and each send is charged the
	// whole Units their running total has reached, rounded up (a send whose
	// cost the units already charged cover is charged none); so the upstream
	// never counts more than one Unit beyond what the limiter does, and each
	// limit, in Units, is rounded down less one.
	Unit int64
	// Answered says the upstream charges this dimension once it has answered,
	// and the actual cost is known only then (output tokens).
	Answered bool
	// Whole are the rules as the upstream states them, before the key's share
	// of a rule counted across keys: parallel to Rules, nil when the same. A
	// usage report (Observed) and Config.Reported name a rule this way.
	Whole []Rule
}

// label names d in a State's Dims: its name, with its Unit for a scaled one
// (output_tokens/8).
func (d Dimension) label() string {
	if d.Unit > 1 {
		return fmt.Sprintf("%s/%d", d.Name, d.Unit)
	}
	return d.Name
}

// SetConfig configures a Set: Config's delays, margins and thresholds apply to
// every dimension (its Rules are ignored), and Dims names the dimensions. The
// order rule, if Config has one, is kept by the first dimension only.
type SetConfig struct {
	Config
	Dims []Dimension
}

// Cost is what one send costs, in each dimension's own units, by dimension
// name; a dimension it does not name costs nothing. A Set needs a send to cost
// at least 1 in its first dimension (requests or weight).
type Cost map[string]int64

// ErrCost is wrapped by the error of Check for a cost the Set cannot send.
var ErrCost = errors.New("cost not possible under the rules")

// Set is the limiter of one key whose upstream counts several dimensions; see
// Dimension. Like a Limiter it is not safe for concurrent use.
type Set struct {
	dims  []*dim
	seq   uint64
	open  map[uint64]*setSend
	ended map[uint64]*setSend // the latest sends ended, for their usage reports
	order []uint64            // ended's sends, oldest first
	off   ablation            // rules switched off, in tests only
}

// keptEnded is how many ended sends a Set keeps for their usage reports.
const keptEnded = 256

type dim struct {
	Dimension
	label    string // Name, or Name/Unit for a scaled one
	lim      *Limiter
	scaled   []Rule // Rules in units of Unit, as the limiter enforces them
	reserved int    // units reserved by open sends (Answered dimensions)
	cost     int64  // own units charged so far
	paid     int64  // limiter units charged so far: ⌈cost / Unit⌉
}

// setSend is one send of a Set: its ticket in each dimension that charged it
// at the send, the units it reserved in each Answered one, and their actual
// cost once known.
type setSend struct {
	tickets []Ticket
	reserve []int
	actual  []int64 // -1 until Used says
	spent   []int64 // own units charged at the send
	paid    []int64 // limiter units charged at the send
	left    time.Time
}

// NewSet returns a Set with nothing sent.
func NewSet(cfg SetConfig) (*Set, error) { return newSet(cfg, nil) }

// RestoreSet returns a Set that resumes from st, as Restore does for each
// dimension: the first from st itself, the others from st.Dims. A dimension st
// does not carry is taken as full (its whole capacity sent as late as the latest
// bound st records), which only errs on the side of waiting.
func RestoreSet(cfg SetConfig, st State) (*Set, error) { return newSet(cfg, &st) }

func newSet(cfg SetConfig, st *State) (*Set, error) {
	if len(cfg.Dims) == 0 {
		return nil, fmt.Errorf("%w: a set needs at least one dimension", ErrInvalidConfig)
	}
	s := &Set{open: map[uint64]*setSend{}, ended: map[uint64]*setSend{}}
	seen := map[string]bool{}
	for i, d := range cfg.Dims {
		label := d.label()
		switch {
		case d.Name == "":
			return nil, fmt.Errorf("%w: dimension %d has no name", ErrInvalidConfig, i+1)
		case seen[label]:
			return nil, fmt.Errorf("%w: dimension %q given twice", ErrInvalidConfig, label)
		case i == 0 && d.Unit > 1:
			return nil, fmt.Errorf("%w: dimension %q: the first dimension counts whole units (a rule of at most %d)", ErrInvalidConfig, d.Name, MaxLimit)
		case len(d.Rules) == 0:
			return nil, fmt.Errorf("%w: dimension %q has no rules", ErrInvalidConfig, d.Name)
		case d.Whole != nil && len(d.Whole) != len(d.Rules):
			return nil, fmt.Errorf("%w: dimension %q: %d whole rules for %d rules", ErrInvalidConfig, d.Name, len(d.Whole), len(d.Rules))
		case d.Unit < 0:
			return nil, fmt.Errorf("%w: dimension %q: unit %d is negative", ErrInvalidConfig, d.Name, d.Unit)
		case i == 0 && d.Answered:
			return nil, fmt.Errorf("%w: dimension %q: the first dimension is charged at the send (requests or weight), not once answered", ErrInvalidConfig, d.Name)
		}
		seen[label] = true
		d.Unit = max(d.Unit, 1)
		if d.Whole == nil {
			d.Whole = d.Rules
		}
		c := cfg.Config
		c.Rules, c.Reported = nil, nil
		for j, r := range d.Rules {
			sr, err := r.scaled(d.Unit)
			if err != nil {
				return nil, fmt.Errorf("%w: %s rule %d (%v): %s", ErrInvalidConfig, d.Name, j+1, r, err)
			}
			c.Rules = append(c.Rules, sr)
			if slices.Contains(cfg.Reported, d.Whole[j]) {
				c.Reported = append(c.Reported, sr)
			}
		}
		c.Unordered = c.Unordered || i > 0
		var (
			l   *Limiter
			err error
		)
		switch {
		case st == nil:
			l, err = New(c)
		case i == 0:
			l, err = Restore(c, withoutDims(*st))
		default:
			ds, ok := st.Dims[label]
			if !ok {
				ds = fullFrom(*st)
			}
			l, err = Restore(c, ds)
		}
		if err != nil && len(cfg.Dims) > 1 {
			return nil, fmt.Errorf("dimension %q: %w", d.Name, err)
		}
		if err != nil {
			return nil, err
		}
		s.dims = append(s.dims, &dim{Dimension: d, label: label, lim: l, scaled: c.Rules})
	}
	return s, nil
}

func withoutDims(st State) State {
	st.Dims = nil
	return st
}

// fullFrom returns the state of a dimension st does not carry: its whole
// capacity sent as late as st's latest bound, with st's delays and 429s.
func fullFrom(st State) State {
	out := State{Version: StateVersion, MaxDelay: st.MaxDelay, BaseDelay: st.BaseDelay,
		PauseUntil: st.PauseUntil, Rejections: st.Rejections, Quarantined: st.Quarantined}
	if n := len(st.UpperBounds); n > 0 {
		out.UpperBounds = []time.Time{st.UpperBounds[n-1]}
		out.Sends = MaxLimit
	}
	return out
}

// scaled returns r counted in units of unit: its limit rounded down, its rate
// divided.
func (r Rule) scaled(unit int64) (Rule, error) {
	if unit == 1 {
		return r, nil
	}
	lim := int64(r.Limit)/unit - 1 // the running total may be a unit ahead of the charges
	if lim < 1 {
		return Rule{}, fmt.Errorf("limit %d holds fewer than two units of %d", r.Limit, unit)
	}
	r.Limit = int(lim)
	r.Rate /= float64(unit)
	return r, nil
}

// units returns cost c in d's units, rounded up: the most one send of it may be
// charged, and what it reserves.
func (d *dim) units(c Cost) int {
	v := c[d.Name]
	if v <= 0 {
		return 0
	}
	return int(min((v+d.Unit-1)/d.Unit, math.MaxInt32))
}

// due returns the units a charge of v own units takes now: those its running
// total reaches beyond the units already charged.
func (d *dim) due(v int64) int {
	if v <= 0 {
		return 0
	}
	if d.Unit == 1 {
		return int(min(v, math.MaxInt32))
	}
	return int(min((d.cost+v+d.Unit-1)/d.Unit-d.paid, math.MaxInt32))
}

// pay notes a charge of v own units in u limiter units.
func (d *dim) pay(v int64, u int) {
	d.cost += v
	d.paid += int64(u)
}

// Check returns an error wrapping ErrCost if a send of cost c could never go:
// nothing in the first dimension, or more in one than its smallest rule holds.
func (s *Set) Check(c Cost) error {
	if s.dims[0].units(c) < 1 {
		return fmt.Errorf("%w: a send costs at least 1 %s", ErrCost, s.dims[0].Name)
	}
	for _, d := range s.dims {
		if u := d.units(c); u > d.lim.MaxWeight() {
			return fmt.Errorf("%w: %d %s is more than the smallest rule counting it holds (%d)",
				ErrCost, c[d.Name], d.Name, int64(d.lim.MaxWeight())*d.Unit)
		}
	}
	return nil
}

// NextC returns the earliest instant, no earlier than now, at which a send of
// cost c may leave; a nil c asks for the least send (1 in each dimension
// charged at the send). It changes nothing.
func (s *Set) NextC(now time.Time, c Cost) time.Time {
	next := now
	for _, d := range s.dims {
		u := 1
		if c != nil {
			u = d.due(c[d.Name])
		}
		if d.Answered {
			if c != nil {
				u = d.units(c)
			}
			if c == nil {
				continue
			}
			if !s.off.has(offSetReserve) {
				u += d.reserved
			}
			if u == 0 {
				continue
			}
			if u > d.lim.MaxWeight() {
				// Wait for an open send to end (the gate is woken then).
				next = later(next, now.Add(d.lim.set.longest))
				continue
			}
		}
		if u > 0 {
			next = later(next, d.lim.NextN(now, u))
		}
	}
	return next
}

// SentC records a send of cost c at now. It returns an error wrapping
// ErrTooEarly if now is before NextC(now, c), ErrQuarantined once a dimension's
// ban guard has tripped, ErrCost for a cost Check refuses; then nothing is
// recorded.
func (s *Set) SentC(now time.Time, c Cost) (Ticket, error) {
	if err := s.Check(c); err != nil {
		return Ticket{}, err
	}
	if s.Quarantined() {
		return Ticket{}, ErrQuarantined
	}
	if next := s.NextC(now, c); now.Before(next) {
		return Ticket{}, fmt.Errorf("%w: next send at %s, in %v", ErrTooEarly, next.Format(time.RFC3339Nano), next.Sub(now))
	}
	n := len(s.dims)
	snd := &setSend{tickets: make([]Ticket, n), reserve: make([]int, n), actual: make([]int64, n),
		spent: make([]int64, n), paid: make([]int64, n), left: now}
	for i, d := range s.dims {
		snd.actual[i] = -1
		if d.Answered {
			u := d.units(c)
			snd.reserve[i] = u
			d.reserved += u
			continue
		}
		v := c[d.Name]
		u := d.due(v)
		if u > 0 {
			tk, err := d.lim.SentN(now, u)
			if err != nil {
				s.undo(snd, now)
				return Ticket{}, fmt.Errorf("dimension %s: %w", d.Name, err)
			}
			snd.tickets[i] = tk
		}
		if v > 0 {
			d.pay(v, u)
			snd.spent[i], snd.paid[i] = v, int64(u)
		}
	}
	s.seq++
	s.open[s.seq] = snd
	return Ticket{seq: s.seq}, nil
}

// undo takes back a send recorded in part.
func (s *Set) undo(snd *setSend, now time.Time) {
	for i, d := range s.dims {
		if snd.tickets[i].owner != nil {
			d.lim.Unsent(snd.tickets[i], now)
		}
		d.cost -= snd.spent[i]
		d.paid -= snd.paid[i]
		d.reserved -= snd.reserve[i]
	}
}

// Used records the actual cost of an open send in its Answered dimensions, read
// from its answer; report the answer (Answered) after it. A dimension c does not
// name is charged the send's reservation.
func (s *Set) Used(t Ticket, c Cost) {
	snd := s.open[t.seq]
	if snd == nil {
		return
	}
	for i, d := range s.dims {
		if v, ok := c[d.Name]; ok && d.Answered {
			snd.actual[i] = max(v, 0)
		}
	}
}

// end ends an open send: each dimension charged at the send is told by tell;
// each Answered one has its reservation released and, if charge, is charged the
// actual cost (or the reservation) at at, then told by tell.
func (s *Set) end(t Ticket, at time.Time, charge bool, tell func(*Limiter, Ticket)) {
	snd := s.open[t.seq]
	if snd == nil {
		return
	}
	delete(s.open, t.seq)
	s.ended[t.seq] = snd
	s.order = append(s.order, t.seq)
	if len(s.order) > keptEnded {
		delete(s.ended, s.order[0])
		s.order = s.order[1:]
	}
	for i, d := range s.dims {
		if tk := snd.tickets[i]; tk.owner != nil {
			tell(d.lim, tk)
			continue
		}
		if !d.Answered || snd.reserve[i] == 0 && snd.actual[i] <= 0 {
			continue
		}
		d.reserved -= snd.reserve[i]
		if !charge {
			continue
		}
		v := int64(snd.reserve[i]) * d.Unit
		if snd.actual[i] >= 0 {
			v = snd.actual[i]
		}
		u := d.due(v)
		d.pay(v, u)
		if u == 0 {
			continue
		}
		if s.off.has(offChargeAtAnswer) {
			// Charged as if the upstream had counted it on arrival.
			tk := d.lim.charge(snd.left, u)
			d.lim.Answered(tk, snd.left)
			continue
		}
		tk := d.lim.charge(at, u)
		d.lim.Wrote(tk, at)
		tell(d.lim, tk)
	}
}

// Observed takes a usage report the answer to the send of t carried: the
// upstream counted used units of rule r (as the upstream states it) when it
// answered; see Limiter.Observed. For a rule counted across keys, the other keys
// of its scope may have used their whole shares: only what the report shows
// beyond them is taken as another client's. Report it after the answer.
func (s *Set) Observed(t Ticket, r Rule, used int) {
	snd := s.ended[t.seq]
	if snd == nil {
		return
	}
	for i, d := range s.dims {
		tk := snd.tickets[i]
		if tk.owner == nil {
			continue
		}
		for j, w := range d.Whole {
			if w != r {
				continue
			}
			mine := max(int64(used)-int64(w.Limit-d.Rules[j].Limit), 0)
			d.lim.Observed(tk, d.scaled[j], int(min((mine+d.Unit-1)/d.Unit+min(d.Unit-1, 1), math.MaxInt32)))
		}
	}
}

// Late notes lateness in every dimension; see Limiter.Late.
func (s *Set) Late(at time.Time, d time.Duration) {
	for _, x := range s.dims {
		x.lim.Late(at, d)
	}
}

// Wrote records when the send finished leaving; see Limiter.Wrote.
func (s *Set) Wrote(t Ticket, at time.Time) {
	if snd := s.open[t.seq]; snd != nil {
		for i, d := range s.dims {
			if tk := snd.tickets[i]; tk.owner != nil {
				d.lim.Wrote(tk, at)
			}
		}
	}
}

// Answered records the upstream's own answer at at; see Limiter.Answered. The
// Answered dimensions are charged then.
func (s *Set) Answered(t Ticket, at time.Time) {
	s.end(t, at, true, func(l *Limiter, tk Ticket) { l.Answered(tk, at) })
}

// Inverted records a 400 for the order of nonces; see Limiter.Inverted.
func (s *Set) Inverted(t Ticket, at time.Time) {
	s.end(t, at, true, func(l *Limiter, tk Ticket) { l.Inverted(tk, at) })
}

// Rejected records a 429 in every dimension the send was charged in at the
// send; nothing is charged once answered for a refused call.
func (s *Set) Rejected(t Ticket, at time.Time, retryAfter time.Duration) {
	s.end(t, at, false, func(l *Limiter, tk Ticket) { l.Rejected(tk, at, retryAfter) })
}

// Lost records a send given up without an answer; see Limiter.Lost. Its
// reservations are charged as given up at at.
func (s *Set) Lost(t Ticket, at time.Time) {
	s.end(t, at, true, func(l *Limiter, tk Ticket) { l.Lost(tk, at) })
}

// LostUntil records a send that may arrive until until; see Limiter.LostUntil.
func (s *Set) LostUntil(t Ticket, at, until time.Time) {
	s.end(t, at, true, func(l *Limiter, tk Ticket) { l.LostUntil(tk, at, until) })
}

// Unsent records a send of which no byte left; see Limiter.Unsent. In a
// scaled dimension the send's units stay counted, as given up: the running
// total they were charged from goes on.
func (s *Set) Unsent(t Ticket, at time.Time) {
	s.end(t, at, false, func(l *Limiter, tk Ticket) {
		for _, d := range s.dims {
			if d.lim == l && d.Unit > 1 {
				l.Lost(tk, at)
				return
			}
		}
		l.Unsent(tk, at)
	})
}

// Quarantined reports whether any dimension's ban guard has tripped.
func (s *Set) Quarantined() bool {
	for _, d := range s.dims {
		if d.lim.Quarantined() {
			return true
		}
	}
	return false
}

// MaxDelay returns the largest delay bound of the dimensions.
func (s *Set) MaxDelay() time.Duration {
	var m time.Duration
	for _, d := range s.dims {
		m = max(m, d.lim.MaxDelay())
	}
	return m
}

// Evidence returns the first dimension's evidence: every send is charged there,
// so it has seen every answer.
func (s *Set) Evidence() Evidence { return s.dims[0].lim.Evidence() }

// LastRejection returns the latest 429 of any dimension.
func (s *Set) LastRejection() (Rejection, bool) {
	var (
		last Rejection
		ok   bool
	)
	for _, d := range s.dims {
		if r, has := d.lim.LastRejection(); has && (!ok || r.At.After(last.At)) {
			last, ok = r, true
		}
	}
	return last, ok
}

// State returns the first dimension's State, with the others' in Dims.
func (s *Set) State() State {
	st := s.dims[0].lim.State()
	if len(s.dims) > 1 {
		st.Dims = make(map[string]State, len(s.dims)-1)
		for _, d := range s.dims[1:] {
			ds := d.lim.State()
			if d.Answered && d.reserved > 0 {
				// Open sends' reservations: charged as given up now.
				ds = withReserved(ds, d.reserved, d.lim)
			}
			st.Dims[d.label] = ds
		}
	}
	return st
}

// withReserved adds n unit bounds for open reservations to a dimension's state,
// each as late as a send given up at the latest instant the limiter knows.
func withReserved(st State, n int, l *Limiter) State {
	ub := l.latest.Add(l.arrival())
	for range n {
		st.UpperBounds = append(st.UpperBounds, ub)
	}
	slices.SortFunc(st.UpperBounds, time.Time.Compare)
	if c := l.set.capacity; len(st.UpperBounds) > c {
		st.UpperBounds = st.UpperBounds[len(st.UpperBounds)-c:]
	}
	st.Sends += uint64(n)
	return st
}

// Handoff returns State as JSON, as the next holder of the key reads it.
func (s *Set) Handoff() (json.RawMessage, error) {
	data, err := json.Marshal(s.State())
	if err != nil {
		return nil, fmt.Errorf("encode limiter state: %w", err)
	}
	return data, nil
}
