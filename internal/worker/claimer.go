package worker

import (
	"context"
	"errors"
	"hash/fnv"
	"sync"
	"time"

	"github.com/ratefleet/ratefleet/internal/keys"
	"github.com/ratefleet/ratefleet/internal/keystate"
	"github.com/ratefleet/ratefleet/internal/lease"
)

// claimer claims keys, up to MaxKeys, and runs a session for each. It tries again
// every ClaimRetry, when a session ends and when a lease is released. On shutdown
// its sessions drain, hand their keys over and release them before it returns.
type claimer struct {
	// Set once.
	w      *Worker
	wake   <-chan struct{} // a lease was released or lapsed
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
}

func newClaimer(w *Worker, wake <-chan struct{}) *claimer {
	ctx, cancel := context.WithCancel(context.Background())
	return &claimer{w: w, wake: wake, ctx: ctx, cancel: cancel, done: make(chan struct{})}
}

func (c *claimer) start(wg *sync.WaitGroup) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(c.done)
		c.run(c.ctx)
	}()
}

func (c *claimer) shutdown() {
	c.cancel()
	<-c.done
}

func (c *claimer) run(ctx context.Context) {
	w := c.w
	held := map[string]bool{}
	ended := make(chan string)
	var sessions sync.WaitGroup
	defer sessions.Wait()
	standbyLogged := false
	for {
		for _, k := range c.order() {
			if len(held) >= w.cfg.MaxKeys || ctx.Err() != nil {
				break
			}
			if held[k.Name()] {
				continue
			}
			s, err := w.claim(ctx, k)
			if err != nil {
				switch {
				case errors.Is(err, lease.ErrHeld) || errors.Is(err, errUnusable) || ctx.Err() != nil:
				case errors.Is(err, keystate.ErrInvalid):
					w.log.Error("key state cannot be trusted; not serving the key until it is fixed (inspect it with `nats kv get` on the key-state bucket, then correct or delete the entry)",
						"key", k, "err", err)
				default:
					w.log.Warn("could not claim key", "key", k, "err", err)
				}
				continue
			}
			held[k.Name()] = true
			standbyLogged = false
			sessions.Add(1)
			go func() {
				defer sessions.Done()
				s.run(ctx)
				select {
				case ended <- k.Name():
				case <-ctx.Done():
				}
			}()
		}
		if len(held) == 0 && !standbyLogged {
			w.log.Info("standing by: every usable key is held by another worker")
			standbyLogged = true
		}
		timer := time.NewTimer(w.cfg.ClaimRetry)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case name := <-ended:
			delete(held, name)
		case <-c.wake:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// order returns the keys starting at a position derived from the worker's id, so
// workers spread over keys without a coordinator.
func (c *claimer) order() []keys.Key {
	ks := c.w.cfg.Keys
	h := fnv.New32a()
	_, _ = h.Write([]byte(c.w.cfg.ID))
	n := len(ks)
	start := int(h.Sum32() % uint32(n))
	out := make([]keys.Key, 0, n)
	for i := range n {
		out = append(out, ks[(start+i)%n])
	}
	return out
}
