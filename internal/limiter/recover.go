package limiter

import (
	"math"
	"slices"
	"time"
)

// Recovery after a crash
//
// A holder that crashes hands nothing over. Its checkpoints do: every few
// seconds it writes its State, and promises to send nothing more than Span after
// the checkpoint unless it writes a newer one. A new holder then knows every
// unit the crashed one sent up to the checkpoint (its bounds), and that in the
// at most Span after it, the crashed holder sent no more than its own rules
// allow in Span: for each dimension, the least over its rules of what a rule
// admits in any interval of that length. Every unit the crashed holder sent
// arrived by the claim plus L (the lease fences its sends), so Recover takes the
// checkpoint's bounds no later than that, and adds the unknown units there. A
// per-day rule then resumes from the day's count instead of idling for a day.

// Recover returns the State a new holder resumes from after the key's holder
// crashed: its checkpoint cp (its instants on this clock, as decodeHandoff
// moves them), the span after cp in which it may have sent more, and latest,
// the latest instant any unit it sent may arrive (the claim plus L).
func Recover(cfg SetConfig, cp State, span time.Duration, latest time.Time) State {
	out := recoverDim(cp, rulesOf(cfg, 0), span, latest)
	out.Dims = nil
	for i := 1; i < len(cfg.Dims); i++ {
		name := cfg.Dims[i].label()
		ds, ok := cp.Dims[name]
		if !ok {
			continue // RestoreSet takes a dimension the state lacks as full
		}
		if out.Dims == nil {
			out.Dims = map[string]State{}
		}
		out.Dims[name] = recoverDim(ds, rulesOf(cfg, i), span, latest)
	}
	return out
}

// rulesOf returns the rules of dimension i in its units.
func rulesOf(cfg SetConfig, i int) []Rule {
	d := cfg.Dims[i]
	var out []Rule
	for _, r := range d.Rules {
		if sr, err := r.scaled(max(d.Unit, 1)); err == nil {
			out = append(out, sr)
		}
	}
	return out
}

func recoverDim(st State, rules []Rule, span time.Duration, latest time.Time) State {
	capacity, unknown := 0, math.MaxInt
	for _, r := range rules {
		capacity = max(capacity, r.Limit)
		unknown = min(unknown, r.admits(span))
	}
	unknown = min(unknown, capacity)
	ubs := make([]time.Time, 0, len(st.UpperBounds)+unknown)
	for _, ub := range st.UpperBounds {
		ubs = append(ubs, earlier(ub, latest))
	}
	for range unknown {
		ubs = append(ubs, latest)
	}
	slices.SortFunc(ubs, time.Time.Compare)
	if len(ubs) > capacity {
		ubs = ubs[len(ubs)-capacity:]
	}
	st.UpperBounds = ubs
	st.Sends += uint64(unknown)
	st.InFlight = 0
	if st.NextFree.After(latest) {
		st.NextFree = latest
	}
	return st
}

// admits returns the most units the rule admits in any interval of length d.
func (r Rule) admits(d time.Duration) int {
	ms := d.Milliseconds() + 1
	var n float64
	switch r.Kind {
	case Sliding:
		// Any Window + 1 ms of whole-ms instants hold at most Limit.
		n = float64(r.Limit) * math.Ceil(float64(ms)/float64(r.Window.Milliseconds()+1))
	case Fixed:
		// An interval touches at most ⌊d/W⌋ + 2 calendar windows.
		n = float64(r.Limit) * float64(ms/r.Window.Milliseconds()+2)
	case Bucket:
		n = float64(r.Limit) + math.Ceil(r.Rate*d.Seconds())
	}
	return int(min(n, math.MaxInt32))
}
