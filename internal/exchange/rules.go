package exchange

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Kind is how a Rule counts.
type Kind string

// The kinds of rule.
const (
	// Sliding admits at most Limit units in any span [t−Window, t]: the reference's
	// ring, with costs. A unit counted at t frees at t+Window+1 ms.
	Sliding Kind = "sliding"
	// Fixed admits at most Limit units per calendar window: the count restarts at 0
	// when a window starts, windows aligned to the Unix epoch on the server's clock
	// (a minute starts at :00, a day at 00:00 UTC). Across a boundary it admits up to
	// 2·Limit in a span shorter than Window.
	Fixed Kind = "fixed"
	// Bucket is a counter raised by each call's cost and lowered at Rate units a
	// second, never below 0: a call is refused when it would raise the counter above
	// Limit (Kraken's counter, an LLM API's continuous replenishment).
	Bucket Kind = "bucket"
)

// Dimension is what a rule counts: each call costs some units of each (costs.go).
type Dimension string

// The dimensions a call costs.
const (
	Requests     Dimension = "requests"      // 1 a call
	Weight       Dimension = "weight"        // the path's weight (Binance), 1 unless the table says
	Orders       Dimension = "orders"        // the path's orders, 0 unless the table says
	InputTokens  Dimension = "input_tokens"  // read from the request's body (LLM)
	OutputTokens Dimension = "output_tokens" // known once answered, charged then (LLM)
	Tokens       Dimension = "tokens"        // input and output tokens together
)

// Scope is who shares a rule's counter.
type Scope string

// The scopes of a rule.
const (
	PerKey     Scope = "key"     // one counter per key (the reference, Kraken)
	PerAccount Scope = "account" // one per account, a named group of keys (Config.Accounts)
	PerIP      Scope = "ip"      // one for the whole upstream: every key shares it
)

// Rule is one rate rule beyond the key's ring: Config.Rules. Every call is charged
// to every rule it falls under, and is admitted only if every one of them, and the
// key's ring, has room for it.
type Rule struct {
	// Name names the rule in stats; empty, it is scope:dimension:kind:window (or
	// rate).
	Name string
	Kind Kind
	// Limit is the most units a window admits (Sliding, Fixed), or the bucket's
	// capacity (Bucket).
	Limit int64
	// Window is the span (Sliding) or the calendar interval (Fixed), whole
	// milliseconds; unused by Bucket.
	Window time.Duration
	// Rate is how many units a second the bucket loses (Bucket only).
	Rate float64
	// Dimension is what the rule counts.
	Dimension Dimension
	// Scope is who shares its counter.
	Scope Scope
}

// label returns the rule's name, or the name made of its parts.
func (r Rule) label() string {
	if r.Name != "" {
		return r.Name
	}
	span := shortDuration(r.Window)
	if r.Kind == Bucket {
		span = strconv.FormatFloat(r.Rate, 'g', -1, 64) + "/s"
	}
	return fmt.Sprintf("%s:%s:%s:%s", r.Scope, r.Dimension, r.Kind, span)
}

func (r Rule) validate() error {
	var errs []error
	switch r.Kind {
	case Sliding, Fixed:
		if r.Window <= 0 || r.Window%time.Millisecond != 0 {
			errs = append(errs, fmt.Errorf("window %v must be a positive whole number of milliseconds", r.Window))
		}
	case Bucket:
		if !(r.Rate > 0) || math.IsInf(r.Rate, 0) {
			errs = append(errs, fmt.Errorf("rate %v must be above 0 (units a second the bucket loses)", r.Rate))
		}
	default:
		errs = append(errs, fmt.Errorf("kind %q: use sliding, fixed or bucket", r.Kind))
	}
	if r.Limit < 1 {
		errs = append(errs, fmt.Errorf("limit %d must be at least 1", r.Limit))
	}
	switch r.Dimension {
	case Requests, Weight, Orders, InputTokens, OutputTokens, Tokens:
	default:
		errs = append(errs, fmt.Errorf("cost %q: use requests, weight, orders, input_tokens, output_tokens or tokens", r.Dimension))
	}
	switch r.Scope {
	case PerKey, PerAccount, PerIP:
	default:
		errs = append(errs, fmt.Errorf("scope %q: use key, account or ip", r.Scope))
	}
	return errors.Join(errs...)
}

// ParseRule reads a rule written as comma-separated name=value pairs, the form of
// cmd/exchange's --rule:
//
//	kind=fixed,limit=6000,window=1m,cost=weight,scope=ip,name=REQUEST_WEIGHT
//	kind=bucket,limit=20,rate=0.5,cost=weight,scope=key
//
// cost defaults to requests and scope to key.
func ParseRule(s string) (Rule, error) {
	r := Rule{Dimension: Requests, Scope: PerKey}
	for part := range strings.SplitSeq(s, ",") {
		name, value, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return Rule{}, fmt.Errorf("rule %q: %q is not name=value", s, part)
		}
		var err error
		switch name {
		case "name":
			r.Name = value
		case "kind":
			r.Kind = Kind(value)
		case "limit":
			r.Limit, err = strconv.ParseInt(value, 10, 64)
		case "window":
			r.Window, err = time.ParseDuration(value)
		case "rate":
			r.Rate, err = strconv.ParseFloat(value, 64)
		case "cost":
			r.Dimension = Dimension(value)
		case "scope":
			r.Scope = Scope(value)
		default:
			return Rule{}, fmt.Errorf("rule %q: unknown field %q (use kind, limit, window, rate, cost, scope, name)", s, name)
		}
		if err != nil {
			return Rule{}, fmt.Errorf("rule %q: %s: %w", s, name, err)
		}
	}
	if err := r.validate(); err != nil {
		return Rule{}, fmt.Errorf("rule %q: %w", s, err)
	}
	return r, nil
}

// shortDuration writes d as Binance names intervals' lengths, without the letter's
// case: 1s, 10s, 1m, 1h, 1d; other lengths as Go writes them.
func shortDuration(d time.Duration) string {
	for _, u := range []struct {
		d      time.Duration
		letter string
	}{{24 * time.Hour, "d"}, {time.Hour, "h"}, {time.Minute, "m"}, {time.Second, "s"}} {
		if d >= u.d && d%u.d == 0 {
			return strconv.FormatInt(int64(d/u.d), 10) + u.letter
		}
	}
	return d.String()
}
