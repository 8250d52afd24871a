package settle

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ratefleet/ratefleet/internal/graveyard"
	"github.com/ratefleet/ratefleet/internal/streams"
	"github.com/ratefleet/ratefleet/wire"
)

// Results writes and finds results in the results stream, under each owner's
// subjects (wire.ResultSubject). A result names the stored request it ends
// (Result.Seq, the request's stream sequence): a request that reuses an id long
// after an earlier one ended is a request of its own.
//
// A served result is always written; a buried one only while the request has no
// result: it is published expecting the subject's last sequence it read, so a
// served result written meanwhile (the server gave up on a delivery whose send
// was still in flight) wins, and the last result of a request is its served one
// if it has one.
//
// A body too large for one message (the server's max payload, as the connection
// learnt it, or the results stream's max_msg_size) is written first in parts,
// under the result's own subject (wire.PartSubject), then the result naming
// them: the answer is kept whole, readable by whoever may read the result, and
// the request is never sent again because its result could not be written.
type Results struct {
	js    jetstream.JetStream
	cfg   *streams.Config
	limit int // the largest result message
}

// resultHeadroom is what a result message needs beyond its data: the subject
// and the headers.
const resultHeadroom = 4 << 10

// NewResults returns the results of the declarations in cfg.
func NewResults(js jetstream.JetStream, cfg *streams.Config) *Results {
	limit := int(js.Conn().MaxPayload())
	if m := cfg.Results.Stream.MaxMsgSize; m > 0 && int(m) < limit {
		limit = int(m)
	}
	return &Results{js: js, cfg: cfg, limit: limit - resultHeadroom}
}

// Of returns the result of owner's request stored at seq under id, if one is
// written.
func (r *Results) Of(ctx context.Context, owner wire.Owner, id string, seq uint64) (wire.Result, bool, error) {
	res, _, err := r.last(ctx, owner, id)
	if err != nil || res == nil || res.ID != id || res.Seq != seq {
		return wire.Result{}, false, err
	}
	return *res, true, nil
}

// last returns the last result written under owner's id and its sequence in the
// results stream, or nil and 0.
func (r *Results) last(ctx context.Context, owner wire.Owner, id string) (*wire.Result, uint64, error) {
	rs := r.cfg.Results
	st, err := r.js.Stream(ctx, rs.Stream.Name)
	if err != nil {
		return nil, 0, fmt.Errorf("read stream %s: %w", rs.Stream.Name, err)
	}
	m, err := st.GetLastMsgForSubject(ctx, wire.ResultSubject(rs.Prefix(), owner, id))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("look for the result of %s: %w", id, err)
	}
	res, err := wire.DecodeResult(m.Data)
	if err != nil {
		// Not one this version reads: the subject's last message all the same,
		// never this request's result.
		return &wire.Result{}, m.Sequence, nil
	}
	return &res, m.Sequence, nil
}

// Publish writes owner's served result res, and sends it to reply, when the
// declarations allow it (the request's reply_to, or its owner's reply subject),
// as the request's results setting says: a result sent but not kept that is too
// large for one message is kept all the same (in parts), so the caller can read
// it. A retried publish of one delivery's result is stored once (its message
// id).
func (r *Results) Publish(ctx context.Context, owner wire.Owner, reply string, mode wire.Results, res wire.Result) error {
	if !mode.Replied() {
		return nil
	}
	data, err := res.Encode()
	if err != nil {
		return err
	}
	if !mode.Kept() && len(data) <= r.limit {
		r.reply(reply, data)
		return nil
	}
	if len(data) > r.limit {
		if data, err = r.parts(ctx, owner, res); err != nil {
			return err
		}
	}
	msgID := servedMsgID(owner, res)
	if err := r.publish(ctx, wire.ResultSubject(r.cfg.Results.Prefix(), owner, res.ID), res.ID, data, nil, jetstream.WithMsgID(msgID)); err != nil {
		return err
	}
	r.reply(reply, data)
	return nil
}

// parts writes the body of res in parts, and returns the result to publish,
// which names them.
func (r *Results) parts(ctx context.Context, owner wire.Owner, res wire.Result) ([]byte, error) {
	body := res.Bytes()
	sum := sha256.Sum256(body)
	subject := wire.ResultSubject(r.cfg.Results.Prefix(), owner, res.ID)
	n := 0
	for off := 0; off < len(body); off += r.limit {
		part := body[off:min(off+r.limit, len(body))]
		ps := wire.PartSubject(subject, res.Seq, res.Delivery, n)
		h := nats.Header{wire.HeaderPart: []string{strconv.Itoa(n)}}
		if err := r.publish(ctx, ps, res.ID, part, h, jetstream.WithMsgID(ps)); err != nil {
			return nil, fmt.Errorf("keep the %d-byte answer of %s: part %d: %w", len(body), res.ID, n, err)
		}
		n++
	}
	res.Body, res.BodyBase64 = "", nil
	res.BodyParts, res.BodySize, res.BodyDigest = n, len(body), base64.RawURLEncoding.EncodeToString(sum[:])
	data, err := res.Encode()
	if err != nil {
		return nil, err
	}
	if len(data) > r.limit {
		return nil, fmt.Errorf("the result of %s is %d bytes without its body, over the %d a message may hold: keep fewer answer headers (answers.keep_headers)", res.ID, len(data), r.limit)
	}
	return data, nil
}

// Bury writes the buried result of the request e buried, unless the request
// already has one; reply as for Publish.
func (r *Results) Bury(ctx context.Context, reply string, e graveyard.Entry) error {
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
	subject := wire.ResultSubject(r.cfg.Results.Prefix(), e.Owner, e.RequestID)
	msgID := wire.ResultMsgID(e.Owner, e.RequestID, e.StreamSeq, "buried")
	for range 3 {
		prev, lastSeq, err := r.last(ctx, e.Owner, e.RequestID)
		if err != nil {
			return err
		}
		if prev != nil && prev.ID == e.RequestID && prev.Seq == e.StreamSeq {
			return nil // it has its result: a served one is never replaced
		}
		err = r.publish(ctx, subject, e.RequestID, data, nil, jetstream.WithMsgID(msgID), jetstream.WithExpectLastSequencePerSubject(lastSeq))
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
			continue // a result came meanwhile: read it
		}
		if err != nil {
			return err
		}
		r.reply(reply, data)
		return nil
	}
	return fmt.Errorf("publish the buried result of %s: results kept arriving under its id", e.RequestID)
}

func (r *Results) publish(ctx context.Context, subject, id string, data []byte, h nats.Header, opts ...jetstream.PublishOpt) error {
	var err error
	for attempt := 1; ; attempt++ {
		pctx, cancel := context.WithTimeout(ctx, ackTimeout)
		msg := nats.NewMsg(subject)
		msg.Data = data
		for k, v := range h {
			msg.Header[k] = v
		}
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

// reply sends a result to subject, if the declarations allow it. A caller that
// missed it finds the result in the stream.
func (r *Results) reply(subject string, data []byte) {
	if subject == "" || !strings.HasPrefix(subject, r.cfg.Results.ReplyPrefix) {
		return
	}
	_ = r.js.Conn().Publish(subject, data)
}
