// Package wire is ratefleet's format on NATS: what a caller publishes to the
// requests stream (Request, with its Call), what the fleet publishes back
// (Result), the subjects they travel on and the versions of each record, with
// the rules for a request's time to live and weight in one place. Any NATS
// client may speak it; docs/request.schema.json and docs/result.schema.json give
// it as JSON Schema.
//
// # Versions
//
// A request is written in the lowest version that carries its fields: a request
// with neither a call, a weight nor a reply subject is still version 1, which every
// worker reads, so a rolling upgrade serves it wherever it lands; version 3
// adds a route (key, account or label) and a priority, which also travel in its
// subject (Request.Subject, PlaceOf). A worker meeting
// a record of a version above its own gets ErrUnsupportedVersion from Decode,
// whatever fields the record holds: it leaves the request for a newer worker (and
// buries it, with that reason, at its last delivery), never half-reads it.
// # Owners
//
// A request belongs to the NATS user that published it, and only that user may
// read its result or receive its reply. The record cannot say whose it is: anyone
// who may publish a request may write any field. The subject can, because NATS
// permissions name subjects: user alice may publish only to
// <requests subject>.alice (and <requests subject>.alice.<priority>.<route>, see
// PlaceOf), so the requests stream stores her requests under those subjects and
// nobody else's. A worker takes the owner from the subject the request
// was stored under (DecodeFrom), never from the record, and derives from it where
// the result and the reply go (ResultSubject, ReplySubject): alice may read only
// <results prefix>alice.> and subscribe only to <reply prefix>alice.>.
//
// A request published on the bare requests subject has no owner (Anonymous): that
// is what a server without users sees, and what ratefleet wrote before owners
// existed. Its result and reply subjects carry no owner token, so they never fall
// inside any user's subjects.
package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

// Version is the highest schema version this package writes and reads.
const Version = 4

// DefaultTTL is the time to live of a request that names none.
const DefaultTTL = time.Second

// MaxWeight bounds a request's weight.
const MaxWeight = 1000

// MaxIDBytes bounds a request id.
const MaxIDBytes = 256

// validID reports whether id may name a request: it travels in message headers
// (Nats-Msg-Id), where a CR or LF could forge one.
func validID(id string) bool {
	return len(id) <= MaxIDBytes && utf8.ValidString(id) && validValue(id)
}

// MinTTL is the shortest time to live a request may have.
const MinTTL = time.Millisecond

// TTLOr returns ttl, or DefaultTTL when ttl is not positive: the one place where
// "no time to live" becomes the default.
func TTLOr(ttl time.Duration) time.Duration {
	if ttl <= 0 {
		return DefaultTTL
	}
	return ttl
}

// CheckTTL checks a time to live a caller asks for (after TTLOr).
func CheckTTL(ttl time.Duration) error {
	if ttl < MinTTL {
		return fmt.Errorf("time to live %s: must be at least %s", ttl, MinTTL)
	}
	return nil
}

// MaxCost bounds a request's cost in one dimension.
const MaxCost = 100_000_000

// CheckCosts checks a request's costs: each names a dimension (lower-case
// letters, digits and _, at most 32) and is from 0 to MaxCost.
func CheckCosts(c map[string]int64) error {
	for name, v := range c {
		if !validDimension(name) {
			return fmt.Errorf("costs: %q is not a dimension's name (lower-case letters, digits and _, at most 32)", name)
		}
		if v < 0 || v > MaxCost {
			return fmt.Errorf("costs.%s: %d must be from 0 to %d", name, v, MaxCost)
		}
	}
	return nil
}

func validDimension(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
			return false
		}
	}
	return true
}

// CheckWeight checks a request's weight: 0 (meaning 1) to MaxWeight. A profile
// may bound it lower (profile.Rate.MaxWeight).
func CheckWeight(w int) error {
	if w < 0 || w > MaxWeight {
		return fmt.Errorf("weight %d: must be from 1 to %d (0 means 1)", w, MaxWeight)
	}
	return nil
}

// Errors returned by Decode and Validate; a worker sends a message that fails with
// ErrMalformed to the graveyard as malformed, and leaves one that fails with
// ErrUnsupportedVersion for a newer worker.
var (
	ErrMalformed          = errors.New("malformed request")
	ErrUnsupportedVersion = errors.New("unsupported request version")
)

// Request is one call to make upstream.
type Request struct {
	// V is the schema version.
	V int `json:"v"`
	// ID identifies the request end to end; with its owner it is the message's
	// Nats-Msg-Id (Owner.MsgID).
	ID string `json:"id"`
	// Created is when the request was made; its time to live counts from here.
	Created time.Time `json:"created"`
	// TTLms is the time to live in milliseconds: a request not sent by
	// Created+TTL is stale and is never sent.
	TTLms int64 `json:"ttl_ms"`
	// Payload is opaque to ratefleet and carried as it came.
	Payload json.RawMessage `json:"payload,omitempty"`
	// ReplayOf is the id of the graveyard entry this request replays, if any.
	ReplayOf string `json:"replay_of,omitempty"`

	// Call is the upstream call to make (version 2); nil makes the upstream
	// profile's default call.
	Call *Call `json:"call,omitempty"`
	// Weight is how many units of the key's rate windows the call takes, where
	// the upstream counts weights (version 2); 0 means 1.
	Weight int `json:"weight,omitempty"`
	// Costs is what the call costs in what the upstream counts besides requests
	// and weight (version 3), by dimension: input_tokens, output_tokens (the most
	// the answer may use, such as max_tokens), orders... The profile's calls
	// table, where it names a cost, takes precedence.
	Costs map[string]int64 `json:"costs,omitempty"`
	// ReplyTo is a NATS subject the result is also published to, for a caller
	// that waits (version 2); it must lie under the declared reply prefix, in
	// the owner's subjects there (Owner.MayReplyTo). Without it the result goes
	// to the owner's ReplySubject.
	ReplyTo string `json:"reply_to,omitempty"`

	// Key, Account and Label route the request (version 3): at most one is
	// set, and only the key of that name, a key of that account, or a key
	// carrying that label sends it (Route); none, any key does.
	Key     string `json:"key,omitempty"`
	Account string `json:"account,omitempty"`
	Label   string `json:"label,omitempty"`
	// Priority is the request's class, urgent or batch (version 3); empty
	// means DefaultPriority.
	Priority Priority `json:"priority,omitempty"`
	// Results says where the result goes if the upstream serves the request
	// (version 4); empty means ResultsKeep. A buried request's result is
	// always kept and sent.
	Results Results `json:"results,omitempty"`

	// Owner is the NATS user that published the request, taken from the
	// subject the requests stream stored it under (DecodeFrom). It is never read
	// from or written to the record, whose fields anyone who publishes can set.
	Owner Owner `json:"-"`
}

// New returns a request with a fresh id, created at now.
func New(now time.Time, ttl time.Duration, payload json.RawMessage) Request {
	return Request{V: 1, ID: uuid.NewString(), Created: now, TTLms: ttl.Milliseconds(), Payload: payload}
}

// TTL returns the request's time to live.
func (r Request) TTL() time.Duration { return time.Duration(r.TTLms) * time.Millisecond }

// Deadline returns the instant after which the request is stale.
func (r Request) Deadline() time.Time { return r.Created.Add(r.TTL()) }

// Expired reports whether the request is stale at now.
func (r Request) Expired(now time.Time) bool { return !now.Before(r.Deadline()) }

// Units returns the request's weight, at least 1.
func (r Request) Units() int { return max(r.Weight, 1) }

// NeededVersion is the lowest version that carries the request's fields.
func (r Request) NeededVersion() int {
	if r.Results != "" {
		return 4
	}
	if len(r.Costs) > 0 || r.Key != "" || r.Account != "" || r.Label != "" || r.Priority != "" {
		return 3
	}
	if r.Call != nil || r.Weight != 0 || r.ReplyTo != "" {
		return 2
	}
	return 1
}

// StaleAt returns the instant after which the request is stale, given when the
// server stored it: its time to live counts from the earlier of its created time
// (the producer's clock) and stored (the server's), so a producer clock running
// ahead cannot extend a request's life.
func (r Request) StaleAt(stored time.Time) time.Time {
	from := r.Created
	if !stored.IsZero() && stored.Before(from) {
		from = stored
	}
	return from.Add(r.TTL())
}

// ExpiredAt reports whether the request, stored by the server at stored, is
// stale at now.
func (r Request) ExpiredAt(stored, now time.Time) bool { return !now.Before(r.StaleAt(stored)) }

// Validate checks the fields a worker relies on.
func (r Request) Validate() error {
	switch {
	case r.V > Version || r.V < 1:
		return fmt.Errorf("%w: version %d, this ratefleet reads versions 1 to %d; a newer worker must serve it", ErrUnsupportedVersion, r.V, Version)
	case r.V < r.NeededVersion():
		return fmt.Errorf("%w: request %s is version %d but has fields of version %d (call, weight and reply_to need 2; costs, key, account, label and priority 3; results 4)", ErrMalformed, r.ID, r.V, r.NeededVersion())
	case r.ID == "":
		return fmt.Errorf("%w: no id", ErrMalformed)
	case !validID(r.ID):
		// It travels in message headers (Nats-Msg-Id): a CR or LF there could
		// forge one.
		return fmt.Errorf("%w: request id %q: must be UTF-8 of at most %d bytes without control characters", ErrMalformed, r.ID, MaxIDBytes)
	case r.Created.IsZero():
		return fmt.Errorf("%w: request %s has no created time", ErrMalformed, r.ID)
	case r.TTLms <= 0:
		return fmt.Errorf("%w: request %s has ttl_ms %d, must be positive", ErrMalformed, r.ID, r.TTLms)
	}
	if err := CheckWeight(r.Weight); err != nil {
		return fmt.Errorf("%w: request %s: %w", ErrMalformed, r.ID, err)
	}
	if err := CheckCosts(r.Costs); err != nil {
		return fmt.Errorf("%w: request %s: %w", ErrMalformed, r.ID, err)
	}
	if r.Call != nil {
		if err := r.Call.Validate(); err != nil {
			return fmt.Errorf("%w: request %s: %w", ErrMalformed, r.ID, err)
		}
	}
	if err := r.CheckRoute(); err != nil {
		return fmt.Errorf("%w: request %s: %w", ErrMalformed, r.ID, err)
	}
	if r.ReplyTo != "" {
		if err := ValidSubject(r.ReplyTo); err != nil {
			return fmt.Errorf("%w: request %s: reply_to: %w", ErrMalformed, r.ID, err)
		}
	}
	if err := r.Results.Check(); err != nil {
		return fmt.Errorf("%w: request %s: %w", ErrMalformed, r.ID, err)
	}
	return nil
}

// Results is where a served request's result goes.
type Results string

// Where a served request's result goes.
const (
	// ResultsKeep stores it in the results stream, where the caller can read
	// it at any time, and sends it to the reply subject. The stored result is
	// also what keeps a request from being sent twice: a delivery after a
	// worker stopped between the answer and the acknowledgement finds it.
	ResultsKeep Results = "keep"
	// ResultsReply only sends it to the reply subject: a caller that was not
	// listening never learns it, and a request delivered again after its
	// worker stopped between the answer and the acknowledgement (a crash, a
	// lost connection) is sent again. It saves the store: a write and its
	// confirmation per request.
	ResultsReply Results = "reply"
	// ResultsNone neither stores nor sends it, with what ResultsReply gives up.
	ResultsNone Results = "none"
)

// Check returns an error unless r is empty or one of the known values.
func (r Results) Check() error {
	switch r {
	case "", ResultsKeep, ResultsReply, ResultsNone:
		return nil
	}
	return fmt.Errorf("results %q: want keep, reply or none", string(r))
}

// Kept reports whether a served result is stored in the results stream.
func (r Results) Kept() bool { return r == "" || r == ResultsKeep }

// Replied reports whether a served result is sent to the reply subject.
func (r Results) Replied() bool { return r != ResultsNone }

// Encode returns the request as JSON, in version V or, if higher, the lowest
// version that carries its fields.
func (r Request) Encode() ([]byte, error) {
	r.V = max(r.V, r.NeededVersion())
	if err := r.Validate(); err != nil {
		return nil, err
	}
	b, err := r.appendJSON(make([]byte, 0, r.sizeHint()))
	if err != nil {
		return nil, fmt.Errorf("encode request %s: %w", r.ID, err)
	}
	return b, nil
}

// sizeHint is about how long r's JSON is, so that Encode allocates once unless
// much is escaped.
func (r Request) sizeHint() int {
	n := 192 + len(r.ID) + len(r.Payload) + len(r.ReplayOf) + len(r.ReplyTo) + len(r.Key) + len(r.Account) + len(r.Label)
	for name := range r.Costs {
		n += len(name) + 24
	}
	if c := r.Call; c != nil {
		n += 64 + len(c.Method) + len(c.Path) + len(c.Body) + len(c.ContentType)
		for _, ps := range [][]Param{c.Query, c.Header} {
			for _, p := range ps {
				n += 24 + len(p.Name) + len(p.Value)
			}
		}
	}
	return n
}

// appendJSON appends r as JSON: byte for byte what encoding/json makes of it,
// written without reflection (a request is encoded for every one published).
func (r Request) appendJSON(b []byte) ([]byte, error) {
	var err error
	b = append(b, `{"v":`...)
	b = strconv.AppendInt(b, int64(r.V), 10)
	b = append(b, `,"id":`...)
	b = appendString(b, r.ID)
	b = append(b, `,"created":`...)
	if b, err = appendTime(b, r.Created); err != nil {
		return nil, err
	}
	b = append(b, `,"ttl_ms":`...)
	b = strconv.AppendInt(b, r.TTLms, 10)
	if len(r.Payload) > 0 {
		b = append(b, `,"payload":`...)
		if b, err = appendRaw(b, r.Payload); err != nil {
			return nil, fmt.Errorf("payload: %w", err)
		}
	}
	b = appendField(b, "replay_of", r.ReplayOf)
	if r.Call != nil {
		b = append(b, `,"call":`...)
		b = r.Call.appendJSON(b)
	}
	if r.Weight != 0 {
		b = append(b, `,"weight":`...)
		b = strconv.AppendInt(b, int64(r.Weight), 10)
	}
	if len(r.Costs) > 0 {
		b = append(b, `,"costs":{`...)
		for i, name := range slices.Sorted(maps.Keys(r.Costs)) {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, name)
			b = append(b, ':')
			b = strconv.AppendInt(b, r.Costs[name], 10)
		}
		b = append(b, '}')
	}
	b = appendField(b, "reply_to", r.ReplyTo)
	b = appendField(b, "key", r.Key)
	b = appendField(b, "account", r.Account)
	b = appendField(b, "label", r.Label)
	b = appendField(b, "priority", string(r.Priority))
	b = appendField(b, "results", string(r.Results))
	return append(b, '}'), nil
}

// Decode parses and validates a request; a record that parses but breaks a rule
// comes back as read, with the error. The version is read first, so a record
// of a newer version fails with ErrUnsupportedVersion whatever it holds; then
// unknown fields are an error, so a message written by something else is caught
// rather than half-read.
func Decode(data []byte) (Request, error) {
	r, plain := decodePlain(data)
	var err error
	if !plain {
		r, err = decodeJSON(data)
	}
	if err != nil || r.V > Version {
		// One parse in the common case; only a record that does not read as
		// this version's is read again for its version alone.
		var head struct {
			V  int    `json:"v"`
			ID string `json:"id"`
		}
		if herr := json.Unmarshal(data, &head); herr == nil && head.V > Version {
			return Request{ID: head.ID}, fmt.Errorf("%w: version %d, this ratefleet reads versions 1 to %d; a newer worker must serve it", ErrUnsupportedVersion, head.V, Version)
		}
	}
	if err != nil {
		return Request{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if err := r.Validate(); err != nil {
		// What was read comes back with the error, so a request with a valid
		// id can be buried with a result its caller reads.
		if r.ID == "" || !validID(r.ID) {
			return Request{}, err
		}
		return r, err
	}
	return r, nil
}

// decodeJSON reads data as a request with encoding/json, unknown fields and
// trailing data refused.
func decodeJSON(data []byte) (Request, error) {
	var r Request
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	err := dec.Decode(&r)
	if err == nil && dec.More() {
		err = errors.New("trailing data after the request")
	}
	return r, err
}
