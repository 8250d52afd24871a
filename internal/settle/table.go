package settle

import (
	"errors"

	"github.com/ratefleet/ratefleet/internal/profile"
	"github.com/ratefleet/ratefleet/internal/upstream"
	"github.com/ratefleet/ratefleet/wire"
)

// Outcome is what one answer class means for each party: what the limiter is
// told, what the stats count, what happens to the key and to the message, and,
// when the message ends, the result the caller reads. Of is the only place that
// decides it; the name of an outcome is its class's name everywhere (stats,
// attempt logs, metrics), and a request buried after it carries it in its
// result's error.
type Outcome struct {
	// Name is the outcome's name: the class's, and the stats result.
	Name string
	// Report is what the limiter is told.
	Report Report
	// Key is what happens to the key.
	Key KeyAction
	// Msg is what happens to the request's message.
	Msg MsgAction
}

// Report is how the limiter learns what became of a send.
type Report int

// The reports.
const (
	Answered  Report = iota // the upstream's own answer: it arrived by then
	Rejected                // a 429: the limiter's model was wrong
	Inverted                // a 400: nonces arrived out of order, evidence for the order rule
	Lost                    // no answer: it may arrive until it left + the arrival horizon (or nowhere, if no byte left)
	LostUntil               // a gateway answered: it may arrive until the answer + the gateway hold
)

// KeyAction is what happens to the key.
type KeyAction int

// The key actions.
const (
	KeyNothing   KeyAction = iota
	KeyNewNonces           // a 400: the upstream saw a nonce at least as high; take a fresh block
	KeyCount429            // count the 429 in key state before the key sends again
	KeyUnusable            // the upstream refused the key for good
	KeyLeaseLost           // the lease could no longer cover a send: stop sending on the key
)

// MsgAction is what happens to the request's message.
type MsgAction int

// The message actions.
const (
	MsgServe MsgAction = iota // done: publish the served result, then acknowledge
	MsgRetry                  // a failed attempt: record it, NAK with the retry delay, or bury at the last delivery
	MsgBack                   // not an attempt: NAK at once for another key
)

// Of returns what an answer of class c means.
func Of(c upstream.Class) Outcome {
	switch c {
	case upstream.OK:
		return Outcome{c.String(), Answered, KeyNothing, MsgServe}
	case upstream.RateLimited:
		return Outcome{c.String(), Rejected, KeyCount429, MsgRetry}
	case upstream.BadNonce:
		return Outcome{c.String(), Inverted, KeyNewNonces, MsgRetry}
	case upstream.KeyUnusable:
		return Outcome{c.String(), Answered, KeyUnusable, MsgRetry}
	case upstream.ServerError:
		return Outcome{c.String(), Answered, KeyNothing, MsgRetry}
	case upstream.Gateway:
		return Outcome{c.String(), LostUntil, KeyNothing, MsgRetry}
	case upstream.Timeout:
		return Outcome{c.String(), Lost, KeyNothing, MsgRetry}
	case upstream.Fenced:
		return Outcome{c.String(), Lost, KeyLeaseLost, MsgBack}
	}
	return Outcome{upstream.ConnError.String(), Lost, KeyNothing, MsgRetry}
}

// Refusal returns the reason a request is buried with when it cannot be sent as
// it is (it cannot be read, or its profile cannot make its call): not_allowed
// for a call the profile's calls do not list or a path that would leave the
// base URL, malformed for any other.
func Refusal(err error) string {
	if errors.Is(err, profile.ErrNotAllowed) || errors.Is(err, wire.ErrPathEscapes) {
		return wire.ReasonNotAllowed
	}
	return wire.ReasonMalformed
}
