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
}

// gate serialises one key's sends. Waiters queue in arrival order; the head waits
// until the limiter allows a send, takes the next nonce and goes. The next waiter
// may go only once that request has left (Wrote), so nonces leave in order and the
// limiter knows when each request really left.
type gate struct {
	pacer  Pacer
	valid  func(time.Time) bool // the lease's fencing check
	now    func() time.Time
	nonces func(ctx context.Context) (int64, error)

	mu       sync.Mutex
	queue    []chan struct{} // waiters; the head's channel is closed
	expected int             // requests pulled for this key that have not reached acquire yet
	granted  uint64          // slots granted so far
	leaving  uint64          // the granted slot that has not left yet, 0 if none
	wake     chan struct{}   // closed and replaced whenever the limiter's state changes
}

func newGate(p Pacer, valid func(time.Time) bool, now func() time.Time, nonces func(context.Context) (int64, error)) *gate {
	return &gate{pacer: p, valid: valid, now: now, nonces: nonces, wake: make(chan struct{})}
}

// acquire waits for the right to send. It fails when ctx ends (the request's time
// to live, or the session), when the lease is no longer valid, or when the key is
// quarantined.
func (g *gate) acquire(ctx context.Context) (slot, error) {
	turn := make(chan struct{})
	g.mu.Lock()
	g.expected = max(g.expected-1, 0)
	g.queue = append(g.queue, turn)
	if len(g.queue) == 1 {
		close(turn)
	}
	g.mu.Unlock()

	select {
	case <-turn:
	case <-ctx.Done():
		g.leave(turn)
		return slot{}, ctx.Err()
	}
	for {
		g.mu.Lock()
		now := g.now()
		if !g.valid(now) {
			g.mu.Unlock()
			g.leave(turn)
			return slot{}, errLeaseLost
		}
		wait := time.Duration(-1) // wait for a wake-up only
		if g.leaving == 0 {
			next := g.pacer.Next(now)
			if !next.After(now) {
				s, err := g.grantLocked(ctx, now)
				g.mu.Unlock()
				g.leave(turn)
				return s, err
			}
			wait = next.Sub(now)
		}
		wake := g.wake
		g.mu.Unlock()

		if err := sleep(ctx, wait, wake); err != nil {
			g.leave(turn)
			return slot{}, err
		}
	}
}

func (g *gate) grantLocked(ctx context.Context, now time.Time) (slot, error) {
	nonce, err := g.nonces(ctx)
	if err != nil {
		return slot{}, fmt.Errorf("next nonce: %w", err)
	}
	tk, err := g.pacer.Sent(now)
	if errors.Is(err, limiter.ErrQuarantined) {
		return slot{}, errQuarantined
	}
	if err != nil {
		return slot{}, fmt.Errorf("limiter refused a send it allowed: %w", err)
	}
	g.granted++
	g.leaving = g.granted
	return slot{seq: g.granted, ticket: tk, nonce: nonce, at: now}, nil
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
		if g.expected == 0 && len(g.queue) == 0 {
			wait = max(g.pacer.Next(now).Sub(now)-lead, 0)
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
	close(g.wake)
	g.wake = make(chan struct{})
}

// update changes the limiter's state under the gate's lock and wakes the head.
func (g *gate) update(f func(Pacer)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	f(g.pacer)
	close(g.wake)
	g.wake = make(chan struct{})
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
// leaving, whether or not it ever left.
func (g *gate) done(s slot, f func(Pacer)) {
	g.update(func(p Pacer) {
		if g.leaving == s.seq {
			g.leaving = 0
		}
		f(p)
	})
}

// state reads the limiter under the gate's lock.
func (g *gate) state(f func(Pacer)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	f(g.pacer)
}
