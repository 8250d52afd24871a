package worker

import (
	"context"
	"sync"
	"time"
)

// nonceTimeout bounds one reservation of a block in key state.
const nonceTimeout = 5 * time.Second

// nonces hands out one key's nonces in the order they are asked for, from blocks
// reserved in key state. The next block is reserved in the background once half
// of the current one is used, so a send rarely waits on NATS for its nonce, and
// never while holding the gate's lock: the gate's head takes its nonce first, then
// checks the lease and the limiter again (gate.go).
//
// Only the gate's head calls take, so nonces leave in send order. A nonce taken
// and then not sent is a gap, never a reuse: nonces only grow.
type nonces struct {
	// Set once.
	reserve func(ctx context.Context) (first int64, err error) // reserves a block of size block
	block   int64
	ctx     context.Context // the session's: reservations end with it
	wg      sync.WaitGroup  // reservations in the background

	mu        sync.Mutex
	next, end int64        // the current block is [next, end)
	ahead     *reservation // the next block: being reserved, or ready
}

// reservation is one block being reserved; done is closed when first or err is set.
type reservation struct {
	done  chan struct{}
	first int64
	err   error
}

func newNonces(ctx context.Context, block int64, reserve func(context.Context) (int64, error)) *nonces {
	return &nonces{reserve: reserve, block: block, ctx: ctx}
}

// take returns the next nonce, waiting for a block when the current one is used
// up, until ctx ends.
func (n *nonces) take(ctx context.Context) (int64, error) {
	for {
		n.mu.Lock()
		if n.next < n.end {
			v := n.next
			n.next++
			if n.ahead == nil && n.end-n.next <= n.block/2 {
				n.ahead = n.startLocked()
			}
			n.mu.Unlock()
			return v, nil
		}
		if n.ahead == nil {
			n.ahead = n.startLocked()
		}
		r := n.ahead
		n.mu.Unlock()

		select {
		case <-r.done:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		n.mu.Lock()
		if n.ahead == r {
			n.ahead = nil
			if r.err != nil {
				n.mu.Unlock()
				return 0, r.err // the next take tries again
			}
			n.next, n.end = r.first, r.first+n.block
		}
		n.mu.Unlock()
	}
}

// skip drops the current block and any reserved ahead of a 400 (the upstream saw a
// nonce at least as high): the next take reserves a fresh block above the mark
// and the clock.
func (n *nonces) skip() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.next, n.end = 0, 0
	n.ahead = nil // a reservation still running is left to finish unused
}

// startLocked reserves a block in the background.
func (n *nonces) startLocked() *reservation {
	r := &reservation{done: make(chan struct{})}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		defer close(r.done)
		ctx, cancel := context.WithTimeout(n.ctx, nonceTimeout)
		defer cancel()
		r.first, r.err = n.reserve(ctx)
	}()
	return r
}

// wait waits for the reservations running in the background; they end with the
// session's context.
func (n *nonces) wait() { n.wg.Wait() }
