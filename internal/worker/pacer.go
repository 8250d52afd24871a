package worker

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/ratefleet/ratefleet/internal/keys"
	"github.com/ratefleet/ratefleet/internal/limiter"
)

// Adaptive names the production limiter.
const Adaptive = "adaptive"

// PacerNames lists the limiters a worker can use.
func PacerNames() string { return Adaptive }

// NewPacerFactory returns the factory of the named limiter, configured by cfg.
func NewPacerFactory(name string, cfg limiter.Config) (PacerFactory, error) {
	if name != Adaptive {
		return nil, fmt.Errorf("--limiter %q: unknown (choose one of %s)", name, PacerNames())
	}
	return func(k keys.Key, handoff json.RawMessage, waitFrom time.Time) (Pacer, error) {
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
