package worker

import (
	"context"
	"log/slog"
	"sync"

	"github.com/ratefleet/ratefleet/internal/graveyard"
	"github.com/ratefleet/ratefleet/internal/lease"
)

// keeperDuty runs the graveyard keeper, which buries requests the server gave up
// on without a worker seeing it (advisories and reconciliation).
type keeperDuty struct {
	// Set once.
	keeper *graveyard.Keeper
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
}

func newKeeperDuty(k *graveyard.Keeper, log *slog.Logger) *keeperDuty {
	ctx, cancel := context.WithCancel(context.Background())
	return &keeperDuty{keeper: k, log: log, ctx: ctx, cancel: cancel, done: make(chan struct{})}
}

func (k *keeperDuty) start(wg *sync.WaitGroup) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(k.done)
		if err := k.keeper.Run(k.ctx); err != nil && k.ctx.Err() == nil {
			k.log.Error("graveyard keeper stopped", "err", err)
		}
	}()
}

func (k *keeperDuty) shutdown() {
	k.cancel()
	<-k.done
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
