package worker

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ratefleet/ratefleet/internal/burst"
	"github.com/ratefleet/ratefleet/internal/pull"
)

// gatherWindow is how long a session's look for its next request waits for
// those of the worker's other keys on the same consumer, so that one pull
// brings them all. Sessions look this much earlier while looks gather
// (queues.lead), so a request still arrives about a pull's time before its key
// may send it. A pull costs NATS more than the request it brings, and NATS
// takes a few large pulls for less work a request than many small ones
// (docs/benchmarks.md).
const gatherWindow = 20 * time.Millisecond

// gatherer pulls, for the sessions of one worker that take from one consumer,
// the requests their keys are about to send: the looks that come within
// gatherWindow of the first go out as one pull of that many (pull.Batch), and
// each look gets one request, or none when the queue had fewer. A request is
// taken from the queue only for a key about to send it, as when each key pulled
// its own. Where looks come more than a quarter of the window apart (a worker
// with few keys) there is little to gather, and each session pulls its own
// (hold). It runs a goroutine only while looks wait.
type gatherer struct {
	// Set once.
	stream, durable string
	puller          *pull.Puller

	mu      sync.Mutex
	pace    *burst.Pace
	looks   []*look
	running bool // a goroutine serves looks
	closed  bool

	pulls atomic.Int64 // pulls sent
}

// look is one session's wait for a request.
type look struct {
	got  chan found // one answer
	gone bool       // its session stopped waiting; under gatherer.mu
}

// found is what a look gets: a request, none (both nil), or the pull's error.
type found struct {
	msg jetstream.Msg
	err error
}

func newGatherer(js jetstream.JetStream, stream, durable string, window time.Duration) (*gatherer, error) {
	p, err := pull.New(js)
	if err != nil {
		return nil, err
	}
	return &gatherer{stream: stream, durable: durable, puller: p, pace: burst.New(window)}, nil
}

// take waits for one request, the next pull's, and returns it, or nil and no
// error when the queue had none for it; pull.ErrPull, wrapped, when the pull
// failed. When ctx ends first, a request that came for it goes back to the
// queue.
func (g *gatherer) take(ctx context.Context) (jetstream.Msg, error) {
	l := &look{got: make(chan found, 1)}
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return nil, nil
	}
	g.looks = append(g.looks, l)
	if !g.running {
		g.running = true
		go g.run()
	}
	g.mu.Unlock()
	select {
	case f := <-l.got:
		return f.msg, f.err
	case <-ctx.Done():
		g.mu.Lock()
		l.gone = true
		g.mu.Unlock()
		select {
		case f := <-l.got:
			if f.msg != nil {
				_ = f.msg.Nak()
			}
		default:
		}
		return nil, ctx.Err()
	}
}

// hold notes a look at now, and reports whether it goes with the others
// (take): while looks come less than the window apart on average, or a pull is
// already being gathered. Otherwise the session pulls its own, as it would
// without the gatherer: holding the look would only add a timer and a wait.
func (g *gatherer) hold(now time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.pace.Hold(now, g.running)
}

// gathering reports whether a look now would be held for others: looks come
// close enough together (burst.Pace), or a pull is being gathered.
func (g *gatherer) gathering() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.running || g.pace.Worth()
}

// run sends a pull for the looks that came within the window, answers them,
// and again, until no look waits.
func (g *gatherer) run() {
	for {
		g.mu.Lock()
		full := len(g.looks) >= pull.MaxBatch
		g.mu.Unlock()
		if !full {
			time.Sleep(g.pace.Window())
		}
		g.mu.Lock()
		n := min(len(g.looks), pull.MaxBatch)
		batch := append([]*look(nil), g.looks[:n]...)
		g.looks = append(g.looks[:0], g.looks[n:]...)
		live := 0
		for _, l := range batch {
			if !l.gone {
				live++
			}
		}
		g.mu.Unlock()
		if live > 0 {
			g.pulls.Add(1)
			msgs, err := g.puller.Batch(context.Background(), g.stream, g.durable, live)
			g.answer(batch, msgs, err)
		}
		g.mu.Lock()
		if len(g.looks) == 0 {
			g.running = false
			if g.closed {
				g.puller.Close()
			}
			g.mu.Unlock()
			return
		}
		g.mu.Unlock()
	}
}

// answer hands msgs to the looks of batch still waiting, in order, then to
// looks that came meanwhile; the others get none, or err. A request no look
// waits for any more goes back to the queue at once.
func (g *gatherer) answer(batch []*look, msgs []jetstream.Msg, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, l := range batch {
		if l.gone {
			continue
		}
		if len(msgs) > 0 {
			l.got <- found{msg: msgs[0]}
			msgs = msgs[1:]
			continue
		}
		l.got <- found{err: err}
	}
	for len(msgs) > 0 && len(g.looks) > 0 {
		l := g.looks[0]
		g.looks = g.looks[1:]
		if !l.gone {
			l.got <- found{msg: msgs[0]}
			msgs = msgs[1:]
		}
	}
	for _, m := range msgs {
		_ = m.Nak()
	}
}

// close gives back the requests delivered and not taken, once no look waits.
func (g *gatherer) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = true
	if !g.running {
		g.puller.Close()
	}
}
