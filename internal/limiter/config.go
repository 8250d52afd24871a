package limiter

import (
	"errors"
	"fmt"
	"math"
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
	// DefaultRegistration is how long past L the upstream may take to register an
	// arrival; see Config.Registration.
	DefaultRegistration = 5 * time.Millisecond
	// DefaultBanThreshold is how many 429s the reference upstream takes before it
	// blocks a key for good.
	DefaultBanThreshold = 10
	// DefaultGuardThreshold is how many 429s trip the ban guard.
	DefaultGuardThreshold = 3
	// DefaultClockOffset is how far the upstream's calendar may be from this
	// process's wall clock, for fixed windows; see Config.ClockOffset.
	DefaultClockOffset = time.Second
	// MaxDrain bounds how long a full bucket takes to drain (Limit / Rate), and
	// so how long its sends count.
	MaxDrain = 30 * 24 * time.Hour
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

// NoRegistration, as Config.Registration, takes every arrival to be registered
// within L of its departure exactly.
const NoRegistration time.Duration = -1

// NoClockOffset, as Config.ClockOffset, takes the upstream's calendar to be this
// process's wall clock exactly.
const NoClockOffset time.Duration = -1

// DefaultRule is the reference upstream's rule: at most 20 requests in any window
// of more than 1000 ms.
var DefaultRule = Rule{Limit: 20, Window: time.Second}

// ErrInvalidConfig is wrapped by every error that New and Restore return for a
// Config they cannot use.
var ErrInvalidConfig = errors.New("invalid limiter config")

// RuleKind is how the upstream counts for a Rule.
type RuleKind uint8

// The kinds of rule.
const (
	// Sliding: at most Limit units in any interval of length Window, in whole
	// milliseconds. A unit is accepted only if its arrival minus the arrival of
	// the Limit-th previous accepted unit is more than Window.
	Sliding RuleKind = iota
	// Fixed: at most Limit units in each calendar interval of length Window, the
	// count restarting at 0 when the interval starts (a minute's count at :00 of
	// the upstream's clock). The intervals are the multiples of Window since the
	// Unix epoch, within Config.ClockOffset on this process's wall clock.
	Fixed
	// Bucket: a counter raised by each unit that arrives and lowered at Rate
	// units a second (never below 0); a request is refused if its units would
	// take the counter above Limit. Window, if not 0, is the step of the decay:
	// the counter falls by Rate·Window once every Window instead of continuously.
	Bucket
)

// ruleKinds names the kinds, as a profile spells them.
var ruleKinds = [...]string{Sliding: "sliding", Fixed: "fixed", Bucket: "bucket"}

// String returns the kind's name: sliding, fixed or bucket.
func (k RuleKind) String() string {
	if int(k) < len(ruleKinds) {
		return ruleKinds[k]
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// ParseRuleKind returns the kind named s (sliding, fixed or bucket); the empty
// name is Sliding.
func ParseRuleKind(s string) (RuleKind, error) {
	if s == "" {
		return Sliding, nil
	}
	for k, name := range ruleKinds {
		if s == name {
			return RuleKind(k), nil
		}
	}
	return 0, fmt.Errorf("%w: rule kind %q: use sliding, fixed or bucket", ErrInvalidConfig, s)
}

// MarshalText writes the kind's name.
func (k RuleKind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText reads a kind's name.
func (k *RuleKind) UnmarshalText(b []byte) error {
	v, err := ParseRuleKind(string(b))
	if err != nil {
		return err
	}
	*k = v
	return nil
}

// Rule is one rate rule of the upstream, counted per key, as its Kind says. By
// default (Sliding) a request is accepted only if its arrival minus the arrival
// of the Limit-th previous accepted request is more than Window, both arrivals in
// whole milliseconds.
type Rule struct {
	// Kind is how the upstream counts; Sliding when zero.
	Kind RuleKind `json:"kind,omitempty"`
	// Limit is how many units a window holds (for a Bucket, the counter's
	// capacity), at least 1.
	Limit int `json:"limit"`
	// Window is the rule's window, a whole number of milliseconds, at least 1 ms.
	// For a Bucket it is the step of the decay, 0 for a continuous one.
	Window time.Duration `json:"window_ns"`
	// Rate is how many units a second a Bucket's counter falls by; only a Bucket
	// has one.
	Rate float64 `json:"rate,omitempty"`
}

// String returns the rule as "20 per 1s", "20 per fixed 1m0s" or "bucket of 15
// falling 0.33/s".
func (r Rule) String() string {
	switch r.Kind {
	case Fixed:
		return fmt.Sprintf("%d per fixed %v", r.Limit, r.Window)
	case Bucket:
		s := fmt.Sprintf("bucket of %d falling %g/s", r.Limit, r.Rate)
		if r.Window > 0 {
			s += fmt.Sprintf(" every %v", r.Window)
		}
		return s
	case Sliding:
		return fmt.Sprintf("%d per %v", r.Limit, r.Window)
	}
	return fmt.Sprintf("%v: %d per %v", r.Kind, r.Limit, r.Window)
}

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
	// Registration is how long past L the upstream may take to register a
	// request's arrival: its own scheduling (the request read late, a timer that
	// fires late, a stalled CPU), which the round trips hide among the delays.
	// Every arrival bound of the window is left + L + Registration; the order
	// rule does not take it (an inversion costs a 400, which it learns from).
	// On a 2-core machine at 93 requests a second, the simulator registered
	// about 1 % of requests 3 ms or more past their delay and 0.3 % 5 ms or more,
	// up to 21 ms; those tails drew a 429 in failover runs. DefaultRegistration
	// (5 ms) when 0; NoRegistration (any negative value) for none.
	Registration time.Duration
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
	// ClockOffset bounds how far the upstream's calendar is from this process's
	// wall clock, for Fixed rules: each fixed window of the upstream starts
	// within ClockOffset of a multiple of its Window (since the Unix epoch) on
	// this clock. It covers both clocks' errors (NTP keeps each within tens of
	// milliseconds; a clock left unsynchronised for hours drifts by a second) and
	// an upstream that starts its windows a little off the round second. It
	// costs a fixed window nothing while 2·ClockOffset + L fits in its Window:
	// each window's sends then leave ClockOffset after it starts. An offset of
	// half the Window or more covers every alignment (the windows of an upstream
	// that starts them at a key's first request), and the rule then paces as the
	// sliding window does. DefaultClockOffset when 0; NoClockOffset (any
	// negative value) for none.
	ClockOffset time.Duration
	// Lateness, when set, is shared by the limiters of one process: each notes
	// its own lateness there, and each takes the machine as busy (its answers
	// then bound its sends; see the package doc) when any of them was late.
	Lateness *Lateness
	// Reported are the rules, among Rules, whose usage the upstream reports with
	// its answers (Observed): until a rule's first report it holds one send (the
	// key sends once and reads the count from its answer), then keeps back what
	// another client is seen to use. Observed reads reports of any rule; naming
	// one here makes the key wait for its first report before filling it. No
	// Bucket (its usage is not read), and no Fixed rule whose ClockOffset covers
	// every alignment of its intervals (no count could be placed in one).
	Reported []Rule
}

// rule is a validated Rule with what the limiter derives from it.
type rule struct {
	Rule
	// span is how long after its arrival a unit may count: Window for a sliding
	// one, Window plus the offset twice for a fixed one, the time a full
	// bucket takes to drain for a bucket.
	span time.Duration
	// edge is a fixed rule's clock offset plus the margin, in whole ms rounded
	// up, at most half the Window, rounded up (which covers every alignment).
	edge int64
	// per is the time a bucket's counter takes to fall by one unit, rounded up:
	// the limiter never takes it to fall faster than it does.
	per time.Duration
}

// settings is a validated Config with its defaults filled in.
type settings struct {
	rules     []rule // by Limit, smallest first
	kinds     bool   // some rule is Fixed or Bucket
	buckets   bool   // some rule is a Bucket
	capacity  int    // the largest Limit: how many unit bounds a State carries
	maxDelay  time.Duration
	ceiling   time.Duration
	arrival   time.Duration
	unordered bool
	margin    time.Duration
	tolerance time.Duration
	register  time.Duration // Registration
	longest   time.Duration // the longest span of a rule
	offset    time.Duration // ClockOffset
	ban       int
	guard     int
	trustRA   bool
	lateness  *Lateness
	usage     []bool // per rule, whether Config.Reported names it
}

func (c Config) settings() (settings, error) {
	s := settings{
		maxDelay:  c.MaxDelay,
		ceiling:   c.MaxDelayCeiling,
		arrival:   c.MaxArrival,
		unordered: c.Unordered,
		margin:    c.Margin,
		tolerance: c.Tolerance,
		register:  c.Registration,
		ban:       c.BanThreshold,
		guard:     c.GuardThreshold,
		trustRA:   c.TrustRetryAfter,
		lateness:  c.Lateness,
	}
	rules := c.Rules
	if len(rules) == 0 {
		rules = []Rule{DefaultRule}
	}
	for i, r := range rules {
		if err := r.validate(); err != nil {
			return settings{}, fmt.Errorf("%w: rule %d (%v): %s", ErrInvalidConfig, i+1, r, err)
		}
		s.rules = append(s.rules, rule{Rule: r})
		s.capacity = max(s.capacity, r.Limit)
		s.kinds = s.kinds || r.Kind != Sliding
		s.buckets = s.buckets || r.Kind == Bucket
	}
	slices.SortStableFunc(s.rules, func(a, b rule) int { return a.Limit - b.Limit })

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
	case s.register == 0:
		s.register = DefaultRegistration
	case s.register < 0:
		s.register = 0
	}
	s.offset = c.ClockOffset
	switch {
	case s.offset == 0:
		s.offset = DefaultClockOffset
	case s.offset < 0:
		s.offset = 0
	}
	for i := range s.rules {
		s.rules[i].derive(s.offset, s.margin)
		s.longest = max(s.longest, s.rules[i].span)
	}
	if err := s.reportedRules(c.Reported); err != nil {
		return settings{}, err
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

// validate checks one rule, and says what is wrong in a sentence.
func (r Rule) validate() error {
	switch {
	case r.Kind > Bucket:
		return fmt.Errorf("kind %d: use Sliding, Fixed or Bucket", uint8(r.Kind))
	case r.Limit < 1 || r.Limit > MaxLimit:
		if r.Kind == Bucket {
			return fmt.Errorf("capacity (limit) must be between 1 and %d units", MaxLimit)
		}
		return fmt.Errorf("limit must be between 1 and %d requests per window", MaxLimit)
	case r.Kind == Bucket:
		return r.validateBucket()
	case r.Rate != 0:
		return fmt.Errorf("rate %g: only a bucket rule has a rate; a %v window counts limit per window", r.Rate, r.Kind)
	case r.Window < time.Millisecond:
		return errors.New("window must be at least 1ms")
	case r.Window%time.Millisecond != 0:
		return errors.New("window must be a whole number of milliseconds, as the upstream compares arrival times in whole milliseconds")
	}
	return nil
}

func (r Rule) validateBucket() error {
	switch {
	case math.IsNaN(r.Rate) || math.IsInf(r.Rate, 0) || r.Rate <= 0:
		return fmt.Errorf("rate %g: a bucket needs the rate its counter falls by, above 0 units a second, such as 0.33", r.Rate)
	case float64(r.Limit)/r.Rate > MaxDrain.Seconds():
		return fmt.Errorf("rate %g: a full bucket would take %.0f s to drain, more than %v; a count that slow is a fixed window (a day's count)",
			r.Rate, float64(r.Limit)/r.Rate, MaxDrain)
	case r.Window < 0:
		return fmt.Errorf("window %v: a bucket's window is the step of its decay, 0 for a continuous one; it cannot be negative", r.Window)
	case r.Window > MaxDrain:
		return fmt.Errorf("window %v: a bucket's decay step must be at most %v", r.Window, MaxDrain)
	}
	return nil
}

// derive fills in what the limiter derives from a valid rule, with the
// configured clock offset and margin.
func (r *rule) derive(offset, margin time.Duration) {
	switch r.Kind {
	case Sliding:
		r.span = r.Window
	case Fixed:
		w := r.Window.Milliseconds()
		r.edge = min(ceilMs(offset+margin), (w+1)/2)
		r.span = r.Window + 2*time.Duration(r.edge)*time.Millisecond
	case Bucket:
		r.per = time.Duration(math.Ceil(float64(time.Second) / r.Rate))
		r.span = time.Duration(r.Limit)*r.per + r.Window
	}
}

// ceilMs returns d in whole milliseconds, rounded up.
func ceilMs(d time.Duration) int64 {
	return int64((d + time.Millisecond - 1) / time.Millisecond)
}
