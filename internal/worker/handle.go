package worker

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ratefleet/ratefleet/internal/graveyard"
	"github.com/ratefleet/ratefleet/internal/stats"
	"github.com/ratefleet/ratefleet/internal/upstream"
	"github.com/ratefleet/ratefleet/wire"
)

// ackTimeout bounds one acknowledgement, NAK or graveyard write.
const ackTimeout = 5 * time.Second

// handle is the life of one request: decode, check its time to live, wait for the
// key's gate, send, then act on the answer as outcomeOf says. ctx is the
// session's: once the request has left, what follows runs to the end even if the
// session ends meanwhile.
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
	req, err := wire.DecodeFrom(w.cfg.Streams.Requests.Subject(), msg.Subject(), msg.Data())
	if errors.Is(err, wire.ErrUnsupportedVersion) {
		// Written by a newer producer: leave it for a newer worker, and bury it
		// with the reason at its last delivery. It is never half-read or sent.
		s.gate.unexpect()
		s.log.Warn("request of a newer version; leaving it for a newer worker", "request", req.ID, "err", err)
		s.retryOrBury(finish, msg, md, req, graveyard.Attempt{
			At: w.cfg.Now(), Delivery: md.NumDelivered, Worker: w.cfg.ID, Result: "unsupported_version", Error: err.Error(),
		})
		return
	}
	if err != nil {
		s.gate.unexpect() // free the key for the next request before burying this one
		w.rec.Count("", stats.ResultMalformed)
		s.bury(finish, msg, md, wire.Request{}, graveyard.ReasonMalformed, err.Error(), nil)
		return
	}
	units, err := s.check(req)
	if err != nil {
		s.gate.unexpect()
		w.rec.Count(s.key.Name(), stats.ResultMalformed)
		s.bury(finish, msg, md, req, graveyard.ReasonMalformed, err.Error(), nil)
		return
	}
	if md.NumDelivered > 1 {
		if res, ok := s.resultOf(finish, req.Owner, req.ID); ok {
			// An earlier delivery ended (its result is written) but was not
			// acknowledged: acknowledge it now, never send it again.
			s.gate.unexpect()
			s.log.Info("request already has a result; acknowledging it without sending again", "request", req.ID, "outcome", res.Outcome, "delivery", res.Delivery)
			s.ack(finish, msg, req, md)
			return
		}
	}
	// Its time to live counts from the earlier of the producer's clock and the
	// server's: a producer running ahead cannot keep a request alive.
	deadline := req.StaleAt(md.Timestamp)
	if !w.cfg.Now().Before(deadline) {
		s.gate.unexpect()
		w.rec.Count(s.key.Name(), stats.ResultExpired)
		s.bury(finish, msg, md, req, graveyard.ReasonExpired, "stale before it could be sent", nil)
		return
	}

	// 1. Wait at the gate. Waiting is not failing: the wait ends at the request's
	// deadline. The message stays in progress for the whole wait and the whole
	// send, however long the upstream takes: a send longer than the ack wait is
	// not delivered, and sent, again.
	stopKeepAlive := keepAlive(finish, msg, w.cfg.Streams.Requests.Consumer.AckWait/3)
	waitCtx, cancel := context.WithDeadline(ctx, deadline)
	sl, err := s.gate.acquireN(waitCtx, units)
	cancel()
	if err != nil {
		stopKeepAlive()
	}
	switch {
	case err == nil:
	case ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded):
		w.rec.Count(s.key.Name(), stats.ResultExpired)
		s.bury(finish, msg, md, req, graveyard.ReasonExpired, "time to live ran out while waiting for the key's rate limit", nil)
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
			s.log.Warn("could not send; the request goes back to the queue", "request", req.ID, "err", err)
		}
		s.nakNow(msg, req)
		return
	}

	// 2. Send. The request completes even if the session ends meanwhile: it has
	// left, or is leaving, and only the fence can stop its bytes.
	w.rec.Sent(s.key.Name())
	ans := w.cfg.Upstream.Send(finish, upstream.Call{
		Secret: s.key.Secret(), APIKey: s.key.ID(), Passphrase: s.key.Passphrase(), Target: req.Call,
		Nonce: sl.nonce, RequestID: req.ID,
		Fence: s.fence(sl.maxDelay),
		Wrote: func(t time.Time) { s.gate.wrote(sl, t) },
	})
	stopKeepAlive()

	// 3. Tell the limiter, then the key, as the answer's outcome says.
	out := outcomeOf(ans.Class)
	release := s.gate.done(sl, out.key == keyCount429, func(p Pacer) {
		now := w.cfg.Now()
		switch out.pacer {
		case answered:
			p.Answered(sl.ticket, ans.Answered)
		case rejected:
			p.Rejected(sl.ticket, ans.Answered, ans.RetryAfter)
		case inverted:
			p.Inverted(sl.ticket, ans.Answered)
		case lostUntil:
			p.LostUntil(sl.ticket, now, ans.Answered.Add(w.cfg.GatewayHold))
		case lost:
			if ans.Wrote.IsZero() {
				p.Unsent(sl.ticket, now) // not a byte left: it cannot arrive
			} else {
				p.Lost(sl.ticket, now)
			}
		}
		s.recordLimiter(p)
	})
	w.rec.Count(s.key.Name(), out.result)
	switch out.key {
	case keyNewNonces:
		s.nonces.skip()
		s.log.Warn("upstream refused a nonce; moving the nonce on", "nonce", sl.nonce, "sent_at", sl.at, "wrote_at", ans.Wrote, "answered_at", ans.Answered)
	case keyCount429:
		s.count429(finish, sl, ans) // the key sends again only once this is written
		release()
	case keyUnusable:
		s.log.Error("upstream refused the key; releasing it for good", "status", ans.Status, "answer", ans.Msg)
		s.markUnusable(finish, ans.Msg, false)
	case keyLeaseLost:
		s.end(errLeaseLost)
	}

	// 4. Acknowledge, retry or bury the message.
	switch out.msg {
	case msgAck:
		w.rec.Latency(ans.Answered.Sub(req.Created))
		if err := s.publishResult(finish, req, s.served(req, md, ans)); err != nil {
			// Not acknowledged without its result: it is delivered again, and
			// sent again, unless a later delivery finds the result written.
			s.log.Error("the upstream answered but its result could not be written; the request is not acknowledged", "request", req.ID, "err", err)
			_ = msg.NakWithDelay(time.Second)
			return
		}
		s.ack(finish, msg, req, md)
	case msgBack:
		s.nakNow(msg, req)
	default:
		s.retryOrBury(finish, msg, md, req, graveyard.Attempt{
			At: w.cfg.Now(), Delivery: md.NumDelivered, Worker: w.cfg.ID, Key: s.key.Name(),
			Status: ans.Status, Result: ans.Class.String(), Error: ans.Msg, Unknown: ans.Unknown(), RetryAfter: ans.RetryAfter,
		})
	}
}

// check returns the units of the key's windows req takes, or why the upstream's
// profile cannot make its call, which no retry would change.
func (s *session) check(req wire.Request) (int, error) {
	p := s.w.cfg.Upstream.Profile()
	if req.Call != nil {
		if err := p.CheckCall(req.Call); err != nil {
			return 0, err
		}
	}
	if err := req.CheckReply(s.w.cfg.Streams.Results.ReplyPrefix); err != nil {
		return 0, err
	}
	return p.Weight(req.Weight)
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

// retryOrBury records a failed attempt and NAKs it with the configured delay, or
// buries the request when this was its last allowed delivery.
func (s *session) retryOrBury(ctx context.Context, msg jetstream.Msg, md *jetstream.MsgMetadata, req wire.Request, a graveyard.Attempt) {
	cons := s.w.cfg.Streams.Requests.Consumer
	if int(md.NumDelivered) >= cons.MaxDeliver {
		lctx, cancel := context.WithTimeout(ctx, ackTimeout)
		prev, err := s.w.attempts.List(lctx, req.ID)
		cancel()
		if err != nil {
			s.log.Warn("could not read earlier attempts; burying with the last one only", "request", req.ID, "err", err)
		}
		s.w.rec.Count(s.key.Name(), stats.ResultBuried)
		s.bury(ctx, msg, md, req, graveyard.ReasonMaxDeliveries, a.Result+": "+a.Error, append(prev, a))
		return
	}
	rctx, cancel := context.WithTimeout(ctx, ackTimeout)
	defer cancel()
	if err := s.w.attempts.Record(rctx, req.ID, a); err != nil {
		s.log.Warn("could not record the attempt", "request", req.ID, "err", err)
	}
	// The upstream's Retry-After holds the request back too, not only its key.
	if err := msg.NakWithDelay(max(cons.RetryDelay(int(md.NumDelivered)), a.RetryAfter)); err != nil {
		s.log.Warn("could not NAK; the request is redelivered after its ack wait", "request", req.ID, "err", err)
	}
}

// nakNow gives a request that was not sent back to the queue at once.
func (s *session) nakNow(msg jetstream.Msg, req wire.Request) {
	if err := msg.Nak(); err != nil {
		s.log.Warn("could not NAK; the request is redelivered after its ack wait", "request", req.ID, "err", err)
	}
}

// ack acknowledges a request answered 200, confirming with the server so it is not
// delivered again.
func (s *session) ack(ctx context.Context, msg jetstream.Msg, req wire.Request, md *jetstream.MsgMetadata) {
	ctx, cancel := context.WithTimeout(ctx, ackTimeout)
	defer cancel()
	var err error
	for range 3 {
		if err = msg.DoubleAck(ctx); err == nil {
			break
		}
	}
	if err != nil {
		s.w.rec.Count("", stats.ResultAckFailed)
		s.log.Error("request sent but its ack failed; it may be sent again", "request", req.ID, "err", err)
	}
	if md.NumDelivered > 1 {
		if err := s.w.attempts.Forget(ctx, req.ID); err != nil {
			s.log.Warn("could not drop the attempt log", "request", req.ID, "err", err)
		}
	}
}

// bury stores the request in the graveyard, then acknowledges it. If the graveyard
// cannot take it, the request stays in the queue and is delivered again.
func (s *session) bury(ctx context.Context, msg jetstream.Msg, md *jetstream.MsgMetadata, req wire.Request, reason, why string, attempts []graveyard.Attempt) {
	ctx, cancel := context.WithTimeout(ctx, ackTimeout)
	defer cancel()
	e := graveyard.Entry{
		Reason: reason, RequestID: req.ID, Owner: req.Owner, Original: msg.Data(),
		Stream: md.Stream, StreamSeq: md.Sequence.Stream, Stored: md.Timestamp, Deliveries: md.NumDelivered,
		Attempts: attempts, Error: why, Worker: s.w.cfg.ID, Key: s.key.Name(), BuriedAt: s.w.cfg.Now(),
	}
	if err := s.w.grave.Bury(ctx, e); err != nil {
		s.log.Error("graveyard refused the request; leaving it in the queue", "request", req.ID, "reason", reason, "err", err)
		s.w.rec.Count(s.key.Name(), stats.ResultBuryFailed)
		_ = msg.NakWithDelay(time.Second)
		return
	}
	if req.ID != "" {
		res := wire.Result{ID: req.ID, Outcome: wire.Buried, Reason: reason, Error: why,
			Key: s.key.Name(), Worker: s.w.cfg.ID, Delivery: md.NumDelivered, At: s.w.cfg.Now()}
		if n := len(attempts); n > 0 {
			res.Status = attempts[n-1].Status
		}
		if err := s.publishResult(ctx, req, res); err != nil {
			// Buried, so a later delivery would bury it again (once): the
			// caller learns of it from the graveyard.
			s.log.Error("buried request's result could not be written", "request", req.ID, "err", err)
		}
	}
	if err := msg.DoubleAck(ctx); err != nil {
		s.log.Warn("buried request not acknowledged; it is buried again on redelivery (once)", "request", req.ID, "err", err)
	}
	if req.ID != "" && md.NumDelivered > 1 {
		_ = s.w.attempts.Forget(ctx, req.ID)
	}
	s.log.Info("buried request", "request", req.ID, "reason", reason, "deliveries", md.NumDelivered)
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
	next := p.NextN(s.w.cfg.Now(), 1)
	l := float64(p.MaxDelay()) / float64(time.Millisecond)
	q := p.Quarantined()
	e := p.Evidence()
	s.w.rec.Key(s.key.Name(), func(kr *stats.KeyReport) {
		kr.MaxDelayMs, kr.NextFree, kr.Quarantined = l, next, kr.Quarantined || q
		kr.OrderDelayMs, kr.LagMs = float64(e.OrderDelay)/float64(time.Millisecond), float64(e.Lag)/float64(time.Millisecond)
		kr.Outliers, kr.Inversions = e.Outliers, e.Inversions
	})
}

// keepAlive marks msg in progress every interval until ctx ends or stop is called,
// so a request waiting on its key is not redelivered.
func keepAlive(ctx context.Context, msg jetstream.Msg, every time.Duration) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				_ = msg.InProgress()
			}
		}
	}()
	return func() { cancel(); <-done }
}
