package worker

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ratefleet/ratefleet/internal/lease"
)

// tableWatcher keeps the lease table up to date from one watch of the bucket,
// starting the watch again if it ends (a NATS restart, say).
type tableWatcher struct {
	// Set once.
	table *lease.Table
	kv    jetstream.KeyValue
	log   *slog.Logger
	loop
}

func newTableWatcher(t *lease.Table, kv jetstream.KeyValue, log *slog.Logger) *tableWatcher {
	return &tableWatcher{table: t, kv: kv, log: log, loop: newLoop()}
}

func (t *tableWatcher) start(wg *sync.WaitGroup) {
	t.loop.run(wg, func(ctx context.Context) {
		for ctx.Err() == nil {
			if err := t.table.Run(ctx, t.kv); err != nil && ctx.Err() == nil {
				t.log.Warn("lease watch ended; starting it again", "err", err)
				_ = sleep(ctx, time.Second, nil)
			}
		}
	})
}

func (t *tableWatcher) shutdown() {
	t.loop.stop()
}
