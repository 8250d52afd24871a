package exchange

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
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

// TokenCounting sets how the LLM endpoint (POST /v1/complete) counts a call's
// tokens: Config.Tokens. Input tokens are read from the request's JSON body before
// the rules are asked: its "input_tokens" when given, else the characters of its
// "prompt" and of its "messages"' "content" over CharsPerToken, rounded up, at least
// 1. Output tokens are known only once answered: drawn uniformly from MinOutput to
// the body's "max_tokens" (MaxTokens when it gives none), by a hash of the server's
// seed and the req_id, so a request id always gets the same count. The answer's
// body reports both in {"usage":{"input_tokens":..,"output_tokens":..}}.
type TokenCounting struct {
	// CharsPerToken is how many characters make an input token; 4 when 0.
	CharsPerToken int
	// MaxTokens caps the output of a call whose body names no max_tokens; 256
	// when 0.
	MaxTokens int64
	// MinOutput is the least output a call gets; 1 when 0.
	MinOutput int64
}

func (tc TokenCounting) validate() error {
	if tc.CharsPerToken < 0 || tc.MaxTokens < 0 || tc.MinOutput < 0 {
		return errors.New("CharsPerToken, MaxTokens and MinOutput must be at least 0 (0 takes the default)")
	}
	return nil
}

// llmBody is what the LLM endpoint reads of a request's body.
type llmBody struct {
	Prompt   string `json:"prompt"`
	Messages []struct {
		Content string `json:"content"`
	} `json:"messages"`
	MaxTokens   int64 `json:"max_tokens"`
	InputTokens int64 `json:"input_tokens"`
}

// errBadBody is the error for an LLM body that is not a JSON object.
var errBadBody = errors.New("want a JSON object with prompt or messages")

// input returns a call's input tokens and its output cap, read from body.
func (tc TokenCounting) input(body []byte) (in, maxOut int64, err error) {
	var b llmBody
	if err := json.Unmarshal(body, &b); err != nil {
		return 0, 0, fmt.Errorf("%w: %w", errBadBody, err)
	}
	in = b.InputTokens
	if in <= 0 {
		chars := len([]rune(b.Prompt))
		for _, m := range b.Messages {
			chars += len([]rune(m.Content))
		}
		per := max(tc.CharsPerToken, 1)
		if tc.CharsPerToken == 0 {
			per = 4
		}
		in = max(int64((chars+per-1)/per), 1)
	}
	maxOut = b.MaxTokens
	if maxOut <= 0 {
		maxOut = tc.MaxTokens
		if maxOut == 0 {
			maxOut = 256
		}
	}
	return in, maxOut, nil
}

// output returns the output tokens of the call with reqID, at most maxOut.
func (tc TokenCounting) output(seed uint64, reqID string, maxOut int64) int64 {
	lo := max(tc.MinOutput, 1)
	if maxOut <= lo {
		return maxOut
	}
	h := fnv.New64a()
	_, _ = h.Write([]byte(reqID))
	x := mix(seed ^ h.Sum64())
	return lo + int64(x%uint64(maxOut-lo+1))
}

// mix is splitmix64's finalizer: spreads the bits of x.
func mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}
