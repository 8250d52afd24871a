package worker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ratefleet/ratefleet/internal/graveyard"
	"github.com/ratefleet/ratefleet/internal/limiter"
	"github.com/ratefleet/ratefleet/internal/profile"
	"github.com/ratefleet/ratefleet/internal/settle"
	"github.com/ratefleet/ratefleet/internal/stats"
	"github.com/ratefleet/ratefleet/internal/upstream"
	"github.com/ratefleet/ratefleet/wire"
)

// ackTimeout bounds one key-state write.
const ackTimeout = 5 * time.Second

// handle is the life of one request: decode, check its time to live, wait for the
// key's gate, send, then settle it as its answer's outcome says (settle.Of). ctx
// is the session's: once the request has left, what follows runs to the end even
// if the session ends meanwhile.
func (s *session) handle(ctx context.Context, msg jetstream.Msg) {
	w := s.w
	w.rec.InFlight(1)
	defer w.rec.InFlight(-1)
	finish := context.WithoutCancel(ctx) // acks and burials outlive the session

	md, err := msg.Metadata()
	if err != nil {
		s.gate.unexpect()
		s.log.Error("message without JetStream metadata; leaving it for redelivery", "err", err)
		return
	}
	d := settle.Delivery{Msg: msg, Meta: md, Key: s.key.Name()}
	d.Req, err = wire.DecodeFrom(w.cfg.Streams.Requests.Subject(), msg.Subject(), msg.Data())
	var cost limiter.Cost
	if err == nil {
		cost, err = s.check(d.Req)
	}
	switch {
	case errors.Is(err, wire.ErrUnsupportedVersion):
		// Written by a newer producer: leave it for a newer worker (buried with
		// the reason at its last delivery); it is never half-read or sent.
		s.gate.unexpect()
		s.log.Warn("request of a newer version; leaving it for a newer worker", "request", d.Req.ID, "err", err)
		d.Key = ""
		w.settler.Leave(finish, d, err)
		return
	case err != nil:
		s.gate.unexpect() // free the key for the next request before burying this one
		w.settler.Bury(finish, d, settle.Refusal(err), err.Error(), nil)
		return
	}
	if res, ok := w.settler.Earlier(finish, d); ok {
		// An earlier delivery ended (its result is written) but was not
		// acknowledged: acknowledge it now, never send it again.
		s.gate.unexpect()
		s.log.Info("request already has a result; acknowledging it without sending again", "request", d.Req.ID, "outcome", res.Outcome, "delivery", res.Delivery)
		w.settler.Ack(finish, d)
		return
	}
	// Its time to live counts from the earlier of the producer's clock and the
	// server's: a producer running ahead cannot keep a request alive.
	deadline := d.Req.StaleAt(md.Timestamp)
	if !w.cfg.Now().Before(deadline) {
		s.gate.unexpect()
		w.settler.Bury(finish, d, wire.ReasonExpired, "stale before it could be sent", nil)
		return
	}

	// 1. Wait at the gate. Waiting is not failing: the wait ends at the request's
	// deadline. The message stays in progress for the whole wait and the whole
	// send, however long the upstream takes: a send longer than the ack wait is
	// not delivered, and sent, again.
	stopKeepAlive := keepAlive(finish, msg, w.cfg.Streams.Requests.Consumer.AckWait/3)
	waitCtx, cancel := context.WithDeadline(ctx, deadline)
	sl, err := s.gate.acquireN(waitCtx, cost)
	stale := staleAtGate(ctx, waitCtx, err)
	cancel()
	if err != nil {
		stopKeepAlive()
	}
	switch {
	case err == nil:
	case stale:
		w.settler.Bury(finish, d, wire.ReasonExpired, "time to live ran out while waiting for the key's rate limit", nil)
		return
	default:
		// The session is ending (shutdown, lease lost, quarantine) or key state
		// cannot be reached: another worker takes the request at once.
		switch {
		case errors.Is(err, errLeaseLost):
			s.end(errLeaseLost)
		case errors.Is(err, errQuarantined):
			s.quarantine(finish)
		case ctx.Err() == nil:
			s.log.Warn("could not send; the request goes back to the queue", "request", d.Req.ID, "err", err)
		}
		w.settler.Back(d)
		return
	}

	if s.withdraw(finish, d, sl, stopKeepAlive) { // cancelled, or not this key's
		return
	}

	// 2. Send. The request completes even if the session ends meanwhile: it has
	// left, or is leaving, and only the fence can stop its bytes.
	w.rec.Sent(s.key.Name())
	ans := w.cfg.Upstream.Send(finish, upstream.Call{
		Secret: s.key.Secret(), APIKey: s.key.ID(), Passphrase: s.key.Passphrase(), Target: d.Req.Call,
		Nonce: sl.nonce, RequestID: d.Req.ID,
		Fence: s.fence(sl.maxDelay),
		Wrote: func(t time.Time) { s.gate.wrote(sl, t) },
	})
	stopKeepAlive()

	// 3. Tell the limiter, then the key, as the answer's outcome says.
	out := settle.Of(ans.Class)
	s.report(finish, sl, out, ans)
	w.rec.Count(s.key.Name(), out.Name)

	// 4. Settle the message.
	switch out.Msg {
	case settle.MsgServe:
		w.rec.Latency(ans.Answered.Sub(d.Req.Created))
		w.settler.Serve(finish, d, s.served(d, ans))
	case settle.MsgBack:
		w.settler.Back(d)
	default:
		w.settler.Retry(finish, d, graveyard.Attempt{
			At: w.cfg.Now(), Delivery: md.NumDelivered, Worker: w.cfg.ID, Key: s.key.Name(),
			Status: ans.Status, Result: out.Name, Error: ans.Msg, Unknown: ans.Unknown(), RetryAfter: ans.RetryAfter,
		})
	}
}

// staleAtGate reports whether a wait at the gate that failed with err ended
// because the request's own deadline passed: the session (ctx) still runs and
// the wait's context (wait, ended by that deadline) ran out. A timeout of
// something the wait did, such as reserving nonces in key state for longer than
// the process was paused, also wraps context.DeadlineExceeded; it is not the
// request's staleness, and that request goes back to the queue.
func staleAtGate(ctx, wait context.Context, err error) bool {
	return ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) && errors.Is(wait.Err(), context.DeadlineExceeded)
}

// report tells the limiter what became of a send, then acts on the key, as out
// says.
func (s *session) report(finish context.Context, sl slot, out settle.Outcome, ans upstream.Answer) {
	w := s.w
	release := s.gate.done(sl, out.Key == settle.KeyCount429, func(p Pacer) {
		now := w.cfg.Now()
		switch out.Report {
		case settle.Answered:
			if prof := w.cfg.Upstream.Profile(); prof.Answered() {
				p.Used(sl.ticket, prof.Actual(ans.Body))
			}
			p.Answered(sl.ticket, ans.Answered)
		case settle.Rejected:
			p.Rejected(sl.ticket, ans.Answered, ans.RetryAfter)
		case settle.Inverted:
			p.Inverted(sl.ticket, ans.Answered)
		case settle.LostUntil:
			p.LostUntil(sl.ticket, now, ans.Answered.Add(w.cfg.GatewayHold))
		case settle.Lost:
			if ans.Wrote.IsZero() {
				p.Unsent(sl.ticket, now) // not a byte left: it cannot arrive
			} else {
				p.Lost(sl.ticket, now)
			}
		}
		observe(p, sl.ticket, ans)
	})
	switch out.Key {
	case settle.KeyNewNonces:
		s.nonces.skip()
		s.log.Warn("upstream refused a nonce; moving the nonce on", "nonce", sl.nonce, "sent_at", sl.at, "wrote_at", ans.Wrote, "answered_at", ans.Answered)
	case settle.KeyCount429:
		s.count429(finish, sl, ans) // the key sends again only once this is written
		release()
	case settle.KeyUnusable:
		s.log.Error("upstream refused the key; releasing it for good", "status", ans.Status, "answer", ans.Msg)
		s.markUnusable(finish, ans.Msg, false)
	case settle.KeyLeaseLost:
		s.end(errLeaseLost)
	}
}

// served is the result of a request the upstream answered for good.
func (s *session) served(d settle.Delivery, ans upstream.Answer) wire.Result {
	r := wire.Result{
		ID: d.Req.ID, Status: ans.Status, Header: ans.Header, Truncated: ans.Truncated,
		Key: s.key.Name(), Worker: s.w.cfg.ID, Delivery: d.Meta.NumDelivered, At: s.w.cfg.Now(),
	}
	if len(r.Header) == 0 {
		r.Header = nil
	}
	r.SetBody(ans.Body)
	return r
}

// check returns what req costs, or why the upstream's profile cannot make its
// call, which no retry would change.
func (s *session) check(req wire.Request) (limiter.Cost, error) {
	p := s.w.cfg.Upstream.Profile()
	if req.Call != nil {
		if err := p.CheckCall(req.Call); err != nil {
			return nil, err
		}
	}
	if err := req.CheckReply(s.w.cfg.Streams.Results.ReplyPrefix); err != nil {
		return nil, err
	}
	c, err := p.Cost(req)
	if err != nil {
		return nil, err
	}
	if err := s.gate.check(c); err != nil {
		return nil, fmt.Errorf("%w: %w", profile.ErrCall, err)
	}
	return c, nil
}

// fence returns the check the upstream client makes before writing each byte of a
// request: the lease must still be valid when the last byte's arrival, up to
// maxDelay later, could be seen. Its safety margin covers maxDelay up to the
// margin itself; beyond that, the send must end that much earlier.
func (s *session) fence(maxDelay time.Duration) func(time.Time) bool {
	extra := max(maxDelay-s.lease.Margin(), 0)
	return func(t time.Time) bool { return s.lease.Covers(t.Add(extra)) }
}

// count429 writes the 429 to key state, so the key's next holder starts from the
// fleet's count and the learned delay bound, and quarantines the key when the
// ban guard trips. It keeps trying until written or the key is given up.
func (s *session) count429(ctx context.Context, sl slot, ans upstream.Answer) {
	var (
		quarantined bool
		l           time.Duration
		attrs       = []any{"status", ans.Status, "retry_after", ans.RetryAfter, "sent_at", sl.at, "answered_at", ans.Answered}
	)
	s.gate.state(func(p Pacer) {
		quarantined, l = p.Quarantined(), p.MaxDelay()
		if rej, ok := p.LastRejection(); ok {
			attrs = append(attrs, "max_delay_before", rej.MaxDelayBefore, "max_delay", rej.MaxDelay,
				"paused_until", rej.PauseUntil, "count", rej.Count, "ban_threshold", rej.BanThreshold)
		}
	})
	s.log.Warn("upstream rate-limited a request the limiter allowed; pausing the key and widening its delay bound", attrs...)
	for attempt := 0; ; attempt++ {
		wctx, cancel := context.WithTimeout(ctx, ackTimeout)
		n, err := s.w.state.Record429(wctx, s.key.Name(), l, s.w.cfg.Now())
		cancel()
		if err == nil {
			s.w.rec.Key(s.key.Name(), func(kr *stats.KeyReport) { kr.Count429Lifetime = n })
			break
		}
		if !s.lease.Valid(s.w.cfg.Now()) {
			// The key is no longer ours: it sends nothing more here, and the next
			// holder waits a full window. The count may be short by this one.
			s.log.Error("could not count the 429 in key state before the lease ran out", "err", err)
			s.end(errLeaseLost)
			return
		}
		s.log.Warn("could not count the 429 in key state; the key waits until it is written", "err", err, "attempt", attempt+1)
		_ = sleep(ctx, min(time.Duration(attempt+1)*100*time.Millisecond, time.Second), nil)
	}
	if quarantined {
		s.quarantine(ctx)
	}
}

// quarantine marks the key unusable after the ban guard tripped.
func (s *session) quarantine(ctx context.Context) {
	s.log.Error("ban guard tripped: too many 429s on this key over its lifetime; quarantining it across the fleet")
	s.markUnusable(ctx, "quarantined by the ban guard after repeated 429s", true)
}

// markUnusable records that no worker may claim the key again and ends the session.
func (s *session) markUnusable(ctx context.Context, reason string, quarantined bool) {
	ctx, cancel := context.WithTimeout(ctx, ackTimeout)
	defer cancel()
	if err := s.w.state.MarkUnusable(ctx, s.key.Name(), reason, quarantined, s.w.cfg.Now()); err != nil {
		s.log.Error("could not mark the key unusable", "err", err)
	}
	s.w.rec.Key(s.key.Name(), func(kr *stats.KeyReport) { kr.Quarantined = kr.Quarantined || quarantined })
	s.end(errUnusable)
}

// recordLimiter copies the limiter's state into the key's stats; called under the
// gate's lock.
func (s *session) recordLimiter(p Pacer) {
	next := p.NextC(s.w.cfg.Now(), nil)
	l := float64(p.MaxDelay()) / float64(time.Millisecond)
	q := p.Quarantined()
	e := p.Evidence()
	s.w.rec.Key(s.key.Name(), func(kr *stats.KeyReport) {
		kr.MaxDelayMs, kr.NextFree, kr.Quarantined = l, next, kr.Quarantined || q
		kr.OrderDelayMs, kr.LagMs = float64(e.OrderDelay)/float64(time.Millisecond), float64(e.Lag)/float64(time.Millisecond)
		kr.Outliers, kr.Inversions = e.Outliers, e.Inversions
		kr.Answers, kr.BusyAnswers = e.Answers, e.Busy
	})
}

// keepAlive marks msg in progress every interval until ctx ends or stop is called,
// so a request waiting on its key is not redelivered. It runs on a timer, not a
// goroutine of its own: most requests leave long before the first mark is due.
// Once stop has returned, no mark is sent.
func keepAlive(ctx context.Context, msg jetstream.Msg, every time.Duration) (stop func()) {
	var (
		mu      sync.Mutex
		stopped bool
		t       *time.Timer
	)
	mu.Lock()
	defer mu.Unlock()
	t = time.AfterFunc(every, func() {
		mu.Lock()
		defer mu.Unlock()
		if stopped || ctx.Err() != nil {
			return
		}
		_ = msg.InProgress()
		t.Reset(every)
	})
	return func() {
		mu.Lock()
		defer mu.Unlock()
		stopped = true
		t.Stop()
	}
}
