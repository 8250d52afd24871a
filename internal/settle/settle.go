// Package settle ends requests: it is the one place where a delivered request is
// acknowledged, given back, retried or buried, and where its result is written.
// The worker settles the requests it sends, as the table in Of says; the Keeper
// settles those no worker will end (the server gave up on them, or no key was
// held before their time to live ran out). Both write results the same way, so
// a served result is never replaced by a buried one, and a result belongs to one
// stored request (its stream sequence), not merely to an id.
package settle

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ratefleet/ratefleet/internal/graveyard"
	"github.com/ratefleet/ratefleet/internal/profile"
	"github.com/ratefleet/ratefleet/internal/stats"
	"github.com/ratefleet/ratefleet/internal/streams"
	"github.com/ratefleet/ratefleet/wire"
)

// ackTimeout bounds one acknowledgement, NAK, result or graveyard write.
const ackTimeout = 5 * time.Second

// Config is what a Settler needs.
type Config struct {
	// Streams are the declarations (requests, results, graveyard, attempts).
	Streams *streams.Config
	// Worker names the worker in results and graveyard entries.
	Worker string
	// Retry says when a failed attempt is tried again, and when no more.
	Retry profile.Retry
	// Rand draws the retry delays' jitter, from 0 to 1; rand.Float64 when nil.
	Rand func() float64
	// Count counts what became of a request under a key name ("" for none);
	// nil counts nothing.
	Count func(key, result string)
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// Log is the logger; required.
	Log *slog.Logger
}

// Settler settles delivered requests. It is safe for concurrent use.
type Settler struct {
	// Set once.
	cfg      Config
	js       jetstream.JetStream
	grave    *graveyard.Graveyard
	attempts *graveyard.Attempts
	results  *Results
	together *together
}

// New opens what a Settler writes to.
func New(ctx context.Context, js jetstream.JetStream, cfg Config) (*Settler, error) {
	sc := cfg.Streams
	grave, err := graveyard.New(js, sc.Graveyard.Stream.Name, sc.Graveyard.Stream.Subjects[0])
	if err != nil {
		return nil, err
	}
	attempts, err := graveyard.OpenAttempts(ctx, js, sc.KV.Attempts.Bucket)
	if err != nil {
		return nil, err
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Float64
	}
	if cfg.Count == nil {
		cfg.Count = func(string, string) {}
	}
	s := &Settler{cfg: cfg, js: js, grave: grave, attempts: attempts, results: NewResults(js, sc)}
	if s.together, err = newTogether(s, js, serveWindow); err != nil {
		return nil, err
	}
	return s, nil
}

// Delivery is one delivery of a request, as the worker holds it.
type Delivery struct {
	Msg  jetstream.Msg
	Meta *jetstream.MsgMetadata
	// Req is the decoded request; its ID is empty when it could not be decoded.
	Req wire.Request
	// Key names the key the request was (to be) sent on, "" for none.
	Key string
}

// replyTo returns where a request's result is sent besides the results stream:
// its reply_to, or its owner's reply subject.
func (s *Settler) replyTo(req wire.Request) string {
	if req.ID == "" {
		return ""
	}
	return req.ReplySubject(s.cfg.Streams.Results.ReplyPrefix)
}

// last reports whether this is the request's last allowed delivery.
func (s *Settler) last(d Delivery) bool {
	return int(d.Meta.NumDelivered) >= s.cfg.Streams.Requests.Consumer.MaxDeliver
}

// Earlier returns the result already written for this stored request, if any:
// a delivery after a worker stopped between writing a result and acknowledging
// finds it, and is acknowledged without being sent again. A result of an earlier
// request that had the same id is not this request's.
func (s *Settler) Earlier(ctx context.Context, d Delivery) (wire.Result, bool) {
	if d.Meta.NumDelivered <= 1 {
		return wire.Result{}, false
	}
	ctx, cancel := context.WithTimeout(ctx, ackTimeout)
	defer cancel()
	r, ok, err := s.results.Of(ctx, d.Req.Owner, d.Req.ID, d.Meta.Sequence.Stream)
	if err != nil {
		s.cfg.Log.Warn("could not look for an earlier result; sending the request", "request", d.Req.ID, "err", err)
		return wire.Result{}, false
	}
	return r, ok
}

// Serve writes the served result res, where the request's results setting
// says, then acknowledges the request. If the result cannot be written the
// request is not acknowledged: it is delivered again later, and a later
// delivery that finds a result is not sent again (with results kept, the
// default: wire.ResultsKeep). While the worker serves results less than a few
// milliseconds apart, a result kept in one message is stored with the others
// served within those milliseconds (together), and its request acknowledged
// with theirs.
func (s *Settler) Serve(ctx context.Context, d Delivery, res wire.Result) {
	res.Outcome, res.Seq = wire.Served, d.Meta.Sequence.Stream
	if s.together.hold(time.Now()) {
		if sv, ok := s.results.servedTogether(d.Req.Owner, s.replyTo(d.Req), d.Req.Results, res); ok {
			sv.d = d
			if s.together.serve(sv) {
				return
			}
		}
	}
	if err := s.results.Publish(ctx, d.Req.Owner, s.replyTo(d.Req), d.Req.Results, res); err != nil {
		s.cfg.Count("", stats.ResultAckFailed)
		s.cfg.Log.Error("the upstream answered but its result could not be written; the request is not acknowledged", "request", d.Req.ID, "err", err)
		_ = d.Msg.NakWithDelay(time.Second)
		return
	}
	s.Ack(ctx, d)
}

// Ack acknowledges a request that has its result, and drops its attempt log.
// The acknowledgement is not awaited: the result is stored first, so one the
// server never gets costs no second send (the redelivery finds the result,
// Earlier, and is acknowledged again without being sent), and awaiting it would
// cost a message per request.
func (s *Settler) Ack(ctx context.Context, d Delivery) {
	if err := d.Msg.Ack(); err != nil {
		s.cfg.Count("", stats.ResultAckFailed)
		s.cfg.Log.Error("request ended but its ack failed; it is delivered again, and its result found", "request", d.Req.ID, "err", err)
	}
	if d.Meta.NumDelivered > 1 {
		ctx, cancel := context.WithTimeout(ctx, ackTimeout)
		defer cancel()
		if err := s.attempts.Forget(ctx, d.Req.ID); err != nil {
			s.cfg.Log.Warn("could not drop the attempt log", "request", d.Req.ID, "err", err)
		}
	}
}

// Back gives a request that was not sent back to the queue at once.
func (s *Settler) Back(d Delivery) {
	if err := d.Msg.Nak(); err != nil {
		s.cfg.Log.Warn("could not NAK; the request is redelivered after its ack wait", "request", d.Req.ID, "err", err)
	}
}

// Retry records a failed attempt and NAKs the request with the profile's retry
// delay (at least the upstream's Retry-After, which holds the request back too,
// not only its key, and at most until its time to live ends, when the next
// delivery buries it as expired), or buries it as max_deliveries when its
// retries are spent: the consumer's max_deliver, or the profile's max_attempts or
// max_time.
func (s *Settler) Retry(ctx context.Context, d Delivery, a graveyard.Attempt) {
	n := int(d.Meta.NumDelivered)
	now := s.cfg.Now()
	delay := max(s.cfg.Retry.Delay(n, s.cfg.Rand()), a.RetryAfter)
	if spent := s.spent(d, n, now.Add(delay)); spent != "" {
		lctx, cancel := context.WithTimeout(ctx, ackTimeout)
		prev, err := s.attempts.List(lctx, d.Req.ID)
		cancel()
		if err != nil {
			s.cfg.Log.Warn("could not read earlier attempts; burying with the last one only", "request", d.Req.ID, "err", err)
		}
		s.Bury(ctx, d, wire.ReasonMaxDeliveries, a.Result+": "+a.Error+" ("+spent+")", append(prev, a))
		return
	}
	if d.Req.TTLms > 0 {
		if until := d.Req.StaleAt(d.Meta.Timestamp).Sub(now); delay > until {
			delay = max(until, 0)
		}
	}
	rctx, cancel := context.WithTimeout(ctx, ackTimeout)
	defer cancel()
	if err := s.attempts.Record(rctx, d.Req.ID, a); err != nil {
		s.cfg.Log.Warn("could not record the attempt", "request", d.Req.ID, "err", err)
	}
	if err := d.Msg.NakWithDelay(delay); err != nil {
		s.cfg.Log.Warn("could not NAK; the request is redelivered after its ack wait", "request", d.Req.ID, "err", err)
	}
}

// spent says which retry budget a request that failed delivery n, and would be
// tried again at next, has spent, or "" if none.
func (s *Settler) spent(d Delivery, n int, next time.Time) string {
	r := s.cfg.Retry
	switch {
	case s.last(d):
		return fmt.Sprintf("delivery %d of max_deliver %d", n, s.cfg.Streams.Requests.Consumer.MaxDeliver)
	case r.MaxAttempts > 0 && n >= r.MaxAttempts:
		return fmt.Sprintf("attempt %d of the profile's retry.max_attempts %d", n, r.MaxAttempts)
	case r.MaxTime > 0 && next.Sub(d.Meta.Timestamp) > r.MaxTime:
		return fmt.Sprintf("the next try would be past the profile's retry.max_time %s", r.MaxTime)
	}
	return ""
}

// Bury stores the request in the graveyard with reason, writes its buried
// result (unless it already has one) and acknowledges it. If the graveyard
// cannot take it, the request stays in the queue and is delivered again.
func (s *Settler) Bury(ctx context.Context, d Delivery, reason, why string, attempts []graveyard.Attempt) {
	ctx, cancel := context.WithTimeout(ctx, ackTimeout)
	defer cancel()
	e := graveyard.Entry{
		Reason: reason, RequestID: d.Req.ID, Original: d.Msg.Data(),
		Owner: d.Req.Owner, Stream: d.Meta.Stream, StreamSeq: d.Meta.Sequence.Stream, Stored: d.Meta.Timestamp, Deliveries: d.Meta.NumDelivered,
		Attempts: attempts, Error: why, Worker: s.cfg.Worker, Key: d.Key, BuriedAt: s.cfg.Now(),
	}
	if err := s.grave.Bury(ctx, e); err != nil {
		s.cfg.Log.Error("graveyard refused the request; leaving it in the queue", "request", d.Req.ID, "reason", reason, "err", err)
		s.cfg.Count(d.Key, stats.ResultBuryFailed)
		_ = d.Msg.NakWithDelay(time.Second)
		return
	}
	s.cfg.Count(d.Key, reason)
	if err := s.results.Bury(ctx, s.replyTo(d.Req), e); err != nil {
		// Buried, so a later delivery would bury it again (once): the caller
		// learns of it from the graveyard.
		s.cfg.Log.Error("buried request's result could not be written", "request", d.Req.ID, "err", err)
	}
	if err := d.Msg.DoubleAck(ctx); err != nil {
		s.cfg.Log.Warn("buried request not acknowledged; it is buried again on redelivery (once)", "request", d.Req.ID, "err", err)
	}
	if d.Req.ID != "" && d.Meta.NumDelivered > 1 {
		_ = s.attempts.Forget(ctx, d.Req.ID)
	}
	s.cfg.Log.Info("buried request", "request", d.Req.ID, "reason", reason, "deliveries", d.Meta.NumDelivered)
}

// Leave records a delivery of a request this worker cannot read (a newer
// version) as an attempt, for a newer worker to serve; at its last delivery it
// is buried as max_deliveries with that reason.
func (s *Settler) Leave(ctx context.Context, d Delivery, why error) {
	s.Retry(ctx, d, graveyard.Attempt{
		At: s.cfg.Now(), Delivery: d.Meta.NumDelivered, Worker: s.cfg.Worker,
		Result: "unsupported_version", Error: fmt.Sprint(why),
	})
}
