package worker

import (
	"github.com/ratefleet/ratefleet/internal/limiter"
	"github.com/ratefleet/ratefleet/internal/upstream"
)

// observer is a Pacer that reads the upstream's usage reports: the adaptive
// limiter does; the baselines do not, and need not.
type observer interface {
	Observed(t limiter.Ticket, r limiter.Rule, used int)
}

// observe tells p, if it reads them, what the usage headers of the answer to
// the send of t reported (the profile's usage section): another client's use of
// the key shows there before any 429. Call it after the answer is reported.
func observe(p Pacer, t limiter.Ticket, ans upstream.Answer) {
	o, ok := p.(observer)
	if !ok {
		return
	}
	for _, u := range ans.Usage {
		o.Observed(t, u.Rule, u.Used)
	}
}
