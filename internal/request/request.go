// Package request defines the request record that travels from the producer through
// the requests stream to a worker: versioned JSON with an id, a creation time, a time
// to live and an optional opaque payload.
package request

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// Version is the schema version this package writes and reads.
const Version = 1

// DefaultTTL is the time to live of a request that names none.
const DefaultTTL = time.Second

// Errors returned by Decode; a worker sends a message that fails with either to the
// graveyard as malformed.
var (
	ErrMalformed          = errors.New("malformed request")
	ErrUnsupportedVersion = errors.New("unsupported request version")
)

// Request is one call to make upstream.
type Request struct {
	// V is the schema version.
	V int `json:"v"`
	// ID identifies the request end to end; it is also the message's Nats-Msg-Id.
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
}

// New returns a request with a fresh id, created at now.
func New(now time.Time, ttl time.Duration, payload json.RawMessage) Request {
	return Request{V: Version, ID: uuid.NewString(), Created: now, TTLms: ttl.Milliseconds(), Payload: payload}
}

// TTL returns the request's time to live.
func (r Request) TTL() time.Duration { return time.Duration(r.TTLms) * time.Millisecond }

// Deadline returns the instant after which the request is stale.
func (r Request) Deadline() time.Time { return r.Created.Add(r.TTL()) }

// Expired reports whether the request is stale at now.
func (r Request) Expired(now time.Time) bool { return !now.Before(r.Deadline()) }

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
	case r.V != Version:
		return fmt.Errorf("%w: version %d, this ratefleet reads version %d", ErrUnsupportedVersion, r.V, Version)
	case r.ID == "":
		return fmt.Errorf("%w: no id", ErrMalformed)
	case r.Created.IsZero():
		return fmt.Errorf("%w: request %s has no created time", ErrMalformed, r.ID)
	case r.TTLms <= 0:
		return fmt.Errorf("%w: request %s has ttl_ms %d, must be positive", ErrMalformed, r.ID, r.TTLms)
	}
	return nil
}

// Encode returns the request as JSON.
func (r Request) Encode() ([]byte, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encode request %s: %w", r.ID, err)
	}
	return b, nil
}

// Decode parses and validates a request. Unknown fields are an error, so a message
// written by something else is caught rather than half-read.
func Decode(data []byte) (Request, error) {
	var r Request
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return Request{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if dec.More() {
		return Request{}, fmt.Errorf("%w: trailing data after the request", ErrMalformed)
	}
	if err := r.Validate(); err != nil {
		return Request{}, err
	}
	return r, nil
}
