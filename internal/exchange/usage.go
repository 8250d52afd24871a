package exchange

import (
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// HeaderStyle is a way an upstream reports its rules' usage in every answer:
// Config.UsageHeaders. Each reports the rules the call's key falls under, the
// usage read as the answer is written (after the outgoing delay, so with the calls
// of others and of the outside client in between). No style is on by default.
type HeaderStyle string

// The usage header styles.
const (
	// BinanceHeaders: X-MBX-USED-WEIGHT-<interval> with the used weight of each
	// sliding or fixed rule counting weight (1M for a minute, 10S, 1H, 1D), and, on
	// calls that place orders, X-MBX-ORDER-COUNT-<interval> for each counting
	// orders.
	BinanceHeaders HeaderStyle = "binance"
	// OpenAIHeaders: x-ratelimit-limit-requests, x-ratelimit-remaining-requests and
	// x-ratelimit-reset-requests (a duration such as 1.5s: until the usage is back to
	// 0) from the rule counting requests with the least room, and the same three for
	// -tokens from the rule counting tokens (input, output or both) with the least
	// room.
	OpenAIHeaders HeaderStyle = "openai"
	// AnthropicHeaders: anthropic-ratelimit-requests-limit, -remaining and -reset (an
	// RFC 3339 time), and the same for -input-tokens, -output-tokens and -tokens,
	// each from the rule of that dimension with the least room.
	AnthropicHeaders HeaderStyle = "anthropic"
)

// ParseHeaderStyles reads a comma-separated list of header styles.
func ParseHeaderStyles(list string) ([]HeaderStyle, error) {
	var out []HeaderStyle
	for name := range strings.SplitSeq(list, ",") {
		switch st := HeaderStyle(strings.TrimSpace(name)); st {
		case "":
		case BinanceHeaders, OpenAIHeaders, AnthropicHeaders:
			out = append(out, st)
		default:
			return nil, fmt.Errorf("usage headers %q: use binance, openai or anthropic", name)
		}
	}
	return out, nil
}

// writeUsage writes the usage headers of Config.UsageHeaders for a call of key a
// costing c.
func (s *Server) writeUsage(h http.Header, a *account, c Cost) {
	if len(s.cfg.UsageHeaders) == 0 {
		return
	}
	us := s.usage(a)
	now := s.cfg.Now()
	for _, style := range s.cfg.UsageHeaders {
		switch style {
		case BinanceHeaders:
			binanceUsage(h, us, c)
		case OpenAIHeaders:
			for _, g := range []struct {
				suffix string
				dims   []Dimension
			}{{"requests", []Dimension{Requests}}, {"tokens", []Dimension{Tokens, InputTokens, OutputTokens}}} {
				if u, ok := tightest(us, g.dims...); ok {
					h.Set("x-ratelimit-limit-"+g.suffix, strconv.FormatInt(u.rule.Limit, 10))
					h.Set("x-ratelimit-remaining-"+g.suffix, strconv.FormatInt(remaining(u), 10))
					h.Set("x-ratelimit-reset-"+g.suffix, u.reset.String())
				}
			}
		case AnthropicHeaders:
			for _, g := range []struct {
				part string
				dim  Dimension
			}{{"requests", Requests}, {"input-tokens", InputTokens}, {"output-tokens", OutputTokens}, {"tokens", Tokens}} {
				if u, ok := tightest(us, g.dim); ok {
					h.Set("anthropic-ratelimit-"+g.part+"-limit", strconv.FormatInt(u.rule.Limit, 10))
					h.Set("anthropic-ratelimit-"+g.part+"-remaining", strconv.FormatInt(remaining(u), 10))
					h.Set("anthropic-ratelimit-"+g.part+"-reset", now.Add(u.reset).UTC().Format(time.RFC3339))
				}
			}
		}
	}
}

func binanceUsage(h http.Header, us []ruleUsage, c Cost) {
	for _, u := range us {
		if u.rule.Kind == Bucket {
			continue // Binance's rules are windows; a bucket has no interval to name
		}
		used := strconv.FormatInt(int64(math.Ceil(u.used)), 10)
		interval := strings.ToUpper(shortDuration(u.rule.Window))
		switch {
		case u.rule.Dimension == Weight:
			h.Set("X-MBX-USED-WEIGHT-"+interval, used)
		case u.rule.Dimension == Orders && c.Orders > 0:
			h.Set("X-MBX-ORDER-COUNT-"+interval, used)
		}
	}
}

// tightest returns, of the rules counting one of dims, the one with the least room.
func tightest(us []ruleUsage, dims ...Dimension) (ruleUsage, bool) {
	var best ruleUsage
	found := false
	for _, u := range us {
		for _, d := range dims {
			if u.rule.Dimension == d && (!found || remaining(u) < remaining(best)) {
				best, found = u, true
			}
		}
	}
	return best, found
}

// remaining is the room a rule has left, in whole units, at least 0.
func remaining(u ruleUsage) int64 {
	return max(0, u.rule.Limit-int64(math.Ceil(u.used)))
}
