package worker

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ratefleet/ratefleet/internal/graveyard"
	"github.com/ratefleet/ratefleet/internal/limiter"
	"github.com/ratefleet/ratefleet/internal/request"
	"github.com/ratefleet/ratefleet/internal/stats"
	"github.com/ratefleet/ratefleet/internal/upstream"
)

// ackTimeout bounds one acknowledgement or graveyard write.
const ackTimeout = 5 * time.Second

// handle is the life of one request: decode, check its time to live, wait for the
// key's limiter, send, then act on the answer.
func (s *session) handle(ctx context.Context, msg jetstream.Msg) {
	w := s.w
	w.rec.InFlight(1)
	defer w.rec.InFlight(-1)
	atGate := false
	defer func() {
		if !atGate {
			s.gate.unexpect()
		}
	}()
	md, err := msg.Metadata()
	if err != nil {
		s.log.Error("message without JetStream metadata; leaving it for redelivery", "err", err)
		return
	}
	req, err := request.Decode(msg.Data())
	if err != nil {
		atGate = true
		s.gate.unexpect() // free the key for the next request before burying this one
		w.rec.Count("", stats.ResultMalformed)
		s.bury(msg, md, request.Request{}, graveyard.ReasonMalformed, err.Error(), nil)
		return
	}
	if req.Expired(w.cfg.Now()) {
		atGate = true
		s.gate.unexpect()
		w.rec.Count(s.key.Name(), stats.ResultExpired)
		s.bury(msg, md, req, graveyard.ReasonExpired, "stale before it could be sent", nil)
		return
	}

	// Wait for the limiter. Waiting is not failing: the message is kept alive and
	// the wait ends at the request's deadline.
	waitCtx, cancel := context.WithDeadline(ctx, req.Deadline())
	stopKeepAlive := keepAlive(waitCtx, msg, w.cfg.Streams.Requests.Consumer.AckWait/3)
	atGate = true
	sl, err := s.gate.acquire(waitCtx)
	stopKeepAlive()
	cancel()
	switch {
	case err == nil:
	case ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded):
		w.rec.Count(s.key.Name(), stats.ResultExpired)
		s.bury(msg, md, req, graveyard.ReasonExpired, "time to live ran out while waiting for the key's rate limit", nil)
		return
	default:
		// The session is ending (shutdown, lease lost, quarantine): another worker
		// takes the request at once.
		if errors.Is(err, errLeaseLost) {
			s.end(errLeaseLost)
		}
		if errors.Is(err, errQuarantined) {
			s.quarantine()
		}
		_ = msg.Nak()
		return
	}

	// Send. The request completes even if the session ends meanwhile: it has left.
	w.rec.Sent(s.key.Name())
	ans := w.cfg.Upstream.Send(context.WithoutCancel(ctx), s.key.Secret(), sl.nonce, req.ID,
		func(t time.Time) { s.gate.wrote(sl, t) })
	s.gate.done(sl, func(p Pacer) {
		switch {
		case ans.Class == upstream.RateLimited:
			p.Rejected(sl.ticket, ans.Answered, ans.RetryAfter)
		case ans.Class == upstream.BadNonce:
			p.Inverted(sl.ticket, ans.Answered)
		case !ans.Answered.IsZero():
			p.Answered(sl.ticket, ans.Answered)
		default:
			p.Lost(sl.ticket, w.cfg.Now())
		}
		if ans.Class == upstream.BadNonce {
			s.nonce = s.nonceEnd // move on: the next send reserves a fresh, higher block
		}
		s.recordLimiter(p)
	})

	attempt := graveyard.Attempt{
		At: w.cfg.Now(), Delivery: md.NumDelivered, Worker: w.cfg.ID, Key: s.key.Name(),
		Status: ans.Status, Result: ans.Class.String(), Error: ans.Msg, Unknown: ans.Unknown(),
	}
	switch ans.Class {
	case upstream.OK:
		w.rec.Count(s.key.Name(), stats.ResultOK)
		w.rec.Latency(ans.Answered.Sub(req.Created))
		s.ack(msg, req, md)
		return
	case upstream.RateLimited:
		attrs := []any{"status", ans.Status, "retry_after", ans.RetryAfter, "sent_at", sl.at, "answered_at", ans.Answered}
		quarantined := false
		s.gate.state(func(p Pacer) {
			quarantined = p.Quarantined()
			if r, ok := p.(interface {
				LastRejection() (limiter.Rejection, bool)
			}); ok {
				if rej, ok := r.LastRejection(); ok {
					attrs = append(attrs, "max_delay_before", rej.MaxDelayBefore, "max_delay", rej.MaxDelay,
						"paused_until", rej.PauseUntil, "count", rej.Count, "ban_threshold", rej.BanThreshold)
				}
			}
		})
		s.log.Warn("upstream rate-limited a request the limiter allowed; pausing the key and widening its delay bound", attrs...)
		if quarantined {
			s.quarantine()
		}
	case upstream.BadNonce:
		s.log.Warn("upstream refused a nonce; moving the nonce on", "nonce", sl.nonce, "sent_at", sl.at, "wrote_at", ans.Wrote, "answered_at", ans.Answered)
	case upstream.KeyUnusable:
		s.log.Error("upstream refused the key; releasing it for good", "status", ans.Status, "answer", ans.Msg)
		s.markUnusable(ans.Msg)
	}
	w.rec.Count(s.key.Name(), resultOf(ans.Class))
	s.retryOrBury(msg, md, req, attempt)
}

func resultOf(c upstream.Class) string {
	switch c {
	case upstream.OK:
		return stats.ResultOK
	case upstream.RateLimited:
		return stats.ResultRateLimited
	case upstream.BadNonce:
		return stats.ResultBadNonce
	case upstream.KeyUnusable:
		return stats.ResultKeyUnusable
	case upstream.Timeout:
		return stats.ResultTimeout
	case upstream.ConnError:
		return stats.ResultConnError
	}
	return stats.ResultServerError
}

// retryOrBury NAKs a failed attempt with the configured delay, or buries the
// request when this was its last allowed delivery.
func (s *session) retryOrBury(msg jetstream.Msg, md *jetstream.MsgMetadata, req request.Request, a graveyard.Attempt) {
	cons := s.w.cfg.Streams.Requests.Consumer
	ctx, cancel := context.WithTimeout(context.Background(), ackTimeout)
	defer cancel()
	if int(md.NumDelivered) >= cons.MaxDeliver {
		prev, err := s.w.attempts.List(ctx, req.ID)
		if err != nil {
			s.log.Warn("could not read earlier attempts; burying with the last one only", "request", req.ID, "err", err)
		}
		s.w.rec.Count(s.key.Name(), stats.ResultBuried)
		s.bury(msg, md, req, graveyard.ReasonMaxDeliveries, a.Result+": "+a.Error, append(prev, a))
		return
	}
	if err := s.w.attempts.Record(ctx, req.ID, a); err != nil {
		s.log.Warn("could not record the attempt", "request", req.ID, "err", err)
	}
	if err := msg.NakWithDelay(cons.RetryDelay(int(md.NumDelivered))); err != nil {
		s.log.Warn("could not NAK; the request is redelivered after its ack wait", "request", req.ID, "err", err)
	}
}

// ack acknowledges a request answered 200, confirming with the server so it is not
// delivered again.
func (s *session) ack(msg jetstream.Msg, req request.Request, md *jetstream.MsgMetadata) {
	ctx, cancel := context.WithTimeout(context.Background(), ackTimeout)
	defer cancel()
	var err error
	for range 3 {
		if err = msg.DoubleAck(ctx); err == nil {
			break
		}
	}
	if err != nil {
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
func (s *session) bury(msg jetstream.Msg, md *jetstream.MsgMetadata, req request.Request, reason, why string, attempts []graveyard.Attempt) {
	ctx, cancel := context.WithTimeout(context.Background(), ackTimeout)
	defer cancel()
	e := graveyard.Entry{
		Reason: reason, RequestID: req.ID, Original: msg.Data(),
		Stream: md.Stream, StreamSeq: md.Sequence.Stream, Deliveries: md.NumDelivered,
		Attempts: attempts, Error: why, Worker: s.w.cfg.ID, Key: s.key.Name(), BuriedAt: s.w.cfg.Now(),
	}
	if err := s.w.grave.Bury(ctx, e); err != nil {
		s.log.Error("graveyard refused the request; leaving it in the queue", "request", req.ID, "reason", reason, "err", err)
		s.w.rec.Count(s.key.Name(), stats.ResultBuryFailed)
		_ = msg.NakWithDelay(time.Second)
		return
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
func (s *session) quarantine() {
	s.log.Error("ban guard tripped: too many 429s on this key; quarantining it across the fleet")
	s.markUnusable("quarantined by the ban guard after repeated 429s")
}

// markUnusable records that no worker may claim the key again and ends the session.
func (s *session) markUnusable(reason string) {
	ctx, cancel := context.WithTimeout(context.Background(), ackTimeout)
	defer cancel()
	if err := s.w.state.MarkUnusable(ctx, s.key.Name(), reason, s.w.cfg.Now()); err != nil {
		s.log.Error("could not mark the key unusable", "err", err)
	}
	s.w.rec.Key(s.key.Name(), func(kr *stats.KeyReport) { kr.Quarantined = true })
	s.end(errUnusable)
}

// recordLimiter copies the limiter's state into the key's stats; called under the
// gate's lock.
func (s *session) recordLimiter(p Pacer) {
	next := p.Next(s.w.cfg.Now())
	l := float64(p.MaxDelay()) / float64(time.Millisecond)
	q := p.Quarantined()
	ev, _ := p.(interface{ Evidence() limiter.Evidence })
	s.w.rec.Key(s.key.Name(), func(kr *stats.KeyReport) {
		kr.MaxDelayMs, kr.NextFree, kr.Quarantined = l, next, kr.Quarantined || q
		if ev != nil {
			e := ev.Evidence()
			kr.OrderDelayMs, kr.LagMs = float64(e.OrderDelay)/float64(time.Millisecond), float64(e.Lag)/float64(time.Millisecond)
			kr.Outliers, kr.Inversions = e.Outliers, e.Inversions
		}
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
