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
	// thousand). Costs are rounded up to whole Units and limits down.
	Unit int64
	// Answered says the upstream charges this dimension once it has answered,
	// and the actual cost is known only then (output tokens).
	Answered bool
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
	dims []*dim
	seq  uint64
	open map[uint64]*setSend
	off  ablation // rules switched off, in tests only
}

type dim struct {
	Dimension
	lim      *Limiter
	reserved int // units reserved by open sends (Answered dimensions)
}

// setSend is one send of a Set: its ticket in each dimension that charged it
// at the send, the units it reserved in each Answered one, and their actual
// cost once known.
type setSend struct {
	tickets []Ticket
	reserve []int
	actual  []int // -1 until Used says
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
	s := &Set{open: map[uint64]*setSend{}}
	seen := map[string]bool{}
	for i, d := range cfg.Dims {
		switch {
		case d.Name == "":
			return nil, fmt.Errorf("%w: dimension %d has no name", ErrInvalidConfig, i+1)
		case seen[d.Name]:
			return nil, fmt.Errorf("%w: dimension %q given twice", ErrInvalidConfig, d.Name)
		case len(d.Rules) == 0:
			return nil, fmt.Errorf("%w: dimension %q has no rules", ErrInvalidConfig, d.Name)
		case d.Unit < 0:
			return nil, fmt.Errorf("%w: dimension %q: unit %d is negative", ErrInvalidConfig, d.Name, d.Unit)
		case i == 0 && d.Answered:
			return nil, fmt.Errorf("%w: dimension %q: the first dimension is charged at the send (requests or weight), not once answered", ErrInvalidConfig, d.Name)
		}
		seen[d.Name] = true
		d.Unit = max(d.Unit, 1)
		c := cfg.Config
		c.Rules = nil
		for j, r := range d.Rules {
			sr, err := r.scaled(d.Unit)
			if err != nil {
				return nil, fmt.Errorf("%w: %s rule %d (%v): %s", ErrInvalidConfig, d.Name, j+1, r, err)
			}
			c.Rules = append(c.Rules, sr)
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
			ds, ok := st.Dims[d.Name]
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
		s.dims = append(s.dims, &dim{Dimension: d, lim: l})
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
	lim := int64(r.Limit) / unit
	if lim < 1 {
		return Rule{}, fmt.Errorf("limit %d is below one unit of %d", r.Limit, unit)
	}
	r.Limit = int(lim)
	r.Rate /= float64(unit)
	return r, nil
}

// units returns cost c in d's units, rounded up.
func (d *dim) units(c Cost) int {
	v := c[d.Name]
	if v <= 0 {
		return 0
	}
	return int(min((v+d.Unit-1)/d.Unit, math.MaxInt32))
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
			u = d.units(c)
		}
		if d.Answered {
			if c == nil {
				continue
			}
			if !s.off.has(offReserve) {
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
	snd := &setSend{tickets: make([]Ticket, len(s.dims)), reserve: make([]int, len(s.dims)), actual: make([]int, len(s.dims)), left: now}
	for i, d := range s.dims {
		snd.actual[i] = -1
		u := d.units(c)
		switch {
		case u == 0:
		case d.Answered:
			snd.reserve[i] = u
			d.reserved += u
		default:
			tk, err := d.lim.SentN(now, u)
			if err != nil {
				s.undo(snd, now)
				return Ticket{}, fmt.Errorf("dimension %s: %w", d.Name, err)
			}
			snd.tickets[i] = tk
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
		if _, ok := c[d.Name]; ok && d.Answered {
			snd.actual[i] = d.units(c)
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
	for i, d := range s.dims {
		if tk := snd.tickets[i]; tk.owner != nil {
			tell(d.lim, tk)
			continue
		}
		if snd.reserve[i] == 0 && snd.actual[i] <= 0 {
			continue
		}
		d.reserved -= snd.reserve[i]
		if !charge {
			continue
		}
		u := snd.reserve[i]
		if snd.actual[i] >= 0 {
			u = snd.actual[i]
		}
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

// Unsent records a send of which no byte left; see Limiter.Unsent.
func (s *Set) Unsent(t Ticket, at time.Time) {
	s.end(t, at, false, func(l *Limiter, tk Ticket) { l.Unsent(tk, at) })
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
			st.Dims[d.Name] = ds
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

// Dimensions returns the names of the set's dimensions, the first first.
func (s *Set) Dimensions() []string {
	out := make([]string, len(s.dims))
	for i, d := range s.dims {
		out[i] = d.Name
	}
	return out
}
