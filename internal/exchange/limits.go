package exchange

import (
	"sync"
	"time"
)

// limits holds the model's state beyond each key's own: the rules' counters of
// every scope, the upstream's ban and the outside client. One lock serializes every
// call that uses them: the call that arrives first is checked first, across keys,
// as it must be for rules that several keys share. It is nil when the Config has
// no rule, no ban and no outside client: then each key is checked under its own
// lock alone, as the reference is.
type limits struct {
	mu      sync.Mutex // taken before any key's lock
	rules   []*ruleState
	ban     *banState
	outside *outsideClient
	bans    int // bans started since
	banned  uint64
}

// ruleState is one rule, its counters and its counts since the run's start.
type ruleState struct {
	rule       Rule
	counters   []counter
	charged    int64 // units of the fleet's calls
	outside    int64 // units of the outside client's calls
	rejections uint64
	peak       float64
}

func newLimits(cfg Config, accounts []*account, start int64) *limits {
	if len(cfg.Rules) == 0 && cfg.Ban.After == 0 && cfg.Outside.Rate == 0 {
		return nil
	}
	l := &limits{ban: newBanState(cfg.Ban)}
	for _, r := range cfg.Rules {
		l.rules = append(l.rules, &ruleState{rule: r, counters: instances(r, accounts)})
	}
	l.outside = newOutsideClient(cfg.Outside, accounts, start)
	return l
}

// callCost is what a call costs the rules as it is checked. pending says its output
// tokens are still to come: a rule counting them then needs room for one more unit
// and is charged the rest once the call is answered (chargeOutput).
type callCost struct {
	cost    Cost
	pending bool
}

func (c callCost) need(d Dimension) int64 {
	n := c.cost.of(d)
	if c.pending && (d == OutputTokens || d == Tokens) {
		n++
	}
	return n
}

// decision is the rules' answer to one call of a known key.
type decision struct {
	v          verdict
	blockedNow bool
	// wait is, for a rejection, how long until the ring or the rules that refused
	// have room; for a ban, what is left of it.
	wait   time.Duration
	banFor time.Duration // the length of a ban this rejection started
}

// judge applies the ban and steps 3 to 5 to a call of key a arriving now, the
// model's rules asked after the key's ring. The nonce is checked only when
// checkNonce. The arrival time is read under the lock that serializes the checks
// (the key's, or the model's when it has one), so that the call that arrives first
// is checked first.
func (s *Server) judge(a *account, c callCost, nonce string, checkNonce bool) decision {
	l := s.limits
	if l == nil {
		a.mu.Lock()
		defer a.mu.Unlock()
		v, blockedNow, wait := a.decideWith(s.cfg.Now().UnixMilli(), nonce, checkNonce, nil)
		return decision{v: v, blockedNow: blockedNow, wait: wait}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	t := s.cfg.Now().UnixMilli()
	l.catchUp(t)
	if left := l.ban.left(t); left > 0 {
		l.banned++
		return decision{v: verdictBanned, wait: left}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	g := &ruleGate{l: l, a: a, c: c}
	v, blockedNow, wait := a.decideWith(t, nonce, checkNonce, g)
	return decision{v: v, blockedNow: blockedNow, wait: wait, banFor: g.banFor}
}

// ruleGate asks a key's rules about one call, for account.decideWith.
type ruleGate struct {
	l      *limits
	a      *account
	c      callCost
	banFor time.Duration
}

// room reports whether every rule of the key has room for the call, and if not
// how long until all that refused have, counting one rejection for each.
func (g *ruleGate) room(t int64) (bool, time.Duration) {
	ok, wait := true, time.Duration(0)
	for i, r := range g.l.rules {
		if fits, w := g.a.counters[i].room(t, g.c.need(r.rule.Dimension)); !fits {
			ok, wait = false, max(wait, w)
			r.rejections++
		}
	}
	return ok, wait
}

// rejected counts a rejection (by the ring or a rule) towards the upstream's ban.
func (g *ruleGate) rejected(t int64) {
	if d := g.l.ban.rejected(t); d > 0 {
		g.l.bans++
		g.banFor = d
	}
}

// charge counts the call in every rule of the key.
func (g *ruleGate) charge(t int64) {
	for i, r := range g.l.rules {
		r.add(g.a.counters[i], t, g.c.cost.of(r.rule.Dimension), false)
	}
}

// add counts n units at t in counter c of the rule.
func (r *ruleState) add(c counter, t, n int64, outside bool) {
	if n == 0 {
		return
	}
	c.add(t, n)
	if outside {
		r.outside += n
	} else {
		r.charged += n
	}
	r.peak = max(r.peak, c.usage(t))
}

// chargeOutput charges a call's output tokens, known once it is answered, to the
// rules of key a that count them.
func (s *Server) chargeOutput(a *account, n int64) {
	l := s.limits
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	t := s.cfg.Now().UnixMilli()
	l.catchUp(t)
	for i, r := range l.rules {
		if d := r.rule.Dimension; d == OutputTokens || d == Tokens {
			r.add(a.counters[i], t, n, false)
		}
	}
}

// catchUp makes the outside client's calls due by t, in time order. l.mu must be
// held, and no key's lock.
func (l *limits) catchUp(t int64) {
	for {
		a, at, ok := l.outside.due(t)
		if !ok {
			return
		}
		l.outsideCall(a, at)
	}
}

// outsideCall counts an outside call of key a at t if the ring and every rule of
// the key have room for it.
func (l *limits) outsideCall(a *account, t int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ringFull(t) {
		return
	}
	c := l.outside.cost
	for i, r := range l.rules {
		if ok, _ := a.counters[i].room(t, c.of(r.rule.Dimension)); !ok {
			return
		}
	}
	a.accept(t)
	a.counts.outside++
	for i, r := range l.rules {
		r.add(a.counters[i], t, c.of(r.rule.Dimension), true)
	}
}

// ruleUsage is one rule's counter of a key, seen at one time.
type ruleUsage struct {
	rule  Rule
	used  float64
	reset time.Duration
}

// usage returns the usage, now, of every rule key a falls under.
func (s *Server) usage(a *account) []ruleUsage {
	l := s.limits
	if l == nil || len(l.rules) == 0 {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	t := s.cfg.Now().UnixMilli()
	l.catchUp(t)
	out := make([]ruleUsage, len(l.rules))
	for i, r := range l.rules {
		c := a.counters[i]
		out[i] = ruleUsage{rule: r.rule, used: c.usage(t), reset: c.reset(t)}
	}
	return out
}
