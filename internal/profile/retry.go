package profile

import (
	"math"
	"time"
)

// Retry says when a failed attempt (a 5xx, a gateway's answer, a timeout, a
// broken connection, a 429) is tried again, and when no more: exponential
// backoff with jitter, never sooner than the upstream's Retry-After, for at most
// MaxAttempts deliveries and MaxTime from when the request was stored. A
// request is retried until its time to live ends, unless one of those ends
// first; the consumer's max_deliver (streams.yaml) bounds the deliveries too.
type Retry struct {
	// First is the delay after the first failed attempt; 100ms when 0.
	First time.Duration `yaml:"first"`
	// Factor multiplies the delay after each failed attempt; 2 when 0.
	Factor float64 `yaml:"factor"`
	// MaxDelay caps the delay; 30s when 0.
	MaxDelay time.Duration `yaml:"max_delay"`
	// Jitter spreads each delay by up to this share either way, so requests
	// failed together are not tried again together; 0.2 when 0, none when
	// negative.
	Jitter float64 `yaml:"jitter"`
	// MaxAttempts bounds the deliveries a request gets; 0 leaves it to the
	// consumer's max_deliver.
	MaxAttempts int `yaml:"max_attempts"`
	// MaxTime bounds how long a request is retried, from when it was stored; 0
	// leaves it to the request's time to live.
	MaxTime time.Duration `yaml:"max_time"`
}

// The Retry defaults: they ride out an upstream outage of many minutes while a
// request's time to live lasts.
const (
	DefaultRetryFirst    = 100 * time.Millisecond
	DefaultRetryFactor   = 2
	DefaultRetryMaxDelay = 30 * time.Second
	DefaultRetryJitter   = 0.2
)

// Delay returns the delay after failed attempt n (1-based); u, from 0 to 1, draws
// the jitter (0.5 for none).
func (r Retry) Delay(n int, u float64) time.Duration {
	first, factor, ceiling, jitter := r.First, r.Factor, r.MaxDelay, r.Jitter
	if first <= 0 {
		first = DefaultRetryFirst
	}
	if factor < 1 {
		factor = DefaultRetryFactor
	}
	if ceiling <= 0 {
		ceiling = DefaultRetryMaxDelay
	}
	switch {
	case jitter == 0:
		jitter = DefaultRetryJitter
	case jitter < 0:
		jitter = 0
	}
	d := float64(first) * math.Pow(factor, float64(max(n, 1)-1))
	d = min(d, float64(ceiling))
	d *= 1 + jitter*(2*u-1)
	return time.Duration(min(d, float64(ceiling)*(1+jitter)))
}

// validate checks the policy's fields.
func (r Retry) validate(v *validator) {
	if r.First < 0 || r.MaxDelay < 0 || r.MaxTime < 0 {
		v.addf("retry", "first, max_delay and max_time must not be negative")
	}
	if r.Factor != 0 && r.Factor < 1 {
		v.addf("retry.factor", "%g must be at least 1 (0 for the default, %d)", r.Factor, DefaultRetryFactor)
	}
	if r.Jitter > 1 {
		v.addf("retry.jitter", "%g must be at most 1 (a share of the delay)", r.Jitter)
	}
	if r.MaxAttempts < 0 {
		v.addf("retry.max_attempts", "%d must not be negative (0 leaves it to the consumer's max_deliver)", r.MaxAttempts)
	}
	if r.First > 0 && r.MaxDelay > 0 && r.First > r.MaxDelay {
		v.addf("retry", "first %s is above max_delay %s", r.First, r.MaxDelay)
	}
}
