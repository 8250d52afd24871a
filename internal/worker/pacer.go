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
// limiter.Limiter in production, a baseline in benchmarks. The gate calls it
// under its lock; see limiter.Limiter for what each method means.
type Pacer interface {
	NextN(now time.Time, w int) time.Time
	SentN(now time.Time, w int) (limiter.Ticket, error)
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
	// Count429 and MaxDelay are the key's lifetime 429 count and the largest delay
	// bound it has learned, whoever held it.
	Count429 int
	MaxDelay time.Duration
}

// PacerFactory makes the pacer of a newly claimed key.
type PacerFactory func(key keys.Key, start KeyStart) (Pacer, error)

// PacerNames lists the limiters a worker can use: the adaptive one, then the
// baselines it is measured against.
func PacerNames() string {
	return strings.Join(append([]string{Adaptive}, baseline.Names()...), ", ")
}

// NewPacerFactory returns the factory of the named limiter, configured by cfg.
func NewPacerFactory(name string, cfg limiter.Config) (PacerFactory, error) {
	if name == Adaptive {
		if _, err := limiter.New(cfg); err != nil {
			return nil, err
		}
		if cfg.Lateness == nil {
			// One process's keys share how late it has been.
			cfg.Lateness = new(limiter.Lateness)
		}
		return func(_ keys.Key, start KeyStart) (Pacer, error) {
			return newAdaptive(cfg, start)
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
		return baseline.NewWith(name, opts)
	}, nil
}

// newAdaptive starts the limiter from everything the fleet knows of the key: the
// handoff (or, after a crash, a full window from the claim), and never less than
// the lifetime 429 count and the learned delay bound.
func newAdaptive(cfg limiter.Config, start KeyStart) (*limiter.Limiter, error) {
	var st limiter.State
	switch {
	case start.Handoff != nil:
		st = *start.Handoff
	case !start.Crashed.IsZero():
		// Every rule's window may have been filled by sends that left as late as
		// the claim: one bound stands for them all (Restore repeats the oldest).
		l := max(start.MaxDelay, cfg.MaxDelay, limiter.DefaultMaxDelay)
		st = limiter.State{Version: limiter.StateVersion, UpperBounds: []time.Time{start.Crashed.Add(l)}, Sends: limiter.MaxLimit}
	case start.Count429 == 0 && start.MaxDelay == 0:
		return limiter.New(cfg)
	default:
		st = limiter.State{Version: limiter.StateVersion}
	}
	st.Rejections = max(st.Rejections, start.Count429)
	st.MaxDelay = max(st.MaxDelay, start.MaxDelay)
	return limiter.Restore(cfg, st)
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
	for _, t := range append([]time.Time{st.NextFree, st.PauseUntil}, st.UpperBounds...) {
		if !t.IsZero() && (t.Sub(writtenAt) > far || writtenAt.Sub(t) > far) {
			return nil, fmt.Errorf("%w: instant %s is more than %v from the handoff at %s",
				limiter.ErrInvalidState, t.Format(time.RFC3339Nano), far, writtenAt.Format(time.RFC3339Nano))
		}
	}
	shifted := st.Shifted(readAt.Sub(writtenAt))
	return &shifted, nil
}
