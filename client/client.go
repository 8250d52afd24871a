// Package client lets a Go service hand requests to a ratefleet fleet and get
// the upstream's answers back.
//
// A request names the upstream call to make (or none, for the upstream profile's
// default call); the fleet's workers send it through a key's rate limiter, sign
// it as the profile says, and publish its final outcome to the results stream:
// served (status, chosen headers and body) or buried (with the reason). Submit
// publishes a request and returns its id; Await waits for the result of an id,
// however long ago it was submitted (within the results stream's retention); Do
// submits with a reply subject and waits for the answer, the simplest call for a
// caller that waits anyway.
//
//	nc, _ := nats.Connect(nats.DefaultURL)
//	c, _ := client.New(nc)
//	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
//	defer cancel()
//	res, err := c.Do(ctx, client.Request{Call: &client.Call{Method: "POST", Path: "/api/private", Body: "pair=XBTUSD"}})
//	if err != nil { ... }
//	fmt.Println(res.Status, res.Body)
//
// Results are written before the request is acknowledged, so an answer the
// upstream gave is never lost; a request's result may rarely be published twice
// (see Result), and Await returns the first.
package client

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ratefleet/ratefleet"
	"github.com/ratefleet/ratefleet/internal/streams"
	"github.com/ratefleet/ratefleet/wire"
)

// Errors callers may branch on.
var (
	// ErrInvalidRequest: the request cannot be sent as it is; the message says why.
	ErrInvalidRequest = errors.New("invalid request")
	// ErrBadResult: a message on a results subject is not a result this client reads.
	ErrBadResult = wire.ErrBadResult
	// ErrDuplicate: a request with this id is already stored, or already has a
	// result; this submit stored nothing. The message says which request it was.
	ErrDuplicate = errors.New("duplicate request id")
)

// Call is the HTTP call a request makes upstream, relative to the profile's base
// URL: Method (GET when empty), Path, Query, Header, Body and ContentType. The
// worker adds the key, the nonce, the request id and the signature as the
// profile says, and refuses a call that sets any of them itself.
type Call = wire.Call

// Param is one query parameter or header of a Call.
type Param = wire.Param

// Result is a request's final outcome; see wire.Result.
type Result = wire.Result

// Outcomes a Result may have.
const (
	Served = wire.Served
	Buried = wire.Buried
)

// Request is what to submit.
type Request struct {
	// ID names the request end to end; a new UUID when empty. Submitting one ID
	// twice within the requests stream's duplicate window stores it once.
	ID string
	// TTL is how long the request may wait for a key; one second when 0. A
	// request not sent by then is buried as expired.
	TTL time.Duration
	// Call is the upstream call; nil makes the profile's default call.
	Call *Call
	// Weight is the units of the key's rate windows the call takes, where the
	// upstream counts weights; 0 means 1.
	Weight int
	// Payload is carried along, opaque to ratefleet.
	Payload json.RawMessage
}

// Client submits requests and awaits their results. It is safe for concurrent
// use.
type Client struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	streams *streams.Config
	now     func() time.Time
}

// Option changes a Client's defaults.
type Option func(*Client) error

// WithStreams uses the declarations of a streams.yaml other than the built-in
// one (the same file the fleet runs with).
func WithStreams(yaml []byte) Option {
	return func(c *Client) error {
		sc, err := streams.Parse("streams.yaml", yaml)
		if err != nil {
			return err
		}
		c.streams = sc
		return nil
	}
}

// New returns a client over nc. It does not create streams: the fleet's commands
// apply streams.yaml when they start.
func New(nc *nats.Conn, opts ...Option) (*Client, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("ratefleet client: open JetStream: %w", err)
	}
	c := &Client{nc: nc, js: js, now: time.Now}
	for _, o := range opts {
		if err := o(c); err != nil {
			return nil, fmt.Errorf("ratefleet client: %w", err)
		}
	}
	if c.streams == nil {
		if c.streams, err = streams.Parse("built-in streams.yaml", ratefleet.DefaultStreams()); err != nil {
			return nil, fmt.Errorf("ratefleet client: %w", err)
		}
	}
	return c, nil
}

// Submit publishes r to the requests stream and returns its id once the stream
// has stored it. An invalid request fails with ErrInvalidRequest and is not
// published. An id already used fails with ErrDuplicate, and nothing is
// stored: within the requests stream's duplicate window the stream says so;
// after it, a result written under the id does (an id names one request, and
// Await its one result).
func (c *Client) Submit(ctx context.Context, r Request) (string, error) {
	id, _, err := c.submit(ctx, r, "")
	return id, err
}

func (c *Client) submit(ctx context.Context, r Request, replyTo string) (string, uint64, error) {
	if r.TTL < 0 {
		return "", 0, fmt.Errorf("%w: negative time to live %s", ErrInvalidRequest, r.TTL)
	}
	ttl := wire.TTLOr(r.TTL)
	if err := wire.CheckTTL(ttl); err != nil {
		return "", 0, fmt.Errorf("%w: %w", ErrInvalidRequest, err)
	}
	rec := wire.New(c.now(), ttl, r.Payload)
	if r.ID != "" {
		rec.ID = r.ID
	}
	rec.Call, rec.Weight, rec.ReplyTo = r.Call, r.Weight, replyTo
	data, err := rec.Encode()
	if err != nil {
		return "", 0, fmt.Errorf("%w: %w", ErrInvalidRequest, err)
	}
	if r.ID != "" {
		if err := c.unused(ctx, rec.ID); err != nil {
			return "", 0, err
		}
	}
	msg := nats.NewMsg(c.streams.Requests.Stream.Subjects[0])
	msg.Data = data
	ack, err := c.js.PublishMsg(ctx, msg, jetstream.WithMsgID(rec.ID))
	if err != nil {
		return "", 0, fmt.Errorf("submit request %s: %w (is the fleet's NATS up, and the requests stream not full?)", rec.ID, err)
	}
	if ack.Duplicate {
		return "", 0, fmt.Errorf("%w: request %s is already stored (sequence %d in %s); this one, with whatever call it has, was not: submit it under a new id",
			ErrDuplicate, rec.ID, ack.Sequence, ack.Stream)
	}
	return rec.ID, ack.Sequence, nil
}

// unused fails with ErrDuplicate when id already has a result.
func (c *Client) unused(ctx context.Context, id string) error {
	rs := c.streams.Results
	st, err := c.js.Stream(ctx, rs.Stream.Name)
	if err != nil {
		return fmt.Errorf("submit request %s: read stream %s: %w", id, rs.Stream.Name, err)
	}
	m, err := st.GetLastMsgForSubject(ctx, wire.ResultSubject(rs.Prefix(), id))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("submit request %s: look for an earlier request with its id: %w", id, err)
	}
	prev, err := wire.DecodeResult(m.Data)
	if err != nil {
		return fmt.Errorf("%w: request id %s already has a result; submit under a new id", ErrDuplicate, id)
	}
	return fmt.Errorf("%w: request %s already ended (%s at %s, sequence %d); submit under a new id",
		ErrDuplicate, id, prev.Outcome, prev.At.Format(time.RFC3339), prev.Seq)
}

// Await waits for the result of request id until ctx ends. A result published
// before the call is found at once.
func (c *Client) Await(ctx context.Context, id string) (Result, error) {
	rs := c.streams.Results
	cons, err := c.js.OrderedConsumer(ctx, rs.Stream.Name, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{wire.ResultSubject(rs.Prefix(), id)},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return Result{}, fmt.Errorf("await result of %s: %w", id, err)
	}
	for {
		wait := 5 * time.Second
		if dl, ok := ctx.Deadline(); ok {
			wait = min(wait, max(time.Until(dl), time.Millisecond))
		}
		msg, err := cons.Next(jetstream.FetchMaxWait(wait))
		switch {
		case err == nil:
			if res, ok := c.first(ctx, cons, msg, id); ok {
				return c.withBody(ctx, res)
			}
		case ctx.Err() != nil:
			return Result{}, fmt.Errorf("await result of %s: %w (the request may still be waiting for a key; call Await again)", id, ctx.Err())
		case errors.Is(err, nats.ErrTimeout), errors.Is(err, jetstream.ErrNoMessages):
			continue
		default:
			return Result{}, fmt.Errorf("await result of %s: %w", id, err)
		}
	}
}

// withBody reads a body kept in the answers object store into res. It reads
// the object's chunks by direct gets, so a caller needs no consumer of its own.
func (c *Client) withBody(ctx context.Context, res Result) (Result, error) {
	if res.BodyObject == "" {
		return res, nil
	}
	bucket := c.streams.Results.Answers.Bucket
	body, err := readObject(ctx, c.js, bucket, res.BodyObject)
	if err != nil {
		return res, fmt.Errorf("read the %d-byte answer of %s from object store %s: %w", res.BodySize, res.ID, bucket, err)
	}
	res.SetBody(body)
	return res, nil
}

// readObject returns the object name of bucket, chunk by chunk, checked
// against its digest.
func readObject(ctx context.Context, js jetstream.JetStream, bucket, name string) ([]byte, error) {
	obs, err := js.ObjectStore(ctx, bucket)
	if err != nil {
		return nil, err
	}
	info, err := obs.GetInfo(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("object %s: %w", name, err)
	}
	st, err := js.Stream(ctx, "OBJ_"+bucket)
	if err != nil {
		return nil, err
	}
	chunks := fmt.Sprintf("$O.%s.C.%s", bucket, info.NUID)
	body := make([]byte, 0, info.Size)
	h := sha256.New()
	for seq, n := uint64(1), uint32(0); n < info.Chunks; n++ {
		m, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(chunks))
		if err != nil {
			return nil, fmt.Errorf("object %s: chunk %d of %d: %w", name, n+1, info.Chunks, err)
		}
		body, seq = append(body, m.Data...), m.Sequence+1
		h.Write(m.Data)
	}
	if got := jetstream.GetObjectDigestValue(h); uint64(len(body)) != info.Size || got != info.Digest {
		return nil, fmt.Errorf("object %s: %d bytes with digest %s, but its info says %d and %s", name, len(body), got, info.Size, info.Digest)
	}
	return body, nil
}

// first returns the result of id among msg and the results written after it
// already: a served result before a buried one (the server may give up on a
// delivery whose send then succeeds), else the first. Messages that are not a
// result of id are skipped.
func (c *Client) first(ctx context.Context, cons jetstream.Consumer, msg jetstream.Msg, id string) (wire.Result, bool) {
	var found *wire.Result
	for {
		if res, err := wire.DecodeResult(msg.Data()); err == nil && res.ID == id {
			if res.Outcome == wire.Served {
				return res, true
			}
			if found == nil {
				found = &res
			}
		}
		md, err := msg.Metadata()
		if err != nil || md.NumPending == 0 || ctx.Err() != nil {
			break
		}
		if msg, err = cons.Next(jetstream.FetchMaxWait(time.Second)); err != nil {
			break
		}
	}
	if found == nil {
		return wire.Result{}, false
	}
	return *found, true
}

// Do submits r with a reply subject of its own and waits for its result until
// ctx ends. When the request was submitted but no result came in time, the
// returned Result still carries its ID: Await(ctx, id) keeps waiting.
func (c *Client) Do(ctx context.Context, r Request) (Result, error) {
	inbox := c.streams.Results.ReplyPrefix + uuid.NewString()
	sub, err := c.nc.SubscribeSync(inbox)
	if err != nil {
		return Result{}, fmt.Errorf("subscribe to the reply subject: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	id, seq, err := c.submit(ctx, r, inbox)
	if err != nil {
		return Result{}, err
	}
	for {
		msg, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			return Result{ID: id}, fmt.Errorf("wait for the result of %s: %w (call Await with the id to keep waiting)", id, err)
		}
		// Only this request's result: anything else on the subject is not.
		if res, err := wire.DecodeResult(msg.Data); err == nil && res.ID == id && (res.Seq == 0 || res.Seq == seq) {
			return c.withBody(ctx, res)
		}
	}
}
