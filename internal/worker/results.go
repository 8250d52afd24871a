package worker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ratefleet/ratefleet/internal/upstream"
	"github.com/ratefleet/ratefleet/wire"
)

// served is the result of a request the upstream answered for good.
func (s *session) served(req wire.Request, md *jetstream.MsgMetadata, ans upstream.Answer) wire.Result {
	r := wire.Result{
		ID: req.ID, Outcome: wire.Served, Status: ans.Status, Header: ans.Header, Truncated: ans.Truncated,
		Key: s.key.Name(), Worker: s.w.cfg.ID, Delivery: md.NumDelivered, At: s.w.cfg.Now(),
	}
	if len(r.Header) == 0 {
		r.Header = nil
	}
	r.SetBody(ans.Body)
	return r
}

// publishResult writes a request's result to the results stream, and to its
// reply subject (its reply_to, or its owner's), before the request is
// acknowledged: once the upstream answered, the answer is not lost. A retried publish of the same
// delivery's result is stored once (its message id); a later delivery's result is
// a second one, recognisable by its Delivery.
func (s *session) publishResult(ctx context.Context, req wire.Request, res wire.Result) error {
	data, err := res.Encode()
	if err != nil {
		return err
	}
	subject := wire.ResultSubject(s.w.cfg.Streams.Results.Prefix(), req.Owner, req.ID)
	msgID := wire.ResultMsgID(req.Owner, req.ID, res.Delivery)
	for attempt := 1; ; attempt++ {
		pctx, cancel := context.WithTimeout(ctx, ackTimeout)
		msg := nats.NewMsg(subject)
		msg.Data = data
		_, err = s.w.js.PublishMsg(pctx, msg, jetstream.WithMsgID(msgID))
		cancel()
		if err == nil || attempt == 3 || ctx.Err() != nil {
			break
		}
		_ = sleep(ctx, time.Duration(attempt)*100*time.Millisecond, nil)
	}
	if err != nil {
		return fmt.Errorf("publish the result of %s: %w", req.ID, err)
	}
	if to := req.ReplySubject(s.w.cfg.Streams.Results.ReplyPrefix); s.replyAllowed(to) {
		if err := s.w.js.Conn().Publish(to, data); err != nil {
			// The caller can still Await the result in the stream.
			s.log.Warn("could not send the result to the reply subject; it is in the results stream", "request", req.ID, "err", err)
		}
	}
	return nil
}

// replyAllowed reports whether a request may have its result sent to subject.
func (s *session) replyAllowed(subject string) bool {
	return strings.HasPrefix(subject, s.w.cfg.Streams.Results.ReplyPrefix)
}

// resultOf returns the result already published for a request, if any: a
// delivery after a worker stopped between publishing a result and acknowledging
// finds it, and is acknowledged without being sent again.
func (s *session) resultOf(ctx context.Context, owner wire.Owner, id string) (wire.Result, bool) {
	ctx, cancel := context.WithTimeout(ctx, ackTimeout)
	defer cancel()
	rs := s.w.cfg.Streams.Results
	st, err := s.w.js.Stream(ctx, rs.Stream.Name)
	if err != nil {
		s.log.Warn("could not look for an earlier result; sending the request", "request", id, "err", err)
		return wire.Result{}, false
	}
	m, err := st.GetLastMsgForSubject(ctx, wire.ResultSubject(rs.Prefix(), owner, id))
	if err != nil {
		if !errors.Is(err, jetstream.ErrMsgNotFound) {
			s.log.Warn("could not look for an earlier result; sending the request", "request", id, "err", err)
		}
		return wire.Result{}, false
	}
	r, err := wire.DecodeResult(m.Data)
	return r, err == nil
}
