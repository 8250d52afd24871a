package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ratefleet/ratefleet/internal/keys"
	"github.com/ratefleet/ratefleet/internal/keystate"
	"github.com/ratefleet/ratefleet/internal/lease"
	"github.com/ratefleet/ratefleet/internal/stats"
)

// Why a session ended, as its context's cause.
var (
	errUnusable  = errors.New("key marked unusable")
	errShutdown  = errors.New("worker shutting down")
	errRebalance = errors.New("handed to a worker with fewer keys")
)

// session serves one held key: it renews the lease, pulls requests while it may
// send, and on its end hands the key's state over and releases the lease.
type session struct {
	// Set once, by claim.
	w       *Worker
	key     keys.Key
	lease   *lease.Owned
	log     *slog.Logger
	claimed time.Time
	start   KeyStart

	// Set once, by run.
	ctx     context.Context // ends with the session
	cancel  context.CancelCauseFunc
	gate    *gate
	nonces  *nonces
	queues  *queues
	endOnce sync.Once
	// cpUntil is when the span of the latest checkpoint written ends.
	cpUntil atomic.Pointer[time.Time]
}

// claim takes the key under the worker lease wl and reads what the fleet knows of
// the key: the previous holder's handoff, its lifetime 429 count and learned delay
// bound.
func (w *Worker) claim(ctx context.Context, wl *lease.Lease, k keys.Key) (*session, error) {
	rec, _, err := w.state.Get(ctx, k.Name())
	if err != nil {
		return nil, err
	}
	if rec.Unusable {
		return nil, errUnusable
	}
	l, err := lease.ClaimKey(ctx, wl, k.Name(), k.Fingerprint())
	if err != nil {
		return nil, err
	}
	claimed := w.cfg.Now()
	var (
		handoff, checkpoint json.RawMessage
		writtenAt, cpAt     time.Time
		cpSpan              time.Duration
		crashed             bool
	)
	// Take the handoff and clear it, so a later crash is never mistaken for a clean
	// handoff; naming the holder lets the next one know this one may crash.
	rec, err = w.state.Update(ctx, k.Name(), func(r *keystate.Record) error {
		if r.Unusable {
			return errUnusable
		}
		handoff, writtenAt, crashed = r.Limiter, r.HandedOffAt, r.Limiter == nil && r.Holder != ""
		if crashed {
			checkpoint, cpAt, cpSpan = r.Checkpoint, r.CheckpointAt, r.CheckpointSpan
		}
		r.Limiter, r.HandedOffAt, r.Holder, r.Updated = nil, time.Time{}, w.cfg.ID, claimed
		r.Checkpoint, r.CheckpointAt, r.CheckpointSpan = nil, time.Time{}, 0
		return nil
	})
	if err != nil {
		_ = l.Release(ctx)
		return nil, err
	}
	start := KeyStart{Count429: rec.Count429, MaxDelay: rec.MaxDelay}
	if handoff != nil {
		st, err := decodeHandoff(handoff, writtenAt, w.cfg.Now())
		if err != nil {
			// Not to be trusted: wait as after a crash, which needs nothing from it.
			w.log.Error("the key's handed-off limiter state cannot be trusted; waiting a full window instead", "key", k, "err", err)
			crashed = true
		} else {
			start.Handoff = st
		}
	}
	if crashed {
		start.Crashed = claimed
		if checkpoint != nil {
			st, err := decodeHandoff(checkpoint, cpAt, w.cfg.Now())
			if err != nil {
				w.log.Error("the key's limiter checkpoint cannot be trusted; waiting a full window instead", "key", k, "err", err)
			} else {
				start.Checkpoint, start.CheckpointSpan = st, cpSpan
			}
		}
	}
	return &session{w: w, key: k, lease: l, claimed: claimed, start: start, log: w.log.With("key", k)}, nil
}

// begin makes the session's context, under the worker's; end may be called from
// then on.
func (s *session) begin(ctx context.Context) {
	s.ctx, s.cancel = context.WithCancelCause(ctx)
}

// end stops the session for the given reason.
func (s *session) end(cause error) {
	s.endOnce.Do(func() { s.cancel(cause) })
}

// run serves the key until the worker stops, the lease is lost or the key becomes
// unusable, then hands the key over. begin must have been called with ctx.
func (s *session) run(ctx context.Context) {
	w := s.w
	defer s.cancel(nil)

	p, err := w.cfg.NewPacer(s.key, s.start)
	if err != nil {
		s.log.Error("cannot start the key's limiter; releasing the key", "err", err)
		s.release(context.WithoutCancel(ctx))
		return
	}
	s.nonces = newNonces(s.ctx, w.cfg.NonceBlock, func(ctx context.Context) (int64, error) {
		return w.state.ReserveNonces(ctx, s.key.Name(), w.cfg.NonceBlock, w.cfg.Now())
	})
	s.gate = newGate(p, s.covers, w.cfg.Now, s.nonces)
	if s.queues, err = w.cons.queues(s.ctx, s.key, w.rec, s.log); err != nil {
		s.log.Error("cannot pull requests; releasing the key", "err", err)
		s.release(context.WithoutCancel(ctx))
		return
	}
	if w.cfg.Checkpoint > 0 {
		if err := s.checkpoint(s.ctx); err != nil {
			s.log.Error("cannot write the key's first checkpoint; releasing the key", "err", err)
			s.queues.close()
			s.cancel(nil)
			s.nonces.wait()
			s.release(context.WithoutCancel(ctx))
			return
		}
		go s.checkpoints(s.ctx)
	}
	w.rec.Key(s.key.Name(), func(kr *stats.KeyReport) {
		kr.Fingerprint, kr.Held, kr.Since = s.key.Fingerprint(), true, s.claimed
		kr.MaxDelayMs = float64(p.MaxDelay()) / float64(time.Millisecond)
		kr.Count429Lifetime = s.start.Count429
	})
	w.live.add(s)
	s.log.Info("claimed key", "handoff", s.start.Handoff != nil, "after_crash", !s.start.Crashed.IsZero(),
		"count_429_lifetime", s.start.Count429, "max_delay", p.MaxDelay())

	s.pull(s.ctx)
	s.queues.close()
	s.cancel(nil) // ends reservations still running
	s.nonces.wait()

	w.live.remove(s)
	s.gate.state(s.recordLimiter) // the limiter as it ended, for the reports to come
	cause := context.Cause(s.ctx)
	if ctx.Err() != nil {
		cause = errShutdown
	}
	// Requests in flight have finished; nothing more leaves on this key.
	cleanup, done := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer done()
	switch {
	case errors.Is(cause, errLeaseLost):
		s.log.Warn("lease lost: stopped sending on this key", "since", s.claimed)
	default:
		if errors.Is(cause, errShutdown) || errors.Is(cause, errRebalance) {
			s.handOff(cleanup)
		}
		s.release(cleanup)
		s.log.Info("released key", "reason", cause.Error())
	}
	w.rec.Key(s.key.Name(), func(kr *stats.KeyReport) { kr.Held = false })
}

func (s *session) release(ctx context.Context) {
	if err := s.lease.Release(ctx); err != nil {
		s.log.Warn("could not release lease; it lapses by itself", "err", err)
	}
}

// handOff writes the limiter's state for the next holder, with the time it was
// written on this clock: the next holder reads the state's instants as ages.
func (s *session) handOff(ctx context.Context) {
	var (
		st  json.RawMessage
		err error
	)
	s.gate.state(func(p Pacer) { st, err = p.Handoff() })
	if err != nil {
		s.log.Warn("could not take the limiter's state; the next holder waits a full window", "err", err)
		return
	}
	now := s.w.cfg.Now()
	_, err = s.w.state.Update(ctx, s.key.Name(), func(r *keystate.Record) error {
		if r.Holder != s.w.cfg.ID {
			return fmt.Errorf("key state names holder %q", r.Holder)
		}
		r.Limiter, r.HandedOffAt, r.Holder, r.Updated = st, now, "", now
		r.Checkpoint, r.CheckpointAt, r.CheckpointSpan = nil, time.Time{}, 0
		return nil
	})
	if err != nil {
		s.log.Warn("could not hand the key's state over; the next holder waits a full window", "err", err)
	}
}

// covers reports whether a send may leave at t: the lease covers it and, with
// checkpoints, it is within the span of the latest one written.
func (s *session) covers(t time.Time) bool {
	if !s.lease.Valid(t) {
		return false
	}
	if s.w.cfg.Checkpoint <= 0 {
		return true
	}
	until := s.cpUntil.Load()
	return until != nil && t.Before(*until)
}

// checkpointSpan is how long after a checkpoint the holder may send on it:
// twice the interval, so that one failed write stops nothing.
func (s *session) checkpointSpan() time.Duration { return 2 * s.w.cfg.Checkpoint }

// checkpoint writes the limiter's state to key state as the key's checkpoint;
// once written, sends may leave until its span ends.
func (s *session) checkpoint(ctx context.Context) error {
	var (
		st  json.RawMessage
		err error
		at  time.Time
	)
	s.gate.state(func(p Pacer) { st, err = p.Handoff(); at = s.w.cfg.Now() })
	if err != nil {
		return fmt.Errorf("take the limiter's state: %w", err)
	}
	span := s.checkpointSpan()
	wctx, cancel := context.WithTimeout(ctx, s.w.cfg.Checkpoint)
	defer cancel()
	_, err = s.w.state.Update(wctx, s.key.Name(), func(r *keystate.Record) error {
		if r.Holder != s.w.cfg.ID {
			return fmt.Errorf("key state names holder %q", r.Holder)
		}
		r.Checkpoint, r.CheckpointAt, r.CheckpointSpan = st, at, span
		return nil
	})
	if err != nil {
		return fmt.Errorf("write the key's checkpoint: %w", err)
	}
	until := at.Add(span)
	s.cpUntil.Store(&until)
	s.gate.update(func(Pacer) {}) // a send waiting on the span may go
	return nil
}

// checkpoints writes a checkpoint every Config.Checkpoint until ctx ends.
func (s *session) checkpoints(ctx context.Context) {
	t := time.NewTicker(s.w.cfg.Checkpoint)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := s.checkpoint(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("could not write the key's checkpoint; sends stop at the end of the last one's span unless the next is written", "err", err)
		}
	}
}

// pullLead is how long before its key may send that a session asks for the next
// request: about the time a pull takes, so the slot is not wasted; a look that
// may wait for the worker's other keys' starts gatherWindow earlier still
// (queues.lead).
const pullLead = 10 * time.Millisecond

// pull takes requests one at a time, from the queues its key may serve (urgent
// first, see queues), and only when the key is about to be able to send: a
// request waits in the queue, where any key may take it, rather than in one
// worker behind its key. The worker's keys that look within a few
// milliseconds of each other take theirs in one pull (gatherer). It never holds more than
// MaxInFlight requests, and waits for those it started.
//
// A request is handed to a handler that has finished its last one and waits for
// another (for handlerIdle), or else to a new one: a goroutine kept for the
// next request keeps the stack it grew, where a new one grows its own again
// through each of the request's calls.
func (s *session) pull(ctx context.Context) {
	var handlers sync.WaitGroup
	defer handlers.Wait()
	sem := make(chan struct{}, s.w.cfg.MaxInFlight)
	idle := make(chan jetstream.Msg) // taken only by a handler waiting for it
	for {
		if err := s.gate.waitReady(ctx, s.queues.lead()); err != nil {
			return
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		msg, err := s.queues.next(ctx)
		if err != nil {
			return
		}
		s.gate.expect()
		select {
		case idle <- msg:
		default:
			handlers.Add(1)
			go func() {
				defer handlers.Done()
				s.handler(ctx, msg, sem, idle)
			}()
		}
	}
}

// handlerIdle is how long a handler waits for its session's next request
// before it ends.
const handlerIdle = 2 * time.Second

// handler handles msg, then each request handed to it on idle, until none comes
// for handlerIdle or ctx ends; it frees a place in sem after each.
func (s *session) handler(ctx context.Context, msg jetstream.Msg, sem <-chan struct{}, idle <-chan jetstream.Msg) {
	t := time.NewTimer(handlerIdle)
	defer t.Stop()
	for {
		s.handle(ctx, msg)
		<-sem
		t.Reset(handlerIdle)
		select {
		case msg = <-idle:
		case <-t.C:
			return
		case <-ctx.Done():
			return
		}
	}
}
