package producer

import (
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/ratefleet/ratefleet/wire"
)

// Item is one request a source yields and the earliest time to publish it.
type Item struct {
	// Due is when the request should go out; a time already past means at once.
	Due time.Time
	// Request is the request to publish, complete with its id.
	Request wire.Request
}

// Source yields the requests to publish, in order. The producer calls Next from one
// goroutine only, and only once it could publish the result, so a source that makes
// requests makes each one when it is about to go out.
//
// Next returns io.EOF when the source is done. An error that wraps *BadLineError
// concerns one input only: the producer skips it or stops, as configured. Any other
// error ends the run.
type Source interface {
	Next(now time.Time) (Item, error)
}

// Generator makes new requests, timed by a Shape. Each request is created at the
// time it is due, so its time to live counts from there: a request a Rate or
// Poisson shape owes after the producer was held back is already older when it
// goes out, as it would be for a client that made it on time.
type Generator struct {
	shape   Shape
	ttl     time.Duration
	payload json.RawMessage
	call    *wire.Call
	weight  int
	route   wire.Request // Key, Account, Label and Priority
	results wire.Results
}

// NewGenerator returns a source of requests with the given time to live and
// payload (nil for none), due when shape says.
func NewGenerator(shape Shape, ttl time.Duration, payload json.RawMessage) (*Generator, error) {
	if err := wire.CheckTTL(ttl); err != nil {
		return nil, fmt.Errorf("requests: %w", err)
	}
	if len(payload) > 0 && !json.Valid(payload) {
		return nil, fmt.Errorf("payload %q: not valid JSON", payload)
	}
	return &Generator{shape: shape, ttl: ttl, payload: payload}, nil
}

// Next returns a new request due when the shape says, or io.EOF once the shape is
// done.
func (g *Generator) Next(now time.Time) (Item, error) {
	due, ok := g.shape.Next(now)
	if !ok {
		return Item{}, io.EOF
	}
	r := wire.New(due, g.ttl, g.payload)
	if g.call != nil {
		c := *g.call
		r.Call = &c
	}
	r.Weight = g.weight
	r.Key, r.Account, r.Label, r.Priority = g.route.Key, g.route.Account, g.route.Label, g.route.Priority
	r.Results = g.results
	r.V = r.NeededVersion()
	return Item{Due: due, Request: r}, nil
}

// SetResults makes every later request's served result go where mode says
// (wire.Results; empty keeps it, the default).
func (g *Generator) SetResults(mode wire.Results) error {
	if err := mode.Check(); err != nil {
		return fmt.Errorf("the requests' %w", err)
	}
	g.results = mode
	return nil
}

// SetRoute makes every later request name the key, account or label (at most
// one) and priority of route; its other fields are not read.
func (g *Generator) SetRoute(route wire.Request) error {
	if err := route.CheckRoute(); err != nil {
		return fmt.Errorf("the requests' route: %w", err)
	}
	g.route = route
	return nil
}

// SetCall makes every later request carry call (nil for the profile's default
// call) and weight (0 for 1). It fails, saying why, for a call that could not be
// sent.
func (g *Generator) SetCall(call *wire.Call, weight int) error {
	if call != nil {
		if err := call.Validate(); err != nil {
			return fmt.Errorf("the requests' call: %w", err)
		}
	}
	if err := wire.CheckWeight(weight); err != nil {
		return fmt.Errorf("the requests' %w", err)
	}
	g.call, g.weight = call, weight
	return nil
}
