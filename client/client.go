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
// A request may name the key, account or label of the API keys that may send it,
// and a priority (Urgent before Batch); Cancel stops one of the owner's queued
// requests (docs/routing.md).
//
// Results are written before the request is acknowledged, so an answer the
// upstream gave is never lost; a request's result may rarely be published twice
// (see Result): Do returns the first to arrive, Await the one the results
// stream holds last.
//
// # Whose results
//
// A request belongs to the NATS user that submits it (its owner, wire.Owner):
// the client publishes it on the requests subject of that user, and the fleet
// sends its result only to that user's subjects, which NATS permissions let no
// other user read (docs/security.md). The owner is the connection's user (its
// user name, NKey public key or credentials name) unless WithOwner names it; a
// connection without a user submits requests of no owner. On a server with
// ratefleet's roles, connect with that user's inbox prefix,
// nats.CustomInboxPrefix(wire.InboxPrefix(user)): the user may receive answers
// there and nowhere else.
//
// The client creates no consumer. It waits on the owner's reply subject of the
// request and reads the results stream by direct get of the request's own
// subject, the one read NATS permissions can confine to a user's results.
package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ratefleet/ratefleet"
	"github.com/ratefleet/ratefleet/internal/results"
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
	// ErrEnded: Cancel found the request already ended (served, or buried);
	// it was not cancelled. The message says how it ended.
	ErrEnded = errors.New("request already ended")
)

// Priorities a Request may have; see wire.Priority.
const (
	Urgent = wire.Urgent
	Batch  = wire.Batch
)

// Where a served request's result may go; see Request.Results.
const (
	ResultsKeep  = wire.ResultsKeep
	ResultsReply = wire.ResultsReply
	ResultsNone  = wire.ResultsNone
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

	// Key, Account and Label route the request: at most one may be set, and
	// then only the API key of that name, a key of that account, or a key
	// carrying that label sends it (docs/routing.md). A route no key of the
	// fleet serves leaves the request queued until its time to live ends.
	Key, Account, Label string
	// Priority is Urgent or Batch (the default): a key takes urgent requests
	// first, and a waiting batch request at least once every
	// wire.BatchEvery requests.
	Priority wire.Priority
	// Results is where the result goes if the upstream serves the request:
	// ResultsKeep (the default, when empty) stores it and sends it to the
	// reply subject; ResultsReply only sends it, so only Do, which listens
	// before the request is stored, receives it; ResultsNone neither, for
	// Submit alone. Both save a store per request and give up
	// sending a request only once across a worker's crash
	// (docs/operating.md).
	Results wire.Results
}

// Client submits requests and awaits their results. It is safe for concurrent
// use.
type Client struct {
	nc       *nats.Conn
	js       jetstream.JetStream
	streams  *streams.Config
	owner    wire.Owner
	ownerSet bool
	now      func() time.Time
}

// recheck is how long a wait for the reply goes before the results stream is
// read again: a reply is core NATS, and is lost if the caller's connection
// drops at that moment; the result in the stream is not.
const recheck = 2 * time.Second

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

// WithOwner submits requests as NATS user (the name the server's permissions
// give it subjects by), instead of the connection's user; "" submits requests of
// no owner, as on a server without users.
func WithOwner(user string) Option {
	return func(c *Client) error {
		c.owner, c.ownerSet = wire.Anonymous, true
		if user == "" {
			return nil
		}
		o, err := wire.ParseOwner(user)
		if err != nil {
			return err
		}
		c.owner = o
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
	if !c.ownerSet {
		if user := wire.UserOf(&nc.Opts); user != "" {
			if c.owner, err = wire.ParseOwner(user); err != nil {
				return nil, fmt.Errorf("ratefleet client: the connection's user: %w; pass WithOwner with the name its permissions use", err)
			}
		}
	}
	if c.streams == nil {
		if c.streams, err = streams.Parse("built-in streams.yaml", ratefleet.DefaultStreams()); err != nil {
			return nil, fmt.Errorf("ratefleet client: %w", err)
		}
	}
	return c, nil
}

// Owner returns the owner the client submits requests as.
func (c *Client) Owner() wire.Owner { return c.owner }

// Submit publishes r to the requests stream and returns its id once the stream
// has stored it. An invalid request fails with ErrInvalidRequest and is not
// published. An id already used fails with ErrDuplicate, and nothing is
// stored: within the requests stream's duplicate window the stream says so;
// after it, a result written under the id does (an id names one request, and
// Await its one result).
func (c *Client) Submit(ctx context.Context, r Request) (string, error) {
	rec, data, err := c.record(r)
	if err != nil {
		return "", err
	}
	if err := c.unused(ctx, r.ID); err != nil {
		return "", err
	}
	_, err = c.publish(ctx, rec, data)
	return rec.ID, err
}

// unused fails with ErrDuplicate when id, given by the caller, already has a
// result (a fresh UUID cannot).
func (c *Client) unused(ctx context.Context, id string) error {
	if id == "" {
		return nil
	}
	prev, found, err := results.Get(ctx, c.nc, c.streams.Results, c.owner, id)
	if err != nil {
		return fmt.Errorf("submit request %s: look for an earlier request with its id: %w", id, err)
	}
	if found {
		return fmt.Errorf("%w: request %s already ended (%s at %s, sequence %d); submit under a new id",
			ErrDuplicate, id, prev.Outcome, prev.At.Format(time.RFC3339), prev.Seq)
	}
	return nil
}

// record builds and encodes the request record of r.
func (c *Client) record(r Request) (wire.Request, []byte, error) {
	if r.TTL < 0 {
		return wire.Request{}, nil, fmt.Errorf("%w: negative time to live %s", ErrInvalidRequest, r.TTL)
	}
	ttl := wire.TTLOr(r.TTL)
	if err := wire.CheckTTL(ttl); err != nil {
		return wire.Request{}, nil, fmt.Errorf("%w: %w", ErrInvalidRequest, err)
	}
	rec := wire.New(c.now(), ttl, r.Payload)
	if r.ID != "" {
		rec.ID = r.ID
	}
	rec.Call, rec.Weight = r.Call, r.Weight
	rec.Key, rec.Account, rec.Label, rec.Priority = r.Key, r.Account, r.Label, r.Priority
	rec.Results = r.Results
	rec.Owner = c.owner
	data, err := rec.Encode()
	if err != nil {
		return wire.Request{}, nil, fmt.Errorf("%w: %w", ErrInvalidRequest, err)
	}
	return rec, data, nil
}

// publish stores a request record on the owner's requests subject of its
// priority and route and returns its sequence in the requests stream.
func (c *Client) publish(ctx context.Context, rec wire.Request, data []byte) (uint64, error) {
	id := rec.ID
	msg := nats.NewMsg(rec.Subject(c.streams.Requests.Subject()))
	msg.Data = data
	ack, err := c.js.PublishMsg(ctx, msg, jetstream.WithMsgID(c.owner.MsgID(id)))
	if err != nil {
		return 0, fmt.Errorf("submit request %s: %w (is the fleet's NATS up, the requests stream not full, and %s allowed to this user?)", id, err, msg.Subject)
	}
	if ack.Duplicate {
		return 0, fmt.Errorf("%w: request %s is already stored (sequence %d in %s); this one, with whatever call it has, was not: submit it under a new id",
			ErrDuplicate, id, ack.Sequence, ack.Stream)
	}
	return ack.Sequence, nil
}

// Await waits for the result of request id until ctx ends. A result published
// before the call is found at once.
func (c *Client) Await(ctx context.Context, id string) (Result, error) {
	sub, err := c.subscribe(id)
	if err != nil {
		return Result{}, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	res, err := c.wait(ctx, sub, id, 0)
	if err != nil {
		return Result{}, fmt.Errorf("await result of %s: %w", id, err)
	}
	return res, nil
}

// Do submits r and waits for its result until ctx ends. When the request was
// submitted but no result came in time, the returned Result still carries its
// ID: Await(ctx, id) keeps waiting.
func (c *Client) Do(ctx context.Context, r Request) (Result, error) {
	if r.Results == wire.ResultsNone {
		return Result{}, fmt.Errorf("%w: results none sends no result for Do to wait for; use Submit", ErrInvalidRequest)
	}
	rec, data, err := c.record(r)
	if err != nil {
		return Result{}, err
	}
	// Subscribed before the request is stored, so the reply cannot come first.
	sub, err := c.subscribe(rec.ID)
	if err != nil {
		return Result{}, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := c.unused(ctx, r.ID); err != nil {
		return Result{}, err
	}
	seq, err := c.publish(ctx, rec, data)
	if err != nil {
		return Result{}, err
	}
	res, err := c.wait(ctx, sub, rec.ID, seq)
	if err != nil {
		return Result{ID: rec.ID}, fmt.Errorf("wait for the result of %s: %w (call Await with the id to keep waiting)", rec.ID, err)
	}
	return res, nil
}

// subscribe subscribes to the owner's reply subject of request id.
func (c *Client) subscribe(id string) (*nats.Subscription, error) {
	subject := wire.ReplySubject(c.streams.Results.ReplyPrefix, c.owner, id)
	sub, err := c.nc.SubscribeSync(subject)
	if err != nil {
		return nil, fmt.Errorf("subscribe to the reply subject %s: %w", subject, err)
	}
	return sub, nil
}

// wait returns the result of request id: from the results stream if it is
// there, else the first reply on sub that is that result. A message on the
// reply subject that is not it (another id, not a result, or a message
// delivered there under another subject, as a JetStream consumer someone
// pointed at the subject delivers it) is ignored, not an error: the real result
// still arrives or is found in the stream, and an error would let anyone who
// can put a message there end the caller's wait.
func (c *Client) wait(ctx context.Context, sub *nats.Subscription, id string, seq uint64) (Result, error) {
	for {
		res, found, err := results.Get(ctx, c.nc, c.streams.Results, c.owner, id)
		if err != nil {
			return Result{}, err
		}
		if found && (seq == 0 || res.Seq == seq) {
			return c.withBody(ctx, res)
		}
		for {
			wctx, cancel := context.WithTimeout(ctx, recheck)
			msg, err := sub.NextMsgWithContext(wctx)
			cancel()
			if err == nil {
				if res, ok := accept(msg, sub.Subject, id); ok && (seq == 0 || res.Seq == seq) {
					return c.withBody(ctx, res)
				}
				continue
			}
			if ctx.Err() != nil {
				return Result{}, fmt.Errorf("%w (the request may still be waiting for a key; call Await again)", ctx.Err())
			}
			if errors.Is(err, context.DeadlineExceeded) {
				break // read the stream again
			}
			return Result{}, fmt.Errorf("wait for the reply: %w", err)
		}
	}
}

// withBody reads a body that travelled in parts into res.
func (c *Client) withBody(ctx context.Context, res Result) (Result, error) {
	if res.BodyParts == 0 {
		return res, nil
	}
	body, err := results.Body(ctx, c.nc, c.streams.Results, c.owner, res)
	if err != nil {
		return res, err
	}
	res.SetBody(body)
	return res, nil
}

// accept returns msg as the result of request id, if it is one, sent to
// subject itself.
func accept(msg *nats.Msg, subject, id string) (Result, bool) {
	if msg.Subject != subject {
		return Result{}, false
	}
	res, err := wire.DecodeResult(msg.Data)
	if err != nil || res.ID != id {
		return Result{}, false
	}
	return res, true
}
