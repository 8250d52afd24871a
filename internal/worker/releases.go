package worker

import (
	"context"
	"log/slog"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
)

// releaseWatcher signals when a lease entry is deleted or expires, so a standby
// claims at once instead of at its next retry.
type releaseWatcher struct {
	// Set once.
	leases jetstream.KeyValue
	log    *slog.Logger
	wake   chan struct{} // holds one signal at most
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
}

func newReleaseWatcher(leases jetstream.KeyValue, log *slog.Logger) *releaseWatcher {
	ctx, cancel := context.WithCancel(context.Background())
	return &releaseWatcher{leases: leases, log: log, wake: make(chan struct{}, 1), ctx: ctx, cancel: cancel, done: make(chan struct{})}
}

func (r *releaseWatcher) start(wg *sync.WaitGroup) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(r.done)
		r.run(r.ctx)
	}()
}

func (r *releaseWatcher) shutdown() {
	r.cancel()
	<-r.done
}

func (r *releaseWatcher) run(ctx context.Context) {
	watcher, err := r.leases.WatchAll(ctx, jetstream.UpdatesOnly())
	if err != nil {
		if ctx.Err() == nil {
			r.log.Warn("cannot watch leases; standby will poll", "err", err)
		}
		return
	}
	defer func() { _ = watcher.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-watcher.Updates():
			if !ok {
				return
			}
			if e != nil && e.Operation() != jetstream.KeyValuePut {
				select {
				case r.wake <- struct{}{}:
				default:
				}
			}
		}
	}
}
