package settle

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ratefleet/ratefleet/internal/graveyard"
	"github.com/ratefleet/ratefleet/internal/streams"
	"github.com/ratefleet/ratefleet/wire"
)

// Results writes and finds results in the results stream. A result names the
// stored request it ends (Result.Seq, the request's stream sequence): a request
// that reuses an id long after an earlier one ended is a request of its own.
//
// A served result is always written; a buried one only while the request has no
// result: it is published expecting the subject's last sequence it read, so a
// served result written meanwhile (the server gave up on a delivery whose send
// was still in flight) wins, and a reader that finds both takes the served one.
//
// A result larger than a message may be (the server's max payload, as the
// connection learnt it, or the results stream's max_msg_size) keeps its body in
// the answers object store, and names it: the answer is kept whole, and the
// request is never sent again because its result could not be written.
type Results struct {
	js    jetstream.JetStream
	cfg   *streams.Config
	limit int // the largest result message
}

// resultHeadroom is what a result message needs beyond its data: the subject
// and the message id header.
const resultHeadroom = 4 << 10

// NewResults returns the results of the declarations in cfg.
func NewResults(js jetstream.JetStream, cfg *streams.Config) *Results {
	limit := int(js.Conn().MaxPayload())
	if m := cfg.Results.Stream.MaxMsgSize; m > 0 && int(m) < limit {
		limit = int(m)
	}
	return &Results{js: js, cfg: cfg, limit: limit - resultHeadroom}
}

// keepLarge moves the body of res to the answers object store when its result
// would not fit in a message, and returns the result to publish.
func (r *Results) keepLarge(ctx context.Context, res wire.Result, data []byte) ([]byte, error) {
	if len(data) <= r.limit {
		return data, nil
	}
	body := res.Bytes()
	// A name no one can guess: only the result, read by its caller, names it.
	name := fmt.Sprintf("%s/%d/%d/%s", wire.Token(res.ID), res.Seq, res.Delivery, nuid.Next())
	obs, err := r.js.ObjectStore(ctx, r.cfg.Results.Answers.Bucket)
	if err != nil {
		return nil, fmt.Errorf("keep the %d-byte answer of %s: open object store %s: %w", len(body), res.ID, r.cfg.Results.Answers.Bucket, err)
	}
	if _, err := obs.PutBytes(ctx, name, body); err != nil {
		return nil, fmt.Errorf("keep the %d-byte answer of %s in object store %s: %w", len(body), res.ID, r.cfg.Results.Answers.Bucket, err)
	}
	res.Body, res.BodyBase64, res.BodyObject, res.BodySize = "", nil, name, len(body)
	data, err = res.Encode()
	if err != nil {
		return nil, err
	}
	if len(data) > r.limit {
		return nil, fmt.Errorf("the result of %s is %d bytes without its body, over the %d a message may hold: keep fewer answer headers (answers.keep_headers)", res.ID, len(data), r.limit)
	}
	return data, nil
}

// Of returns the result of the request stored at seq under id, if one is
// written.
func (r *Results) Of(ctx context.Context, id string, seq uint64) (wire.Result, bool, error) {
	res, _, err := r.last(ctx, id)
	if err != nil || res == nil || res.Seq != seq {
		return wire.Result{}, false, err
	}
	return *res, true, nil
}

// last returns the last result written under id and its sequence in the results
// stream, or nil and 0.
func (r *Results) last(ctx context.Context, id string) (*wire.Result, uint64, error) {
	rs := r.cfg.Results
	st, err := r.js.Stream(ctx, rs.Stream.Name)
	if err != nil {
		return nil, 0, fmt.Errorf("read stream %s: %w", rs.Stream.Name, err)
	}
	m, err := st.GetLastMsgForSubject(ctx, wire.ResultSubject(rs.Prefix(), id))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("look for the result of %s: %w", id, err)
	}
	res, err := wire.DecodeResult(m.Data)
	if err != nil {
		// Not ours to read: a result of some other version. Treat it as the
		// subject's last message, never as this request's result.
		return &wire.Result{}, m.Sequence, nil
	}
	return &res, m.Sequence, nil
}

// Publish writes a served result, and sends it to replyTo if the request has
// one under the declared reply prefix. A retried publish of one delivery's
// result is stored once (its message id).
func (r *Results) Publish(ctx context.Context, replyTo string, res wire.Result) error {
	data, err := res.Encode()
	if err != nil {
		return err
	}
	if data, err = r.keepLarge(ctx, res, data); err != nil {
		return err
	}
	msgID := fmt.Sprintf("%s/%d/%d", wire.Token(res.ID), res.Seq, res.Delivery)
	if err := r.publish(ctx, res.ID, data, jetstream.WithMsgID(msgID)); err != nil {
		return err
	}
	r.reply(replyTo, data)
	return nil
}

// Bury writes the buried result of the request e buried, unless the request
// already has one; replyTo as for Publish.
func (r *Results) Bury(ctx context.Context, replyTo string, e graveyard.Entry) error {
	if e.RequestID == "" {
		return nil // an undecodable request has no id to write a result under
	}
	res := wire.Result{
		ID: e.RequestID, Seq: e.StreamSeq, Outcome: wire.Buried, Reason: e.Reason, Error: e.Error,
		Key: e.Key, Worker: e.Worker, Delivery: e.Deliveries, At: e.BuriedAt,
	}
	if n := len(e.Attempts); n > 0 {
		res.Status = e.Attempts[n-1].Status
		if res.Key == "" {
			res.Key = e.Attempts[n-1].Key
		}
	}
	data, err := res.Encode()
	if err != nil {
		return err
	}
	for range 3 {
		prev, lastSeq, err := r.last(ctx, e.RequestID)
		if err != nil {
			return err
		}
		if prev != nil && prev.Seq == e.StreamSeq && prev.ID == e.RequestID {
			return nil // it has its result: a served one is never replaced
		}
		msgID := fmt.Sprintf("%s/%d/buried", wire.Token(e.RequestID), e.StreamSeq)
		err = r.publish(ctx, e.RequestID, data, jetstream.WithMsgID(msgID), jetstream.WithExpectLastSequencePerSubject(lastSeq))
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
			continue // a result came meanwhile: read it
		}
		if err != nil {
			return err
		}
		r.reply(replyTo, data)
		return nil
	}
	return fmt.Errorf("publish the buried result of %s: results kept arriving under its id", e.RequestID)
}

func (r *Results) publish(ctx context.Context, id string, data []byte, opts ...jetstream.PublishOpt) error {
	subject := wire.ResultSubject(r.cfg.Results.Prefix(), id)
	var err error
	for attempt := 1; ; attempt++ {
		pctx, cancel := context.WithTimeout(ctx, ackTimeout)
		msg := nats.NewMsg(subject)
		msg.Data = data
		_, err = r.js.PublishMsg(pctx, msg, opts...)
		cancel()
		var apiErr *jetstream.APIError
		if err == nil || errors.As(err, &apiErr) || attempt == 3 || ctx.Err() != nil {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(attempt) * 100 * time.Millisecond):
		}
	}
	if err != nil {
		return fmt.Errorf("publish the result of %s: %w", id, err)
	}
	return nil
}

// reply sends a result to the request's reply subject, if it has one the
// declarations allow. A caller that missed it finds the result in the stream.
func (r *Results) reply(subject string, data []byte) {
	if subject == "" || !r.ReplyAllowed(subject) {
		return
	}
	_ = r.js.Conn().Publish(subject, data)
}

// ReplyAllowed reports whether a request may have its result sent to subject.
func (r *Results) ReplyAllowed(subject string) bool {
	return strings.HasPrefix(subject, r.cfg.Results.ReplyPrefix)
}
