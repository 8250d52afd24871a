package worker

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ratefleet/ratefleet/internal/bench/baseline"
	"github.com/ratefleet/ratefleet/internal/keys"
	"github.com/ratefleet/ratefleet/internal/limiter"
)

// Adaptive names the production limiter.
const Adaptive = "adaptive"

// Pacer decides when a key's next request may leave and learns from what happened:
// limiter.Set in production, a baseline in benchmarks. The gate calls it under
// its lock; see limiter.Set and limiter.Limiter for what each method means.
type Pacer interface {
	NextC(now time.Time, c limiter.Cost) time.Time
	SentC(now time.Time, c limiter.Cost) (limiter.Ticket, error)
	Used(t limiter.Ticket, c limiter.Cost)
	Check(c limiter.Cost) error
	Late(at time.Time, d time.Duration)
	Wrote(t limiter.Ticket, at time.Time)
	Answered(t limiter.Ticket, at time.Time)
	Inverted(t limiter.Ticket, at time.Time)
	Rejected(t limiter.Ticket, at time.Time, retryAfter time.Duration)
	Lost(t limiter.Ticket, at time.Time)
	LostUntil(t limiter.Ticket, at, until time.Time)
	Unsent(t limiter.Ticket, at time.Time)
	Quarantined() bool
	MaxDelay() time.Duration
	Evidence() limiter.Evidence
	LastRejection() (limiter.Rejection, bool)
	Handoff() (json.RawMessage, error)
}

// KeyStart is what a new holder of a key knows from key state when it claims it.
type KeyStart struct {
	// Handoff is the previous holder's limiter state from a clean release, with its
	// instants already moved onto the new holder's clock (limiter.State.Shifted);
	// nil when there is none.
	Handoff *limiter.State
	// Crashed is the instant of the claim when the previous holder ended without a
	// handoff: its last sends may have left until then. Zero otherwise.
	Crashed time.Time
	// Checkpoint is the crashed holder's last checkpoint, its instants moved
	// onto this clock, and CheckpointSpan how long after it that holder may
	// have sent more; nil without a crash or a checkpoint.
	Checkpoint     *limiter.State
	CheckpointSpan time.Duration
	// Count429 and MaxDelay are the key's lifetime 429 count and the largest delay
	// bound it has learned, whoever held it.
	Count429 int
	MaxDelay time.Duration
}

// PacerFactory makes the pacer of a newly claimed key.
type PacerFactory func(key keys.Key, start KeyStart) (Pacer, error)

// Limits returns what the upstream counts for key k and the rules counting
// each, the key's share of any rule counted across keys included
// (profile.Profile.Limits).
type Limits func(k keys.Key) ([]limiter.Dimension, error)

// PacerNames lists the limiters a worker can use: the adaptive one, then the
// baselines it is measured against.
func PacerNames() string {
	return strings.Join(append([]string{Adaptive}, baseline.Names()...), ", ")
}

// NewPacerFactory returns the factory of the named limiter, configured by cfg,
// for an upstream that counts one thing (a request's weight) by cfg.Rules.
func NewPacerFactory(name string, cfg limiter.Config) (PacerFactory, error) {
	return NewLimitsFactory(name, cfg, nil)
}

// NewLimitsFactory is NewPacerFactory for an upstream that counts what limits
// says for each key; nil limits is cfg.Rules counting weight. Baselines count
// sends by cfg.Rules[0] whatever limits says.
func NewLimitsFactory(name string, cfg limiter.Config, limits Limits) (PacerFactory, error) {
	if name == Adaptive {
		if _, err := limiter.New(cfg); err != nil {
			return nil, err
		}
		if cfg.Lateness == nil {
			// One process's keys share how late it has been.
			cfg.Lateness = new(limiter.Lateness)
		}
		if limits == nil {
			rules := cfg.Rules
			if len(rules) == 0 {
				rules = []limiter.Rule{limiter.DefaultRule}
			}
			limits = func(keys.Key) ([]limiter.Dimension, error) {
				return []limiter.Dimension{{Name: DimWeight, Rules: rules}}, nil
			}
		}
		return func(k keys.Key, start KeyStart) (Pacer, error) {
			dims, err := limits(k)
			if err != nil {
				return nil, err
			}
			return newAdaptive(limiter.SetConfig{Config: cfg, Dims: dims}, start)
		}, nil
	}
	opts := baseline.Options{GuardThreshold: cfg.GuardThreshold}
	if len(cfg.Rules) > 0 {
		opts.Rule = cfg.Rules[0]
	}
	if _, err := baseline.NewWith(name, opts); err != nil {
		if errors.Is(err, baseline.ErrUnknown) {
			return nil, fmt.Errorf("--limiter %q: unknown; choose one of %s", name, PacerNames())
		}
		return nil, err
	}
	// Baselines keep no state worth handing over: each holder starts afresh, as the
	// designs they reproduce did.
	return func(keys.Key, KeyStart) (Pacer, error) {
		p, err := baseline.NewWith(name, opts)
		return weighed{p}, err
	}, nil
}

// DimWeight names the dimension of a request's weight, which an upstream that
// counts one thing counts.
const DimWeight = "weight"

// weighed is a baseline as a Pacer: it is charged a request's weight, and
// knows no other cost.
type weighed struct{ baseline.Pacer }

func (p weighed) NextC(now time.Time, c limiter.Cost) time.Time {
	return p.NextN(now, int(max(c[DimWeight], 1)))
}

func (p weighed) SentC(now time.Time, c limiter.Cost) (limiter.Ticket, error) {
	return p.SentN(now, int(max(c[DimWeight], 1)))
}

func (weighed) Used(limiter.Ticket, limiter.Cost) {}

func (weighed) Check(limiter.Cost) error { return nil }

// newAdaptive starts the limiter from everything the fleet knows of the key: the
// handoff (or, after a crash, a full window from the claim), and never less than
// the lifetime 429 count and the learned delay bound.
func newAdaptive(cfg limiter.SetConfig, start KeyStart) (*limiter.Set, error) {
	var st limiter.State
	switch {
	case start.Handoff != nil:
		st = *start.Handoff
	case !start.Crashed.IsZero() && start.Checkpoint != nil:
		// What the crashed holder sent up to its checkpoint is known; what it
		// may have sent after is bounded by its rules (limiter.Recover).
		l := max(start.MaxDelay, cfg.MaxDelay, limiter.DefaultMaxDelay)
		st = limiter.Recover(cfg, *start.Checkpoint, start.CheckpointSpan, start.Crashed.Add(l))
	case !start.Crashed.IsZero():
		// Every rule's window may have been filled by sends that left as late as
		// the claim: one bound stands for them all (Restore repeats the oldest).
		l := max(start.MaxDelay, cfg.MaxDelay, limiter.DefaultMaxDelay)
		st = limiter.State{Version: limiter.StateVersion, UpperBounds: []time.Time{start.Crashed.Add(l)}, Sends: limiter.MaxLimit}
	case start.Count429 == 0 && start.MaxDelay == 0:
		return limiter.NewSet(cfg)
	default:
		st = limiter.State{Version: limiter.StateVersion}
	}
	st.Rejections = max(st.Rejections, start.Count429)
	st.MaxDelay = max(st.MaxDelay, start.MaxDelay)
	return limiter.RestoreSet(cfg, st)
}

// decodeHandoff reads a handed-off limiter state written at writtenAt on the
// previous holder's clock and read at readAt on this one's, and moves its instants
// by the difference: ages are kept, and as the state was written before it was
// read, every instant can only move later, whatever the two clocks say.
func decodeHandoff(raw json.RawMessage, writtenAt, readAt time.Time) (*limiter.State, error) {
	var st limiter.State
	if err := json.Unmarshal(raw, &st); err != nil {
		return nil, fmt.Errorf("read handed-off limiter state: %w", err)
	}
	if st.Version != limiter.StateVersion {
		return nil, fmt.Errorf("%w: version %d, this worker reads version %d", limiter.ErrInvalidState, st.Version, limiter.StateVersion)
	}
	if st.Sends > 0 && len(st.UpperBounds) == 0 {
		return nil, fmt.Errorf("%w: %d sends but no upper bounds", limiter.ErrInvalidState, st.Sends)
	}
	// A state whose instants lie far from when it was written was not written by a
	// limiter (which hands off within a window or a pause of the present).
	const far = time.Hour
	instants := append([]time.Time{st.NextFree, st.PauseUntil}, st.UpperBounds...)
	for _, d := range st.Dims {
		instants = append(append(instants, d.NextFree, d.PauseUntil), d.UpperBounds...)
	}
	for _, t := range instants {
		if !t.IsZero() && (t.Sub(writtenAt) > far || writtenAt.Sub(t) > far) {
			return nil, fmt.Errorf("%w: instant %s is more than %v from the handoff at %s",
				limiter.ErrInvalidState, t.Format(time.RFC3339Nano), far, writtenAt.Format(time.RFC3339Nano))
		}
	}
	shifted := st.Shifted(readAt.Sub(writtenAt))
	return &shifted, nil
}
