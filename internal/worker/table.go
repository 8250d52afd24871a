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
	table  *lease.Table
	kv     jetstream.KeyValue
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
}

func newTableWatcher(t *lease.Table, kv jetstream.KeyValue, log *slog.Logger) *tableWatcher {
	ctx, cancel := context.WithCancel(context.Background())
	return &tableWatcher{table: t, kv: kv, log: log, ctx: ctx, cancel: cancel, done: make(chan struct{})}
}

func (t *tableWatcher) start(wg *sync.WaitGroup) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(t.done)
		for t.ctx.Err() == nil {
			if err := t.table.Run(t.ctx, t.kv); err != nil && t.ctx.Err() == nil {
				t.log.Warn("lease watch ended; starting it again", "err", err)
				_ = sleep(t.ctx, time.Second, nil)
			}
		}
	}()
}

func (t *tableWatcher) shutdown() {
	t.cancel()
	<-t.done
}
