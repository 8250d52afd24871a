package worker

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ratefleet/ratefleet/internal/keys"
	"github.com/ratefleet/ratefleet/internal/limiter"
	"github.com/ratefleet/ratefleet/internal/limiter/baseline"
)

// Adaptive names the production limiter.
const Adaptive = "adaptive"

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
		return func(_ keys.Key, handoff json.RawMessage, waitFrom time.Time) (Pacer, error) {
			switch {
			case handoff != nil:
				var st limiter.State
				if err := json.Unmarshal(handoff, &st); err != nil {
					return nil, fmt.Errorf("read handed-off limiter state: %w", err)
				}
				return limiter.Restore(cfg, st)
			case !waitFrom.IsZero():
				return limiter.NewFull(cfg, waitFrom)
			}
			return limiter.New(cfg)
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
	return func(keys.Key, json.RawMessage, time.Time) (Pacer, error) {
		return baseline.NewWith(name, opts)
	}, nil
}
