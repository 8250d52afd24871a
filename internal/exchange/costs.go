package exchange

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
)

// Cost is what one call costs in each dimension a rule may count.
type Cost struct {
	// Weight is the call's weight; 0 in a PathCost means 1.
	Weight int64
	// Orders is how many orders the call places (0 for all but order paths).
	Orders int64
	// InputTokens and OutputTokens are the call's tokens. Only the LLM endpoint has
	// them: input read from the request, output drawn once answered (Tokens).
	InputTokens, OutputTokens int64
}

// of returns the units of d the call costs. Every call is one request.
func (c Cost) of(d Dimension) int64 {
	switch d {
	case Requests:
		return 1
	case Weight:
		return c.Weight
	case Orders:
		return c.Orders
	case InputTokens:
		return c.InputTokens
	case OutputTokens:
		return c.OutputTokens
	case Tokens:
		return c.InputTokens + c.OutputTokens
	}
	return 0
}

// PathCost is one entry of Config.Costs: what a call of Method and Path costs.
type PathCost struct {
	Method, Path string
	Cost         Cost
}

// costTable finds a call's cost by method and path. A call not in the table
// costs weight 1 and no order.
type costTable map[string]Cost

func newCostTable(entries []PathCost) costTable {
	t := costTable{}
	for _, e := range entries {
		c := e.Cost
		c.Weight = max(c.Weight, 1)
		t[e.Method+" "+e.Path] = c
	}
	return t
}

func (t costTable) of(method, path string) Cost {
	if c, ok := t[method+" "+path]; ok {
		return c
	}
	return Cost{Weight: 1}
}

// builtinPaths are served by their own handlers; a PathCost for them only sets
// their cost.
var builtinPaths = map[string]bool{
	"GET /api/request":  true,
	"POST /api/private": true,
	"POST /v1/complete": true,
	"POST /v1/messages": true,
}

func validateCosts(entries []PathCost) error {
	var errs []error
	seen := map[string]bool{}
	for i, e := range entries {
		where := fmt.Sprintf("Costs[%d] %s %s", i, e.Method, e.Path)
		switch e.Method {
		case http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
		default:
			errs = append(errs, fmt.Errorf("%s: method must be GET, POST, PUT, PATCH or DELETE", where))
		}
		switch {
		case !strings.HasPrefix(e.Path, "/") || strings.ContainsAny(e.Path, "{} \t?#") || (len(e.Path) > 1 && strings.HasSuffix(e.Path, "/")):
			errs = append(errs, fmt.Errorf("%s: path must start with /, not end with /, and hold no braces, spaces, ? or #", where))
		case e.Path == "/stats" || strings.HasPrefix(e.Path, "/admin/") || (e.Path == "/api/request" && e.Method != http.MethodGet):
			errs = append(errs, fmt.Errorf("%s: the simulator's own endpoint; choose another path", where))
		}
		if seen[e.Method+" "+e.Path] {
			errs = append(errs, fmt.Errorf("%s: listed twice", where))
		}
		seen[e.Method+" "+e.Path] = true
		if e.Cost.Weight < 0 || e.Cost.Orders < 0 || e.Cost.InputTokens != 0 || e.Cost.OutputTokens != 0 {
			errs = append(errs, fmt.Errorf("%s: weight and orders must be at least 0; tokens come from the LLM endpoint's body, not the table", where))
		}
	}
	return errors.Join(errs...)
}

// ParsePathCost reads a cost table entry written as METHOD PATH name=value,...,
// the form of cmd/exchange's --cost:
//
//	POST /api/v3/order weight=1,orders=1
//	GET /api/v3/depth weight=5
func ParsePathCost(s string) (PathCost, error) {
	f := strings.Fields(s)
	if len(f) != 3 && len(f) != 2 {
		return PathCost{}, fmt.Errorf("cost %q: want METHOD PATH weight=N,orders=N", s)
	}
	pc := PathCost{Method: strings.ToUpper(f[0]), Path: f[1]}
	if len(f) == 3 {
		c, err := ParseCost(f[2])
		if err != nil {
			return PathCost{}, fmt.Errorf("cost %q: %w", s, err)
		}
		pc.Cost = c
	}
	if err := validateCosts([]PathCost{pc}); err != nil {
		return PathCost{}, err
	}
	return pc, nil
}

// ParseCost reads a cost written as weight=N,orders=N (either may be left out).
func ParseCost(s string) (Cost, error) {
	var c Cost
	for part := range strings.SplitSeq(s, ",") {
		name, value, ok := strings.Cut(strings.TrimSpace(part), "=")
		n, err := strconv.ParseInt(value, 10, 64)
		switch {
		case !ok || err != nil || n < 0:
			return Cost{}, fmt.Errorf("%q: want weight=N or orders=N, N at least 0", part)
		case name == "weight":
			c.Weight = n
		case name == "orders":
			c.Orders = n
		default:
			return Cost{}, fmt.Errorf("%q: unknown cost (use weight or orders)", part)
		}
	}
	return c, nil
}
