package limiter

import (
	"errors"
	"fmt"
	"slices"
	"time"
)

// Defaults used where a Config field is zero. They follow the reference upstream.
const (
	// DefaultMaxDelay is the largest one-way delay assumed at start: the reference
	// upstream's incoming and outgoing delays are each at most 50 ms.
	DefaultMaxDelay = 50 * time.Millisecond
	// DefaultMaxDelayCeiling caps how far 429s may widen the assumed delay.
	DefaultMaxDelayCeiling = time.Second
	// DefaultMaxArrival is the arrival horizon H: how long after it left a
	// request with no answer may still arrive. Servers and load balancers end
	// requests queued for longer (their request timeouts are typically 30 to 60
	// s), and exchanges refuse requests older than their receive window.
	DefaultMaxArrival = 30 * time.Second
	// DefaultMargin is the extra time added to every window; see Config.Margin.
	DefaultMargin = time.Millisecond
	// DefaultTolerance is the scheduling noise a round trip may carry beyond 2 L
	// before it counts as evidence that L is wrong; see Config.Tolerance.
	DefaultTolerance = 10 * time.Millisecond
	// DefaultBanThreshold is how many 429s the reference upstream takes before it
	// blocks a key for good.
	DefaultBanThreshold = 10
	// DefaultGuardThreshold is how many 429s trip the ban guard.
	DefaultGuardThreshold = 3
	// MaxLimit bounds a rule's Limit, and so the memory of a Limiter, which keeps
	// a record per send while it may count (about a window's sends), and the size
	// of its State, which carries the largest Limit's unit bounds (about 35 bytes
	// of JSON each: 350 kB at most, within a NATS KV entry).
	MaxLimit = 10_000
)

// NoMargin, as Config.Margin, adds no margin at all.
const NoMargin time.Duration = -1

// NoTolerance, as Config.Tolerance, allows a round trip no noise at all.
const NoTolerance time.Duration = -1

// DefaultRule is the reference upstream's rule: at most 20 requests in any window
// of more than 1000 ms.
var DefaultRule = Rule{Limit: 20, Window: time.Second}

// ErrInvalidConfig is wrapped by every error that New and Restore return for a
// Config they cannot use.
var ErrInvalidConfig = errors.New("invalid limiter config")

// Rule is one rate rule of the upstream: a request is accepted only if its arrival
// minus the arrival of the Limit-th previous accepted request is more than Window,
// both arrivals in whole milliseconds.
type Rule struct {
	// Limit is how many requests a window holds, at least 1.
	Limit int `json:"limit"`
	// Window is the rule's window, a whole number of milliseconds, at least 1 ms.
	Window time.Duration `json:"window_ns"`
}

// String returns the rule as "20 per 1s".
func (r Rule) String() string { return fmt.Sprintf("%d per %v", r.Limit, r.Window) }

// Config configures a Limiter. The zero value is the reference upstream's.
type Config struct {
	// Rules are the upstream's rules, all enforced at once; DefaultRule when empty.
	Rules []Rule
	// MaxDelay is the largest one-way delay to the upstream assumed at start (L in
	// the package doc); DefaultMaxDelay when 0. Every 429 widens it.
	MaxDelay time.Duration
	// MaxDelayCeiling caps how far 429s widen MaxDelay; DefaultMaxDelayCeiling (or
	// MaxDelay, if larger) when 0.
	MaxDelayCeiling time.Duration
	// MaxArrival is the arrival horizon H: a request given up without an answer
	// (Lost) is taken to arrive as late as it left plus H (or plus the longest
	// round trip the key has seen, if longer), and keeps its place in every
	// window until then. DefaultMaxArrival when 0; at least MaxDelayCeiling.
	MaxArrival time.Duration
	// Unordered says the upstream takes requests in any order (it checks no
	// nonce): the order rule (b) is off, and sends leave as the windows allow.
	Unordered bool
	// Margin is added to every window. The window arithmetic is exact without it
	// (see the package doc); the margin absorbs what the model leaves out: the
	// client's and the upstream's clocks ticking at slightly different rates (1 ms
	// per 1000 ms covers 1000 ppm), and, after a handoff, the offset between two
	// holders' clocks. DefaultMargin when 0; NoMargin (any negative value) for none.
	Margin time.Duration
	// Tolerance is how much longer than 2 L (out and back) a round trip may take,
	// for the scheduling noise of the client and the upstream, before it proves
	// that one way took longer than L; the same allowance applies to the
	// process's own lateness before it widens the window's delay. DefaultTolerance when
	// 0; NoTolerance (any negative value) for none.
	Tolerance time.Duration
	// BanThreshold is how many 429s the upstream takes before it blocks the key
	// for good; DefaultBanThreshold when 0.
	BanThreshold int
	// GuardThreshold is how many 429s trip the ban guard, which then refuses every
	// send (ErrQuarantined); at least 1 and below BanThreshold;
	// DefaultGuardThreshold (or BanThreshold-1, if lower) when 0.
	GuardThreshold int
	// TrustRetryAfter makes a 429 that carries a Retry-After pause the key for
	// exactly that long instead of at least the longest window: for upstreams
	// whose Retry-After says when the key may send again (LLM APIs, whose
	// windows are minutes long). The windows themselves are kept all the same.
	TrustRetryAfter bool
	// Lateness, when set, is shared by the limiters of one process: each notes
	// its own lateness there, and each takes the machine as busy (its answers
	// then bound its sends; see the package doc) when any of them was late.
	Lateness *Lateness
}

// settings is a validated Config with its defaults filled in.
type settings struct {
	rules     []Rule // by Limit, smallest first
	capacity  int    // the largest Limit: how many unit bounds a State carries
	maxDelay  time.Duration
	ceiling   time.Duration
	arrival   time.Duration
	unordered bool
	margin    time.Duration
	tolerance time.Duration
	longest   time.Duration // the longest Window
	ban       int
	guard     int
	trustRA   bool
	lateness  *Lateness
}

func (c Config) settings() (settings, error) {
	s := settings{
		rules:     slices.Clone(c.Rules),
		maxDelay:  c.MaxDelay,
		ceiling:   c.MaxDelayCeiling,
		arrival:   c.MaxArrival,
		unordered: c.Unordered,
		margin:    c.Margin,
		tolerance: c.Tolerance,
		ban:       c.BanThreshold,
		guard:     c.GuardThreshold,
		trustRA:   c.TrustRetryAfter,
		lateness:  c.Lateness,
	}
	if len(s.rules) == 0 {
		s.rules = []Rule{DefaultRule}
	}
	for i, r := range s.rules {
		switch {
		case r.Limit < 1 || r.Limit > MaxLimit:
			return settings{}, fmt.Errorf("%w: rule %d (%v): limit must be between 1 and %d requests per window",
				ErrInvalidConfig, i+1, r, MaxLimit)
		case r.Window < time.Millisecond:
			return settings{}, fmt.Errorf("%w: rule %d (%v): window must be at least 1ms",
				ErrInvalidConfig, i+1, r)
		case r.Window%time.Millisecond != 0:
			return settings{}, fmt.Errorf("%w: rule %d (%v): window must be a whole number of milliseconds, as the upstream compares arrival times in whole milliseconds",
				ErrInvalidConfig, i+1, r)
		}
		s.capacity = max(s.capacity, r.Limit)
		s.longest = max(s.longest, r.Window)
	}
	slices.SortStableFunc(s.rules, func(a, b Rule) int { return a.Limit - b.Limit })

	switch {
	case s.maxDelay < 0:
		return settings{}, fmt.Errorf("%w: max delay %v is negative; use 0 for the default %v",
			ErrInvalidConfig, s.maxDelay, DefaultMaxDelay)
	case s.maxDelay == 0:
		s.maxDelay = DefaultMaxDelay
	}
	switch {
	case s.ceiling < 0:
		return settings{}, fmt.Errorf("%w: max delay ceiling %v is negative; use 0 for the default %v",
			ErrInvalidConfig, s.ceiling, DefaultMaxDelayCeiling)
	case s.ceiling == 0:
		s.ceiling = max(DefaultMaxDelayCeiling, s.maxDelay)
	case s.ceiling < s.maxDelay:
		return settings{}, fmt.Errorf("%w: max delay ceiling %v is below the max delay %v it caps",
			ErrInvalidConfig, s.ceiling, s.maxDelay)
	}
	switch {
	case s.arrival < 0:
		return settings{}, fmt.Errorf("%w: max arrival %v is negative; use 0 for the default %v",
			ErrInvalidConfig, s.arrival, DefaultMaxArrival)
	case s.arrival == 0:
		s.arrival = max(DefaultMaxArrival, s.ceiling)
	case s.arrival < s.ceiling:
		return settings{}, fmt.Errorf("%w: max arrival %v is below the max delay ceiling %v: a request may take longer than that one way, so one given up must be held at least as long",
			ErrInvalidConfig, s.arrival, s.ceiling)
	}
	switch {
	case s.margin == 0:
		s.margin = DefaultMargin
	case s.margin < 0:
		s.margin = 0
	}
	switch {
	case s.tolerance == 0:
		s.tolerance = DefaultTolerance
	case s.tolerance < 0:
		s.tolerance = 0
	}
	switch {
	case s.ban < 0:
		return settings{}, fmt.Errorf("%w: ban threshold %d is negative; use 0 for the default %d",
			ErrInvalidConfig, s.ban, DefaultBanThreshold)
	case s.ban == 0:
		s.ban = DefaultBanThreshold
	case s.ban < 2:
		return settings{}, fmt.Errorf("%w: ban threshold %d leaves the ban guard no room: it must trip before the upstream blocks the key, so the upstream must take at least 2 rejections",
			ErrInvalidConfig, s.ban)
	}
	switch {
	case s.guard < 0:
		return settings{}, fmt.Errorf("%w: guard threshold %d is negative; use 0 for the default %d",
			ErrInvalidConfig, s.guard, DefaultGuardThreshold)
	case s.guard == 0:
		s.guard = min(DefaultGuardThreshold, s.ban-1)
	case s.guard >= s.ban:
		return settings{}, fmt.Errorf("%w: guard threshold %d must be below the ban threshold %d, so the guard stops sending before the upstream blocks the key",
			ErrInvalidConfig, s.guard, s.ban)
	}
	return s, nil
}
