package profile

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/ratefleet/ratefleet/internal/keys"
	"github.com/ratefleet/ratefleet/internal/limiter"
	"github.com/ratefleet/ratefleet/wire"
)

// What a rule may count, besides any name a profile gives (orders,
// input_tokens...): every request costs 1 request, and its weight.
const (
	// CountsRequests counts every request as 1.
	CountsRequests = "requests"
	// CountsWeight counts a request's weight: its call's in the calls table,
	// else the request's own (1 unless it says more). The default.
	CountsWeight = "weight"
)

// The scopes of a rule: which keys one count covers.
const (
	// ScopeKey: one count per key (the default).
	ScopeKey = "key"
	// ScopeAccount: one count per account, the keys whose keys-file lines name
	// it (account=); a key naming none is an account of its own.
	ScopeAccount = "account"
	// ScopeUpstream: one count for every key, as behind one address or in one
	// organization.
	ScopeUpstream = "upstream"
)

// Where a dimension's cost is known from (Rate.Costs).
const (
	// FromCalls: the calls table's cost for the call, 0 when its pattern names
	// none, unless the request gives one (the default).
	FromCalls = "calls"
	// FromRequest: the request must give it (costs in the request), unless the
	// calls table does.
	FromRequest = "request"
	// FromAnswer: charged once answered; a send reserves the most it may cost
	// (the request's, else the calls table's, which one must give), and the
	// answer says what it cost (JSON, a dotted path in the answer's body).
	FromAnswer = "answer"
)

// CostSource says where one dimension's cost is known from.
type CostSource struct {
	// From is calls, request or answer; calls when empty.
	From string `yaml:"from"`
	// JSON is the dotted path of the actual cost in the answer's JSON body,
	// such as usage.output_tokens; for from: answer only.
	JSON string `yaml:"json"`
}

// dimension returns what rule r counts.
func (r Rule) dimension() string {
	if r.Counts == "" {
		return CountsWeight
	}
	return r.Counts
}

// scope returns the rule's scope.
func (r Rule) scope() string {
	if r.Scope == "" {
		return ScopeKey
	}
	return r.Scope
}

// dimensions returns the names of what the rules count, requests and weight
// first.
func (p *Profile) dimensions() []string {
	var out []string
	add := func(name string) {
		if !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	for _, first := range []string{CountsWeight, CountsRequests} {
		for _, r := range p.Rate.Rules {
			if r.dimension() == first {
				add(first)
			}
		}
	}
	for _, r := range p.Rate.Rules {
		add(r.dimension())
	}
	return out
}

// Limits returns what the upstream counts for key k, one of all the keys the
// fleet serves the upstream with, and the rules counting each, as the limiter
// takes them. A rule counted across keys (account, upstream) is split evenly
// among the keys of its scope: each key's share is the rule's limit (and a
// bucket's rate) over their number, rounded down, so however the keys' holders
// send, together they stay within the rule. A share below one unit is an error:
// the rule cannot be split that far.
func (p *Profile) Limits(k keys.Key, all []keys.Key) ([]limiter.Dimension, error) {
	var dims []limiter.Dimension
	for _, name := range p.dimensions() {
		// Rules of at most MaxLimit count whole units; larger ones (tokens)
		// count in units of Unit, in a meter of their own.
		whole := limiter.Dimension{Name: name, Answered: p.Rate.Costs[name].From == FromAnswer}
		scaled := whole
		largest := 0
		for i, r := range p.Rate.Rules {
			if r.dimension() != name {
				continue
			}
			lr, err := r.share(k, all)
			if err != nil {
				return nil, fmt.Errorf("%s: rate.rules[%d]: %w", p.Source, i, err)
			}
			d := &whole
			if lr.Limit > limiter.MaxLimit {
				d = &scaled
				largest = max(largest, lr.Limit)
			}
			d.Rules = append(d.Rules, lr)
			d.Whole = append(d.Whole, r.limiterRule())
		}
		if len(whole.Rules) > 0 {
			dims = append(dims, whole)
		}
		if len(scaled.Rules) > 0 {
			// One unit is kept for the running total the charges follow.
			scaled.Unit = int64(math.Ceil(float64(largest) / (limiter.MaxLimit - 1)))
			dims = append(dims, scaled)
		}
	}
	if len(dims) > 0 && dims[0].Unit > 1 {
		return nil, fmt.Errorf("%s: every rule counting %s holds more than %d for key %s: one must hold at most that many", p.Source, dims[0].Name, limiter.MaxLimit, k.Name())
	}
	return dims, nil
}

// share returns k's share of r among the keys of r's scope.
func (r Rule) share(k keys.Key, all []keys.Key) (limiter.Rule, error) {
	lr := r.limiterRule()
	n := 1
	switch r.scope() {
	case ScopeAccount:
		n = 0
		for _, o := range all {
			if o.Account() == k.Account() {
				n++
			}
		}
		n = max(n, 1)
	case ScopeUpstream:
		n = max(len(all), 1)
	}
	if n == 1 {
		return lr, nil
	}
	lr.Limit /= n
	lr.Rate /= float64(n)
	if lr.Limit < 1 {
		return limiter.Rule{}, fmt.Errorf("limit %d over the %d keys of its %s scope leaves each less than 1: use fewer keys, or a larger limit", r.Limit, n, r.scope())
	}
	return lr, nil
}

// Cost returns what req costs in each dimension the profile's rules count. It
// returns an error wrapping ErrCall for a request that does not give a cost the
// profile needs from it.
func (p *Profile) Cost(req wire.Request) (limiter.Cost, error) {
	call := req.Call
	if call == nil {
		call = &p.DefaultCall
	}
	table := p.callCosts(call)
	c := limiter.Cost{}
	for _, name := range p.dimensions() {
		v, inTable := table[name]
		switch {
		case name == CountsRequests:
			v = 1
		case inTable:
		case name == CountsWeight:
			w, err := p.Weight(req.Weight)
			if err != nil {
				return nil, err
			}
			v = int64(w)
		default:
			var given bool
			v, given = req.Costs[name]
			if !given && p.Rate.Costs[name].From != FromCalls && p.Rate.Costs[name].From != "" {
				what := "what it costs"
				if p.Rate.Costs[name].From == FromAnswer {
					what = "the most it may cost (such as max_tokens)"
				}
				return nil, fmt.Errorf("%w: the upstream counts %s: give the request's costs.%s, %s", ErrCall, name, name, what)
			}
		}
		c[name] = v
	}
	return c, nil
}

// callCosts returns the costs the calls table gives c's call: those of the
// first pattern it matches that names costs.
func (p *Profile) callCosts(c *wire.Call) map[string]int64 {
	m := c.GetMethod()
	for _, pc := range p.Calls {
		if len(pc.Costs) > 0 && pc.Match(m, c.Path) {
			return pc.Costs
		}
	}
	return nil
}

// Answered reports whether some dimension's cost is known only from the answer.
func (p *Profile) Answered() bool {
	for _, s := range p.Rate.Costs {
		if s.From == FromAnswer {
			return true
		}
	}
	return false
}

// Actual returns what an answer says its call cost, in the dimensions charged
// once answered; a dimension whose cost the answer does not say is left out
// (the send's reservation is charged for it).
func (p *Profile) Actual(body []byte) limiter.Cost {
	var c limiter.Cost
	for name, s := range p.Rate.Costs {
		if s.From != FromAnswer || s.JSON == "" {
			continue
		}
		if v, ok := jsonInt(body, s.JSON); ok {
			if c == nil {
				c = limiter.Cost{}
			}
			c[name] = v
		}
	}
	return c
}

// jsonInt reads the whole number at a dotted path of a JSON document.
func jsonInt(body []byte, path string) (int64, bool) {
	var doc any
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if dec.Decode(&doc) != nil {
		return 0, false
	}
	for _, part := range strings.Split(path, ".") {
		m, ok := doc.(map[string]any)
		if !ok {
			return 0, false
		}
		doc = m[part]
	}
	n, ok := doc.(json.Number)
	if !ok {
		return 0, false
	}
	v, err := n.Int64()
	return v, err == nil && v >= 0
}

// validateCosts checks what the rules count, their scopes, the costs' sources
// and the calls table's costs.
func (p *Profile) validateCosts(v *validator) {
	counted := map[string]bool{}
	for i, r := range p.Rate.Rules {
		field := fmt.Sprintf("rate.rules[%d]", i)
		if err := wire.CheckCosts(map[string]int64{r.dimension(): 0}); err != nil {
			v.addf(field+".counts", "%q: name what the rule counts in lower-case letters, digits and _ (requests, weight, orders, input_tokens...)", r.Counts)
		}
		switch r.scope() {
		case ScopeKey, ScopeAccount, ScopeUpstream:
		default:
			v.addf(field+".scope", "is %q; use key (the default), account (the keys of one account= in the keys file) or upstream (every key)", r.Scope)
		}
		counted[r.dimension()] = true
	}
	if len(p.Rate.Rules) > 0 && !counted[CountsRequests] && !counted[CountsWeight] {
		v.addf("rate.rules", "no rule counts requests or weight: every upstream limits requests; add one (counts: requests)")
	}
	for name, s := range p.Rate.Costs {
		field := "rate.costs." + name
		switch {
		case !counted[name]:
			v.addf(field, "no rule counts %s: remove it, or add a rule with counts: %s", name, name)
		case name == CountsRequests || name == CountsWeight:
			v.addf(field, "a request's %s is known when it is sent; only other dimensions take a source", name)
		}
		switch s.From {
		case "", FromCalls, FromRequest:
			if s.JSON != "" {
				v.addf(field+".json", "only a cost from: answer is read from the answer")
			}
		case FromAnswer:
			if s.JSON == "" {
				v.addf(field+".json", "give where the answer's JSON body says the cost, such as usage.output_tokens")
			}
		default:
			v.addf(field+".from", "is %q; use calls (the default), request or answer", s.From)
		}
	}
	for i, c := range p.Calls {
		for name, cost := range c.Costs {
			field := fmt.Sprintf("calls[%d].costs.%s", i, name)
			switch {
			case !counted[name]:
				v.addf(field, "no rule counts %s", name)
			case name == CountsRequests:
				v.addf(field, "every call costs 1 request; leave it out")
			case cost < 0 || cost > wire.MaxCost:
				v.addf(field, "%d must be from 0 to %d", cost, wire.MaxCost)
			case name == CountsWeight && cost < 1:
				v.addf(field, "a weight is at least 1")
			}
		}
	}
}

// validateLimits checks the rules as the limiter takes them, for one key.
func (p *Profile) validateLimits(v *validator) {
	if len(p.Rate.Rules) == 0 {
		return
	}
	k := keys.New("check", "check")
	dims, err := p.Limits(k, []keys.Key{k})
	if err == nil {
		_, err = limiter.NewSet(limiter.SetConfig{Config: p.LimiterConfig(limiter.Config{}), Dims: dims})
	}
	if err != nil {
		v.addf("rate", "%v", err)
	}
}
