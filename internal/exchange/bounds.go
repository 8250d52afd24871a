package exchange

import "math"

// RuleStats is one rule's part of Stats: its definition, what it counted since the
// run began (the server's start or the last stats reset), and the bound a perfect
// client could reach over the run.
type RuleStats struct {
	Name      string    `json:"name"`
	Kind      Kind      `json:"kind"`
	Dimension Dimension `json:"dimension"`
	Scope     Scope     `json:"scope"`
	Limit     int64     `json:"limit"`
	WindowMS  int64     `json:"window_ms,omitempty"` // sliding and fixed
	Rate      float64   `json:"rate,omitempty"`      // bucket: units a second
	// Instances is the number of counters: the keys, the accounts, or 1 for ip.
	Instances int `json:"instances"`
	// Charged is the units of the API's calls counted, over every instance, and
	// Outside those of the outside client's calls.
	Charged int64 `json:"charged"`
	Outside int64 `json:"outside,omitempty"`
	// Rejections is the number of calls this rule refused (a call refused by two
	// rules counts in both).
	Rejections uint64 `json:"rejections"`
	// Peak is the highest usage one instance reached just after a charge: at most
	// Limit, but for output tokens, which are charged once answered and may pass
	// it.
	Peak float64 `json:"peak"`
	// Bound is the most units all instances together could count over the run's
	// RunMS: a perfect client's total. Charged/Bound is a client's efficiency
	// against this rule; (Charged)/(Bound−Outside) discounts the outside client.
	Bound int64 `json:"bound"`
}

// bound returns the most units one counter of r can count over a run of the
// whole-millisecond instants from start to end (Unix ms, both included), starting
// empty:
//
//   - Sliding: any W+1 consecutive instants lie in one span [t−W, t], so hold at
//     most Limit; the run's D+1 instants (D = end−start) split into ⌈(D+1)/(W+1)⌉
//     such blocks: Limit·⌈(D+1)/(W+1)⌉, reached by a burst of Limit at the start
//     of each block.
//   - Fixed: each calendar window the run touches holds at most Limit, and the run
//     touches ⌊end/W⌋−⌊start/W⌋+1 of them: Limit times that, reached by a burst at
//     the start of each (the first at start). This is where a fixed window allows
//     twice Limit across a boundary.
//   - Bucket: the level starts at 0, may reach Limit, and loses Rate a second, so
//     the units counted are at most Limit + Rate·D/1000: ⌊Limit + Rate·D/1000⌋,
//     reached by filling it at the start and then keeping it full.
//
// A rule counting several instances bounds them all by the sum: instances times
// this. Over several rules the reachable rate of calls is the least, over the
// rules, of bound over the units a call costs in the rule's dimension. A counter
// that was not empty at the run's start (after a stats reset mid-run) makes the
// bound loose, never wrong.
func bound(r Rule, start, end int64) int64 {
	if end < start {
		return 0
	}
	switch r.Kind {
	case Fixed:
		w := r.Window.Milliseconds()
		return r.Limit * (floorDiv(end, w) - floorDiv(start, w) + 1)
	case Bucket:
		return int64(math.Floor(float64(r.Limit) + r.Rate*float64(end-start)/1000))
	default:
		w := r.Window.Milliseconds()
		return r.Limit * ((end - start + w + 1) / (w + 1))
	}
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// ruleStats returns the run's length and, when the Config has a model, its ban
// counts and its rules' stats.
func (s *Server) ruleStats() (runMS int64, banned uint64, bans int, rules []RuleStats) {
	l := s.limits
	if l == nil {
		return s.cfg.Now().UnixMilli() - s.since.Load(), 0, 0, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	t := s.cfg.Now().UnixMilli()
	l.catchUp(t)
	start := s.since.Load()
	for _, r := range l.rules {
		rules = append(rules, RuleStats{
			Name:       r.rule.label(),
			Kind:       r.rule.Kind,
			Dimension:  r.rule.Dimension,
			Scope:      r.rule.Scope,
			Limit:      r.rule.Limit,
			WindowMS:   r.rule.Window.Milliseconds(),
			Rate:       r.rule.Rate,
			Instances:  len(r.counters),
			Charged:    r.charged,
			Outside:    r.outside,
			Rejections: r.rejections,
			Peak:       r.peak,
			Bound:      int64(len(r.counters)) * bound(r.rule, start, t),
		})
	}
	return t - start, l.banned, l.bans, rules
}

// resetRuleStats starts a new run: the rules' counts, not their counters.
func (s *Server) resetRuleStats() {
	l := s.limits
	if l == nil {
		s.since.Store(s.cfg.Now().UnixMilli())
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	t := s.cfg.Now().UnixMilli()
	l.catchUp(t)
	s.since.Store(t)
	l.banned, l.bans = 0, 0
	for _, r := range l.rules {
		r.charged, r.outside, r.rejections, r.peak = 0, 0, 0, 0
	}
}
