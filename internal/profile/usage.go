package profile

import (
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/ratefleet/ratefleet/internal/limiter"
	"github.com/ratefleet/ratefleet/wire"
)

// What a usage header reports.
const (
	// ReportsUsed: the units the key has used in the rule's window
	// (X-MBX-USED-WEIGHT-1M).
	ReportsUsed = "used"
	// ReportsRemaining: the units the key has left in the rule's window
	// (x-ratelimit-remaining-requests); used is the rule's limit less it.
	ReportsRemaining = "remaining"
)

// UsageHeader is a header in which the upstream reports, with its answers, how
// much of one rule's budget the key has used or has left: evidence of another
// client on the same key, which the limiter keeps room for
// (limiter.Limiter.Observed).
type UsageHeader struct {
	// Header is the header's name.
	Header string `yaml:"header"`
	// Rule is the index, in rate.rules, of the rule it reports.
	Rule int `yaml:"rule"`
	// Reports is used or remaining.
	Reports string `yaml:"reports"`
}

// Usage is one rule's usage read from an answer.
type Usage struct {
	// Rule is the rule, as the limiter takes it (Config.Rules[i] of
	// LimiterConfig for the profile's rate.rules[i]).
	Rule limiter.Rule
	// Used is how many units the upstream counted in the rule's window when it
	// answered.
	Used int
}

// ReadUsage returns the usage the headers h of an answer report, one entry per
// usage header present; a header that is not a number is skipped.
func (p *Profile) ReadUsage(h http.Header) []Usage {
	var out []Usage
	for _, u := range p.Usage {
		v := strings.TrimSpace(h.Get(u.Header))
		if v == "" || u.Rule < 0 || u.Rule >= len(p.Rate.Rules) {
			continue
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || f < 0 {
			continue
		}
		r := p.Rate.Rules[u.Rule]
		used := int(math.Min(math.Ceil(f), float64(r.Limit))) // a fraction used counts whole
		if u.Reports == ReportsRemaining {
			used = r.Limit - int(math.Min(math.Floor(f), float64(r.Limit)))
		}
		out = append(out, Usage{Rule: r.limiterRule(), Used: used})
	}
	return out
}

// reportedRules returns the rules the usage headers report, as the limiter
// takes them (validateUsage says why it leaves one out).
func (p *Profile) reportedRules() []limiter.Rule {
	var out []limiter.Rule
	for _, u := range p.Usage {
		if u.Rule < 0 || u.Rule >= len(p.Rate.Rules) {
			continue
		}
		if r := p.Rate.Rules[u.Rule]; r.Kind != limiter.Bucket.String() && p.placeable(r) {
			out = append(out, r.limiterRule())
		}
	}
	return out
}

// placeable reports whether a count of rule r can be placed in one interval of
// the upstream's: a fixed window needs the clock offset (and the limiter's
// margin) to leave part of it certain.
func (p *Profile) placeable(r Rule) bool {
	if r.Kind != limiter.Fixed.String() {
		return true
	}
	return 2*(p.clockOffset()+limiter.DefaultMargin) < r.Window
}

// clockOffset is rate.clock_offset, or the limiter's default.
func (p *Profile) clockOffset() time.Duration {
	if p.Rate.ClockOffset <= 0 {
		return limiter.DefaultClockOffset
	}
	return p.Rate.ClockOffset
}

// validateUsage checks the usage headers: each names a header once, a rule of
// rate.rules that is a window, and what it reports.
func (p *Profile) validateUsage(v *validator) {
	seen := map[string]int{}
	for i, u := range p.Usage {
		field := fmt.Sprintf("usage[%d]", i)
		switch name := http.CanonicalHeaderKey(u.Header); {
		case u.Header == "":
			v.addf(field, "needs header, the name of the header that reports the usage, such as X-MBX-USED-WEIGHT-1M")
		case !wire.ValidHeaderName(u.Header):
			v.addf(field+".header", "%q must be a header name, an RFC 7230 token", u.Header)
		default:
			if j, ok := seen[name]; ok {
				v.addf(field+".header", "%q is read already by usage[%d]; a header reports one rule", u.Header, j)
			}
			seen[name] = i
		}
		switch {
		case u.Rule < 0 || u.Rule >= len(p.Rate.Rules):
			v.addf(field+".rule", "%d is not a rule of rate.rules: give the index of the rule it reports, from 0 to %d", u.Rule, len(p.Rate.Rules)-1)
		case p.Rate.Rules[u.Rule].Kind == limiter.Bucket.String():
			v.addf(field+".rule", "%d is a bucket: its usage is not read; name a sliding or fixed rule", u.Rule)
		case !p.placeable(p.Rate.Rules[u.Rule]):
			v.addf(field+".rule", "%d is a fixed window of %v with rate.clock_offset %v: no count could be placed in one of its intervals; set clock_offset below half the window", u.Rule, p.Rate.Rules[u.Rule].Window, p.clockOffset())
		}
		if u.Reports != ReportsUsed && u.Reports != ReportsRemaining {
			v.addf(field+".reports", "is %q; use used (the units the key has used in the rule's window) or remaining (the units it has left)", u.Reports)
		}
	}
}
