package worker

import (
	"context"
	"log/slog"
	"sync"

	"github.com/ratefleet/ratefleet/internal/lease"
	"github.com/ratefleet/ratefleet/internal/settle"
)

// keeperDuty runs the graveyard keeper, which buries requests the server gave up
// on without a worker seeing it (advisories and reconciliation).
type keeperDuty struct {
	// Set once.
	keeper *settle.Keeper
	log    *slog.Logger
	loop
}

func newKeeperDuty(k *settle.Keeper, log *slog.Logger) *keeperDuty {
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

// serving reports whether the lease table shows some key held by a live worker,
// or cannot tell yet: the keeper buries expired requests as key_unusable only
// after this has been false for its Stall.
func serving(t *lease.Table) bool {
	if !t.Ready() {
		return true
	}
	v := t.View()
	for name := range v.Keys {
		if _, ok := v.Held(name); ok {
			return true
		}
	}
	return false
}
