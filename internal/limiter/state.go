package limiter

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"
)

// StateVersion is the version of the State format that State writes and Restore
// reads.
const StateVersion = 1

// ErrInvalidState is wrapped by the errors Restore returns for a State it cannot
// trust.
var ErrInvalidState = errors.New("invalid limiter state")

// State is what a Limiter knows, for stats and for the next holder of the key. It
// is plain JSON; times are wall-clock instants, so a holder on another machine
// relies on the two clocks agreeing within the margin.
type State struct {
	// Version is StateVersion.
	Version int `json:"version"`
	// MaxDelay is the one-way delay assumed (L), widened by 429s and by evidence.
	MaxDelay time.Duration `json:"max_delay_ns"`
	// BaseDelay is the least L comes back down to (the configured delay, or what
	// 429s widened it to), and OrderDelay the order rule's delay; zero in a state
	// written before the limiter learned from evidence, and then taken as MaxDelay.
	BaseDelay  time.Duration `json:"base_delay_ns,omitempty"`
	OrderDelay time.Duration `json:"order_delay_ns,omitempty"`
	// NextFree is the earliest instant the next send may leave.
	NextFree time.Time `json:"next_free"`
	// UpperBounds are the latest instants the units sent may arrive, earliest
	// first: the latest of them, at most as many as the largest rule's Limit.
	// A send still in flight is taken as given up at the latest time reported
	// to the limiter (it may arrive until it left plus the arrival horizon);
	// take State once every send has ended, as a worker does when it drains.
	UpperBounds []time.Time `json:"upper_bounds"`
	// Sends counts the key's sends, those of earlier holders included.
	Sends uint64 `json:"sends"`
	// InFlight counts the sends among UpperBounds that have not ended yet.
	InFlight int `json:"in_flight,omitempty"`
	// PauseUntil is when the pause after a 429 ends; zero if there was none.
	PauseUntil time.Time `json:"pause_until,omitzero"`
	// Rejections counts the key's 429s, those of earlier holders included.
	Rejections int `json:"rejections,omitempty"`
	// Quarantined reports whether the ban guard has tripped.
	Quarantined bool `json:"quarantined,omitempty"`
	// LastRejection is the latest 429, if any.
	LastRejection *Rejection `json:"last_rejection,omitempty"`
	// Dims are the states of a Set's other dimensions, by name; the State
	// itself is its first dimension's. Empty for a Limiter.
	Dims map[string]State `json:"dims,omitempty"`
}

// State returns what the limiter knows.
func (l *Limiter) State() State {
	l.init()
	now, win := l.latest, l.window()
	st := State{
		Version:     StateVersion,
		MaxDelay:    l.maxDelay,
		BaseDelay:   l.base,
		OrderDelay:  l.orderDelay,
		NextFree:    l.earliest(now, 1),
		Sends:       l.sends,
		PauseUntil:  l.pauseUntil,
		Rejections:  l.rejections,
		Quarantined: l.quarantine,
	}
	// The unit bounds, earliest first; a request still in flight is taken as
	// given up now, and none earlier than what a Bucket folded (see raised). Only the latest ones can bind the next holder's windows, and
	// which send each belongs to does not matter to them (the N-th latest bound
	// is the same in any order); the order rule is carried by NextFree.
	var ubs []time.Time
	for i := range l.recs {
		r := l.recs[i]
		switch r.fate {
		case unsent:
			continue
		case open:
			st.InFlight++
			if r.hasLeft {
				r.fate, r.at = lost, later(now, r.sent)
			}
		}
		ub := l.raised(l.windowBound(&r, win, now))
		for range r.units {
			ubs = append(ubs, ub)
		}
	}
	slices.SortFunc(ubs, time.Time.Compare)
	if n := l.set.capacity; len(ubs) > n {
		ubs = ubs[len(ubs)-n:]
	}
	st.UpperBounds = slices.Clip(ubs)
	if st.UpperBounds == nil {
		st.UpperBounds = []time.Time{}
	}
	if l.last != nil {
		rej := *l.last
		st.LastRejection = &rej
	}
	return st
}

// Handoff returns State as JSON, as the next holder of the key reads it.
func (l *Limiter) Handoff() (json.RawMessage, error) {
	data, err := json.Marshal(l.State())
	if err != nil {
		return nil, fmt.Errorf("encode limiter state: %w", err)
	}
	return data, nil
}

// Restore returns a Limiter that resumes from a State taken from another Limiter,
// typically by the previous holder of the key. Its first send waits exactly as long
// as the windows require given the recorded upper bounds, and never less than the
// previous holder would have waited. It keeps the larger of the two assumed
// delays (up to cfg's ceiling), what it may come back down to, the pause and the
// 429 count. The evidence of the previous holder's last answers is not carried:
// the new holder's L comes back down only on evidence of its own. If cfg has a rule with
// a larger Limit than the state recorded sends for, the sends missing from the
// record are taken to have arrived as late as the oldest one recorded: they came
// before it, so this only errs on the side of waiting. A State carries no
// Bucket's counter: the restored limiter takes it full (the upstream never holds
// more) at the oldest bound recorded, with the later ones on top.
//
// It returns an error wrapping ErrInvalidConfig or ErrInvalidState.
func Restore(cfg Config, st State) (*Limiter, error) {
	s, err := cfg.settings()
	if err != nil {
		return nil, err
	}
	if st.Version != StateVersion {
		return nil, fmt.Errorf("%w: version %d, this limiter reads version %d", ErrInvalidState, st.Version, StateVersion)
	}
	if st.MaxDelay < 0 || st.BaseDelay < 0 || st.OrderDelay < 0 || st.Rejections < 0 {
		return nil, fmt.Errorf("%w: negative max delay %v or rejection count %d", ErrInvalidState, st.MaxDelay, st.Rejections)
	}
	ubs := st.UpperBounds
	for i := 1; i < len(ubs); i++ {
		if ubs[i].Before(ubs[i-1]) {
			return nil, fmt.Errorf("%w: upper bound %d (%s) is before the one before it (%s); bounds grow with each send",
				ErrInvalidState, i+1, ubs[i].Format(time.RFC3339Nano), ubs[i-1].Format(time.RFC3339Nano))
		}
	}
	sends := max(st.Sends, uint64(len(ubs)))
	if sends > 0 && len(ubs) == 0 {
		return nil, fmt.Errorf("%w: %d sends but no upper bounds", ErrInvalidState, sends)
	}

	l := newLimiter(s)
	l.maxDelay = max(s.maxDelay, min(st.MaxDelay, s.ceiling))
	l.base = l.maxDelay // a state without a base: every delay it knew was proven by a 429
	if st.BaseDelay > 0 {
		l.base = max(s.maxDelay, min(st.BaseDelay, l.maxDelay))
	}
	l.orderDelay = l.maxDelay
	if st.OrderDelay > 0 {
		l.orderDelay = max(l.base, min(st.OrderDelay, l.maxDelay))
	}
	keep := min(sends, uint64(s.capacity))
	if n := uint64(len(ubs)); n > keep {
		ubs = ubs[n-keep:]
	}
	missing := int(keep) - len(ubs)
	l.restored(sends, int(keep), func(i int) time.Time {
		if i < missing {
			return ubs[0]
		}
		return ubs[i-missing]
	})
	if keep > 0 {
		l.seedFull(ubs[0])
	}
	l.pauseUntil = st.PauseUntil
	l.notBefore = st.NextFree
	l.rejections = st.Rejections
	l.quarantine = st.Quarantined || st.Rejections >= s.guard
	if st.LastRejection != nil {
		rej := *st.LastRejection
		l.last = &rej
	}
	return l, nil
}

// Shifted returns a copy of s with every instant moved by d. A holder that reads a
// State written on another machine shifts it by (its own clock when it read the
// State − the writer's clock when it wrote it): the instants then keep their ages,
// and as the State was written before it was read, they can only move later, which
// errs on the side of waiting whatever the two clocks say.
func (s State) Shifted(d time.Duration) State {
	shift := func(t time.Time) time.Time {
		if t.IsZero() {
			return t
		}
		return t.Add(d)
	}
	out := s
	out.NextFree, out.PauseUntil = shift(s.NextFree), shift(s.PauseUntil)
	out.UpperBounds = make([]time.Time, len(s.UpperBounds))
	for i, ub := range s.UpperBounds {
		out.UpperBounds[i] = shift(ub)
	}
	if s.LastRejection != nil {
		rej := *s.LastRejection
		rej.At, rej.SentAt, rej.PauseUntil = shift(rej.At), shift(rej.SentAt), shift(rej.PauseUntil)
		out.LastRejection = &rej
	}
	if s.Dims != nil {
		out.Dims = make(map[string]State, len(s.Dims))
		for name, ds := range s.Dims {
			out.Dims[name] = ds.Shifted(d)
		}
	}
	return out
}
