package worker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ratefleet/ratefleet/internal/limiter"
)

// Errors that end a wait at the gate without a send.
var (
	errLeaseLost   = errors.New("lease no longer valid")
	errQuarantined = errors.New("key quarantined by the ban guard")
)

// slot is the right to send one request, granted by the gate.
type slot struct {
	seq    uint64
	ticket limiter.Ticket
	nonce  int64
	at     time.Time
	// maxDelay is the limiter's delay bound L when the slot was granted: the lease
	// must cover the request's last byte plus L (session.fence).
	maxDelay time.Duration
}

// nonceSource hands out nonces in the order asked; only the gate's head asks.
type nonceSource interface {
	take(ctx context.Context) (int64, error)
}

// gate serialises one key's sends. Waiters queue in arrival order; the head waits
// until the limiter allows a send, takes the next nonce (outside the lock: that may
// wait on NATS), then checks the lease and the limiter again and goes. The next
// waiter may go only once that request has left (wrote), so nonces leave in order
// and the limiter knows when each request really left.
type gate struct {
	// Set once.
	pacer  Pacer
	valid  func(time.Time) bool // the lease's fencing check
	now    func() time.Time
	nonces nonceSource

	// Guarded by mu; pacer too is only used under mu.
	mu       sync.Mutex
	queue    []chan struct{} // waiters; the head's channel is closed
	expected int             // requests pulled for this key that have not reached acquire yet
	granted  uint64          // slots granted so far
	leaving  uint64          // the granted slot that has not left yet, 0 if none
	held     int             // writes that must finish before the key sends again (a 429's count)
	wake     chan struct{}   // closed and replaced whenever the state changes
}

func newGate(p Pacer, valid func(time.Time) bool, now func() time.Time, n nonceSource) *gate {
	return &gate{pacer: p, valid: valid, now: now, nonces: n, wake: make(chan struct{})}
}

// acquire waits for the right to send. It fails when ctx ends (the request's time
// to live, or the session), when the lease is no longer valid, when no nonce can be
// had, or when the key is quarantined.
func (g *gate) acquire(ctx context.Context) (slot, error) {
	return g.acquireN(ctx, limiter.Cost{DimWeight: 1})
}

// acquireN is acquire for a send of cost c: the limiter must allow it.
func (g *gate) acquireN(ctx context.Context, c limiter.Cost) (slot, error) {
	turn := make(chan struct{})
	g.mu.Lock()
	g.expected = max(g.expected-1, 0)
	g.queue = append(g.queue, turn)
	if len(g.queue) == 1 {
		close(turn)
	}
	g.mu.Unlock()
	defer g.leave(turn)

	select {
	case <-turn:
	case <-ctx.Done():
		return slot{}, ctx.Err()
	}
	var (
		nonce    int64
		haveOne  bool      // a nonce taken and not yet sent: this head sends it next
		promised time.Time // the instant the limiter last made this head wait for
	)
	for {
		g.mu.Lock()
		now := g.now()
		if !g.valid(now) {
			g.mu.Unlock()
			return slot{}, errLeaseLost
		}
		wait := time.Duration(-1) // wait for a wake-up only
		if g.leaving == 0 && g.held == 0 {
			next := g.pacer.NextC(now, c)
			if !next.After(now) {
				if haveOne {
					if !promised.IsZero() && now.After(promised) {
						// It waited for promised and leaves only now: the
						// process is that late (a late timer, a busy box).
						g.pacer.Late(now, now.Sub(promised))
					}
					s, err := g.grantLocked(now, nonce, c)
					g.mu.Unlock()
					return s, err
				}
				wait = 0
			} else {
				wait = next.Sub(now)
				promised = next
			}
		}
		wake := g.wake
		g.mu.Unlock()

		if wait == 0 {
			// The limiter allows a send: take the nonce, which may wait on NATS,
			// then check everything again, the lease first.
			n, err := g.nonces.take(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return slot{}, ctx.Err()
				}
				return slot{}, fmt.Errorf("next nonce: %w", err)
			}
			nonce, haveOne = n, true
			continue
		}
		if err := sleep(ctx, wait, wake); err != nil {
			return slot{}, err
		}
	}
}

func (g *gate) grantLocked(now time.Time, nonce int64, c limiter.Cost) (slot, error) {
	tk, err := g.pacer.SentC(now, c)
	if errors.Is(err, limiter.ErrQuarantined) {
		return slot{}, errQuarantined
	}
	if err != nil {
		return slot{}, fmt.Errorf("limiter refused a send it allowed: %w", err)
	}
	g.granted++
	g.leaving = g.granted
	return slot{seq: g.granted, ticket: tk, nonce: nonce, at: now, maxDelay: g.pacer.MaxDelay()}, nil
}

// check returns why a send of cost c could never go with this key, or nil.
func (g *gate) check(c limiter.Cost) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.pacer.Check(c)
}

// sleep waits for d (forever when d < 0), a wake-up, or the end of ctx.
func sleep(ctx context.Context, d time.Duration, wake <-chan struct{}) error {
	var timer <-chan time.Time
	if d >= 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		timer = t.C
	}
	select {
	case <-timer:
		return nil
	case <-wake:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// expect notes a request pulled for this key; it counts as waiting until it calls
// acquire or unexpect.
func (g *gate) expect() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.expected++
}

// unexpect drops a pulled request that will not call acquire (buried, say).
func (g *gate) unexpect() {
	g.update(func(Pacer) { g.expected = max(g.expected-1, 0) })
}

// waitReady waits until no request is waiting for this key and the key may send
// within lead: then it is time to take the next request from the queue.
func (g *gate) waitReady(ctx context.Context, lead time.Duration) error {
	for {
		g.mu.Lock()
		now := g.now()
		wait := time.Duration(-1)
		if g.expected == 0 && len(g.queue) == 0 && g.held == 0 {
			wait = max(g.pacer.NextC(now, nil).Sub(now)-lead, 0)
		}
		wake := g.wake
		g.mu.Unlock()
		if wait == 0 {
			return nil
		}
		if err := sleep(ctx, wait, wake); err != nil {
			return err
		}
	}
}

// leave removes turn from the queue and hands the turn to the next waiter.
func (g *gate) leave(turn chan struct{}) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for i, c := range g.queue {
		if c == turn {
			g.queue = append(g.queue[:i], g.queue[i+1:]...)
			if i == 0 && len(g.queue) > 0 {
				close(g.queue[0])
			}
			break
		}
	}
	g.wakeLocked()
}

func (g *gate) wakeLocked() {
	close(g.wake)
	g.wake = make(chan struct{})
}

// update changes the limiter's state under the gate's lock and wakes the head.
func (g *gate) update(f func(Pacer)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	f(g.pacer)
	g.wakeLocked()
}

// wrote records that the granted request finished leaving at t.
func (g *gate) wrote(s slot, t time.Time) {
	g.update(func(p Pacer) {
		if g.leaving == s.seq {
			p.Wrote(s.ticket, t)
			g.leaving = 0
		}
	})
}

// done records the outcome of the granted request; the request is no longer
// leaving, whether or not it ever left. With hold, no send leaves until the
// returned release is called, so what done learned can be written first.
func (g *gate) done(s slot, hold bool, f func(Pacer)) (release func()) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.leaving == s.seq {
		g.leaving = 0
	}
	f(g.pacer)
	g.wakeLocked()
	if !hold {
		return func() {}
	}
	g.held++
	var once sync.Once
	return func() {
		once.Do(func() {
			g.mu.Lock()
			defer g.mu.Unlock()
			g.held--
			g.wakeLocked()
		})
	}
}

// state reads the limiter under the gate's lock.
func (g *gate) state(f func(Pacer)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	f(g.pacer)
}
