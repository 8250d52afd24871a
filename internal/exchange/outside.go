package exchange

import (
	"errors"
	"fmt"
	"math"
	"slices"
)

// Outside is a client outside the fleet that uses some of its keys too, as another
// bot on the same key would: the simulator itself makes Rate calls a second on
// each key of Keys (every key when empty), evenly spaced from the server's start,
// each costing Cost (weight 0 means 1; a request each). An outside call is counted
// like a call of the fleet, in the key's ring and in every rule it falls under,
// when they all have room for it, and dropped otherwise: it is never a rejection
// of the key, moves no nonce, and is counted in KeyStats.Outside and
// RuleStats.Outside. A client sees it only through the usage headers, or as less
// room. The zero value makes no calls.
type Outside struct {
	Rate float64
	Keys []string
	Cost Cost
}

func (o Outside) validate(names map[string]bool) error {
	if !(o.Rate >= 0) || math.IsInf(o.Rate, 0) {
		return fmt.Errorf("rate %v must be at least 0 (calls a second on each key)", o.Rate)
	}
	for _, k := range o.Keys {
		if !names[k] {
			return fmt.Errorf("keys: no key is named %q", k)
		}
	}
	if o.Cost.Weight < 0 || o.Cost.Orders < 0 || o.Cost.InputTokens < 0 || o.Cost.OutputTokens < 0 {
		return errors.New("cost: every part must be at least 0")
	}
	return nil
}

// outsideClient schedules the outside calls. Its owner (limits) serializes calls.
type outsideClient struct {
	every float64 // ms between two calls of a key
	cost  Cost
	keys  []*account
	next  []float64 // each key's next call, Unix ms
}

func newOutsideClient(o Outside, accounts []*account, start int64) *outsideClient {
	if o.Rate == 0 {
		return nil
	}
	c := &outsideClient{every: 1000 / o.Rate, cost: o.Cost}
	c.cost.Weight = max(c.cost.Weight, 1)
	for _, a := range accounts {
		if len(o.Keys) == 0 || slices.Contains(o.Keys, a.key.Name()) {
			c.keys = append(c.keys, a)
			c.next = append(c.next, float64(start)+c.every)
		}
	}
	return c
}

// due returns the key of the earliest outside call at or before t, and its time,
// and moves that key's schedule on; ok is false when none is due.
func (c *outsideClient) due(t int64) (a *account, at int64, ok bool) {
	if c == nil || len(c.keys) == 0 {
		return nil, 0, false
	}
	i := 0
	for j := range c.next {
		if c.next[j] < c.next[i] {
			i = j
		}
	}
	if c.next[i] > float64(t) {
		return nil, 0, false
	}
	at = int64(math.Floor(c.next[i]))
	c.next[i] += c.every
	return c.keys[i], at, true
}
