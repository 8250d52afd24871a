package worker

import (
	"context"
	"log/slog"
	"sync"

	"github.com/ratefleet/ratefleet/internal/graveyard"
)

// keeperDuty runs the graveyard keeper, which buries requests the server gave up
// on without a worker seeing it (advisories and reconciliation).
type keeperDuty struct {
	// Set once.
	keeper *graveyard.Keeper
	log    *slog.Logger
	loop
}

func newKeeperDuty(k *graveyard.Keeper, log *slog.Logger) *keeperDuty {
	return &keeperDuty{keeper: k, log: log, loop: newLoop()}
}

func (k *keeperDuty) start(wg *sync.WaitGroup) {
	k.loop.run(wg, func(ctx context.Context) {
		if err := k.keeper.Run(ctx); err != nil && ctx.Err() == nil {
			k.log.Error("graveyard keeper stopped", "err", err)
		}
	})
}

func (k *keeperDuty) shutdown() {
	k.loop.stop()
}
