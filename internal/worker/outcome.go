package worker

import (
	"errors"

	"github.com/ratefleet/ratefleet/internal/graveyard"
	"github.com/ratefleet/ratefleet/internal/profile"
	"github.com/ratefleet/ratefleet/internal/stats"
	"github.com/ratefleet/ratefleet/internal/upstream"
)

// refusal returns the graveyard reason and the stats result of a request the
// profile cannot send (session.check's error): not_allowed for a call its calls
// do not list, malformed for any other.
func refusal(err error) (reason, result string) {
	if errors.Is(err, profile.ErrNotAllowed) {
		return graveyard.ReasonNotAllowed, stats.ResultNotAllowed
	}
	return graveyard.ReasonMalformed, stats.ResultMalformed
}

// outcome is what one answer class means for each party: what the limiter is told,
// what the stats count, what happens to the key and to the message. outcomeOf is
// the only place that decides it.
type outcome struct {
	pacer  report
	result string // the stats result
	key    keyAction
	msg    msgAction
}

// report is how the limiter learns what became of a send.
type report int

const (
	answered  report = iota // the upstream's own answer: it arrived by then
	rejected                // a 429: the limiter's model was wrong
	inverted                // a 400: nonces arrived out of order, evidence for the order rule
	lost                    // no answer: it may arrive until it left + the arrival horizon (or nowhere, if no byte left)
	lostUntil               // a gateway answered: it may arrive until the answer + the gateway hold
)

// keyAction is what happens to the key.
type keyAction int

const (
	keyNothing   keyAction = iota
	keyNewNonces           // a 400: the upstream saw a nonce at least as high; take a fresh block
	keyCount429            // count the 429 in key state before the key sends again
	keyUnusable            // the upstream refused the key for good
	keyLeaseLost           // the lease could no longer cover a send: stop sending on the key
)

// msgAction is what happens to the request's message.
type msgAction int

const (
	msgAck   msgAction = iota // done: acknowledge
	msgRetry                  // a failed attempt: record it, NAK with the retry delay or bury at the last delivery
	msgBack                   // not an attempt: NAK at once for another key
)

// outcomeOf returns what an answer of class c means.
func outcomeOf(c upstream.Class) outcome {
	switch c {
	case upstream.OK:
		return outcome{answered, stats.ResultOK, keyNothing, msgAck}
	case upstream.RateLimited:
		return outcome{rejected, stats.ResultRateLimited, keyCount429, msgRetry}
	case upstream.BadNonce:
		return outcome{inverted, stats.ResultBadNonce, keyNewNonces, msgRetry}
	case upstream.KeyUnusable:
		return outcome{answered, stats.ResultKeyUnusable, keyUnusable, msgRetry}
	case upstream.ServerError:
		return outcome{answered, stats.ResultServerError, keyNothing, msgRetry}
	case upstream.Gateway:
		return outcome{lostUntil, stats.ResultGatewayError, keyNothing, msgRetry}
	case upstream.Timeout:
		return outcome{lost, stats.ResultTimeout, keyNothing, msgRetry}
	case upstream.Fenced:
		return outcome{lost, stats.ResultFenced, keyLeaseLost, msgBack}
	}
	return outcome{lost, stats.ResultConnError, keyNothing, msgRetry}
}
