package worker

import (
	"context"
	"errors"
	"hash/fnv"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ratefleet/ratefleet/internal/keys"
	"github.com/ratefleet/ratefleet/internal/keystate"
	"github.com/ratefleet/ratefleet/internal/lease"
)

// unusableRecheck is how long a key found unusable is left alone before its state
// is read again (an operator may have cleared it).
const unusableRecheck = 30 * time.Second

// claimer holds the worker's lease, claims keys under it and runs a session for
// each.
//
// Costs grow with workers, not keys: the worker lease is renewed with one write
// per renewal (heartbeat.go) and fences every key held under it; the claimer learns
// of releases, lapses and new workers from one watch of the lease bucket (the
// table), and tries a key only when the table shows it free.
//
// Spread: each worker aims at an equal share of the usable keys, min(MaxKeys,
// ceil(keys / live workers)), claiming first the keys that fall to it when the
// keys, by name, are dealt in turn to the live workers, by id; then any free key.
// A worker holding more than its share while another holds less than its share
// hands one key over per round (as on shutdown), so a worker that joins late gets
// its share too.
type claimer struct {
	// Set once.
	w     *Worker
	table *lease.Table
	loop

	// Shared with the heartbeat.
	mu sync.Mutex
	wl *lease.Lease // the worker lease; nil until claimed
}

func newClaimer(w *Worker, table *lease.Table) *claimer {
	return &claimer{w: w, table: table, loop: newLoop()}
}

func (c *claimer) start(wg *sync.WaitGroup) {
	c.loop.run(wg, c.run)
}

func (c *claimer) shutdown() {
	c.loop.stop()
}

func (c *claimer) workerLease() *lease.Lease {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.wl
}

// round is the claimer's state between rounds.
type round struct {
	held     map[string]*session
	unusable map[string]time.Time // key name → when it was found unusable
	handing  string               // the key being handed over, until its session ends
	standby  bool                 // "standing by" was logged
}

func (c *claimer) run(ctx context.Context) {
	w := c.w
	r := &round{held: map[string]*session{}, unusable: map[string]time.Time{}}
	ended := make(chan string)
	var sessions, bg sync.WaitGroup
	hbCtx, stopHeartbeat := context.WithCancel(context.WithoutCancel(ctx))
	lost := make(chan struct{}, 1)
	bg.Add(1)
	go func() { defer bg.Done(); c.heartbeat(hbCtx, lost) }()
	defer func() {
		sessions.Wait() // every key handed over and released
		stopHeartbeat()
		bg.Wait()
		if wl := c.workerLease(); wl != nil {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			_ = wl.Release(rctx)
			cancel()
		}
	}()

	ticker := time.NewTicker(w.cfg.ClaimRetry)
	defer ticker.Stop()
	for {
		c.step(ctx, r, &sessions, ended)
		select {
		case <-ctx.Done():
			return
		case name := <-ended:
			delete(r.held, name)
			if r.handing == name {
				r.handing = ""
			}
		case <-c.table.Changed():
		case <-lost:
		case <-ticker.C:
		}
	}
}

// step is one round: keep the worker lease, drop keys seen taken, claim up to the
// share, hand one key over if this worker holds more than its share.
func (c *claimer) step(ctx context.Context, r *round, sessions *sync.WaitGroup, ended chan<- string) {
	w := c.w
	now := w.cfg.Now()
	wl := c.workerLease()
	if wl == nil || !wl.Valid(now) {
		for _, s := range r.held {
			s.end(errLeaseLost)
		}
		if len(r.held) > 0 || ctx.Err() != nil {
			return // a new worker lease only once every old session has ended
		}
		var err error
		if wl, err = c.claimWorkerLease(ctx); err != nil {
			if !errors.Is(err, lease.ErrHeld) && ctx.Err() == nil {
				w.log.Warn("could not claim the worker lease; retrying", "err", err)
			}
			return
		}
	}
	for _, s := range r.held {
		if c.table.TakenFrom(s.key.Name(), s.lease.Revision(), wl.Session()) {
			s.lease.Lose()
			s.end(errLeaseLost)
		}
	}
	if !c.table.Ready() {
		return
	}
	view := c.table.View()
	for name, at := range r.unusable {
		if now.Sub(at) > unusableRecheck {
			delete(r.unusable, name)
		}
	}
	share := c.share(view, len(r.unusable))
	var order []keys.Key
	if len(r.held) < share {
		order = c.order(view)
	}
	for _, k := range order {
		if len(r.held) >= share || ctx.Err() != nil {
			break
		}
		if _, ok := r.held[k.Name()]; ok {
			continue
		}
		if _, ok := r.unusable[k.Name()]; ok {
			continue
		}
		if _, taken := view.Held(k.Name()); taken {
			continue
		}
		s, err := w.claim(ctx, wl, k)
		if err != nil {
			switch {
			case errors.Is(err, lease.ErrHeld) || ctx.Err() != nil:
			case errors.Is(err, errUnusable):
				r.unusable[k.Name()] = now
			case errors.Is(err, keystate.ErrInvalid):
				r.unusable[k.Name()] = now
				w.log.Error("key state cannot be trusted; not serving the key until it is fixed (inspect it with `nats kv get` on the key-state bucket, then correct or delete the entry)",
					"key", k, "err", err)
			default:
				w.log.Warn("could not claim key", "key", k, "err", err)
			}
			continue
		}
		r.held[k.Name()] = s
		r.standby = false
		s.begin(ctx)
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
	c.rebalance(view, r, share)
	if len(r.held) == 0 && !r.standby {
		w.log.Info("standing by: every usable key is held by another worker")
		r.standby = true
	}
}

// claimWorkerLease claims a fresh worker lease, with a new session.
func (c *claimer) claimWorkerLease(ctx context.Context) (*lease.Lease, error) {
	w := c.w
	wl, err := lease.New(ctx, w.js, lease.Config{
		Bucket: w.cfg.Streams.KV.Leases.Bucket, Key: lease.WorkerEntry(w.cfg.ID), Holder: w.cfg.ID,
		TTL: w.cfg.Streams.KV.Leases.LeaseTTL, Now: w.cfg.Now,
	})
	if err != nil {
		return nil, err
	}
	if err := wl.Claim(ctx); err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.wl = wl
	c.mu.Unlock()
	return wl, nil
}

// heartbeat renews the worker lease every third of its TTL, and signals lost when
// it can no longer be proved valid.
func (c *claimer) heartbeat(ctx context.Context, lost chan<- struct{}) {
	every := c.w.cfg.Streams.KV.Leases.LeaseTTL / 3
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		wl := c.workerLease()
		if wl == nil || wl.State() != lease.Held {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, every)
		err := wl.Renew(rctx)
		cancel()
		switch {
		case errors.Is(err, lease.ErrLost) || errors.Is(err, lease.ErrNotHeld) || !wl.Valid(c.w.cfg.Now()):
			c.w.log.Warn("worker lease lost: every key held under it stops sending", "err", err)
			select {
			case lost <- struct{}{}:
			default:
			}
		case err != nil && ctx.Err() == nil:
			c.w.log.Warn("worker lease renewal failed; retrying", "err", err, "valid_until", wl.ValidUntil())
		}
	}
}

// share is how many keys this worker aims to hold.
func (c *claimer) share(view lease.View, unusable int) int {
	live := max(len(view.Workers), 1)
	usable := max(len(c.w.cfg.Keys)-unusable, 0)
	return min(c.w.cfg.MaxKeys, (usable+live-1)/live)
}

// order returns the keys this worker tries: first those dealt to it (the keys by
// name dealt in turn to the live workers by id), then the others, starting at a
// position derived from the worker's id.
func (c *claimer) order(view lease.View) []keys.Key {
	ks := slices.Clone(c.w.cfg.Keys)
	slices.SortFunc(ks, func(a, b keys.Key) int { return strings.Compare(a.Name(), b.Name()) })
	ids := make([]string, 0, len(view.Workers)+1)
	for id := range view.Workers {
		ids = append(ids, id)
	}
	if _, ok := view.Workers[c.w.cfg.ID]; !ok {
		ids = append(ids, c.w.cfg.ID)
	}
	slices.Sort(ids)
	me := slices.Index(ids, c.w.cfg.ID)
	var mine, rest []keys.Key
	for i, k := range ks {
		if i%len(ids) == me {
			mine = append(mine, k)
		} else {
			rest = append(rest, k)
		}
	}
	if n := len(rest); n > 0 {
		h := fnv.New32a()
		_, _ = h.Write([]byte(c.w.cfg.ID))
		start := int(h.Sum32() % uint32(n))
		rest = append(rest[start:], rest[:start]...)
	}
	return append(mine, rest...)
}

// rebalance hands one key over when this worker holds more than its share while
// another live worker holds less than its own.
func (c *claimer) rebalance(view lease.View, r *round, share int) {
	if len(r.held) <= share || r.handing != "" {
		return
	}
	counts := map[string]int{}
	for name := range view.Keys {
		if rec, ok := view.Held(name); ok {
			counts[rec.Holder]++
		}
	}
	short := false
	for id := range view.Workers {
		if id != c.w.cfg.ID && counts[id] < share-1 {
			short = true
		}
	}
	if !short {
		return
	}
	for _, k := range slices.Backward(c.order(view)) {
		if s, ok := r.held[k.Name()]; ok {
			c.w.log.Info("handing a key to a worker with fewer", "key", k, "held", len(r.held), "share", share)
			r.handing = k.Name()
			s.end(errRebalance)
			return
		}
	}
}
