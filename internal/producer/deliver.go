package producer

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ratefleet/ratefleet/wire"
)

// errNoAck reports an attempt still unanswered when the shutdown grace ended.
var errNoAck = errors.New("no ack before the shutdown grace ended")

// ErrDedupeWindowPassed is wrapped in the log of a request given up on because an
// earlier attempt, whose answer was lost, may have been stored and the stream's
// duplicate window since that attempt has (nearly) passed: another attempt could
// store it twice.
var ErrDedupeWindowPassed = errors.New("the duplicate window since an attempt whose answer was lost has passed")

// prepared is a request made ready to deliver: its bytes, and its first
// attempt when that has left already.
type prepared struct {
	data  []byte
	err   error       // the request cannot be encoded
	first *publishing // nil: not launched (a pause was in force)
}

// prepare encodes req and, unless a pause is in force, launches its first
// attempt without waiting for its answer. The generator prepares each request
// of a burst this way, one after the other, so that a burst leaves in one write
// to NATS rather than one for each request (each request's own goroutine
// publishing in turn let the connection's flusher write between them).
func (r *run) prepare(req wire.Request) prepared {
	data, err := req.Encode()
	pr := prepared{data: data, err: err}
	if err == nil && r.pause.pausedFor(r.p.cfg.Now()) <= 0 {
		first := r.launch(req, data)
		pr.first = &first
	}
	return pr
}

// deliver publishes one request, prepared by prepare, until the stream stores
// it or the producer gives up on it, and counts how it ended. Every attempt
// carries the request's id as Nats-Msg-Id and the same bytes (its created time
// included), so however many attempts reach the stream, it holds the request
// once.
func (r *run) deliver(req wire.Request, pr prepared) {
	log := r.p.log
	data, err := pr.data, pr.err
	if err != nil {
		r.failed(req, 0, err)
		return
	}
	var (
		lastErr error
		unknown time.Time // when the first attempt whose answer was lost left
	)
	for attempt := 0; ; attempt++ {
		var a publishing
		if attempt == 0 && pr.first != nil {
			a = *pr.first // it left already, with no pause in force
		} else {
			if !r.mayLaunch(req, attempt, lastErr, unknown) {
				return
			}
			a = r.launch(req, data)
		}
		sent := a.sent
		ack, err := r.await(a)
		switch {
		case err == nil:
			if r.pause.succeeded(sent) {
				log.Info("the stream takes requests again: publishing resumed")
			}
			r.acked(req, ack)
			return
		case errors.Is(err, errNoAck):
			r.unconfirmed(req, attempt+1, err)
			return
		case r.p.fatal(err):
			r.gaveUp(req, attempt+1, err)
			r.abort(err)
			return
		case !retryable(err):
			r.failed(req, attempt+1, err)
			return
		case r.p.cfg.MaxRetries >= 0 && attempt >= r.p.cfg.MaxRetries:
			r.gaveUp(req, attempt+1, fmt.Errorf("gave up after %d retries: %w", attempt, err))
			return
		}
		lastErr = err
		if unknown.IsZero() && outcomeUnknown(err) {
			unknown = sent
		}
		pause, change := r.pause.failed(sent, r.p.cfg.Now())
		if change == pauseStarted {
			log.Warn("the stream refused a request or did not answer: pausing publishes, then retrying with the same ids",
				"pause", pause, "id", req.ID, "err", err)
		} else {
			log.Debug("retrying request", "id", req.ID, "attempt", attempt+2, "pause", pause, "err", err)
		}
	}
}

// mayLaunch waits out a pause before attempt number attempt of req, and
// reports whether it may leave. If not, it has counted and logged how the
// request ended: the run was interrupted (a request made is published at least
// once unless a pause holds it back; no retry starts once the run is
// interrupted), or the duplicate window since an attempt whose answer was lost
// (at unknown) has passed. It counts a retry it lets leave.
func (r *run) mayLaunch(req wire.Request, attempt int, lastErr error, unknown time.Time) bool {
	interrupted := attempt > 0 && r.gen.Err() != nil
	if interrupted || r.pause.wait(r.gen, r.p.cfg.Now) != nil {
		if lastErr == nil {
			r.failed(req, attempt, errors.New("the run was interrupted while publishes were paused, before it was published"))
		} else {
			r.gaveUp(req, attempt, fmt.Errorf("the run was interrupted while it waited to retry: %w", lastErr))
		}
		return false
	}
	if !unknown.IsZero() && r.p.cfg.Now().Sub(unknown) >= r.p.cfg.DuplicateWindow-dedupeMargin(r.p.cfg.DuplicateWindow) {
		r.unconfirmed(req, attempt, fmt.Errorf("%w (window %s, first such attempt at %s): not retried, so it is stored at most once: %w",
			ErrDedupeWindowPassed, r.p.cfg.DuplicateWindow, unknown.Format(time.RFC3339Nano), lastErr))
		return false
	}
	if attempt > 0 {
		r.tally.retries.Add(1)
	}
	return true
}

// publishing is one attempt at publishing a request: when it left, and its
// answer to come, or why it did not leave.
type publishing struct {
	sent time.Time
	fut  jetstream.PubAckFuture
	err  error
}

// launch makes one attempt without waiting for its answer. It goes to the
// owner's subject of the request's priority and route.
func (r *run) launch(req wire.Request, data []byte) publishing {
	req.Owner = r.p.cfg.Owner
	a := publishing{sent: r.p.cfg.Now()}
	a.fut, a.err = r.p.js.PublishMsgAsync(&nats.Msg{Subject: req.Subject(r.p.subject), Data: data}, jetstream.WithMsgID(r.p.cfg.Owner.MsgID(req.ID)))
	if a.err != nil {
		a.err = fmt.Errorf("publish: %w", a.err)
	}
	return a
}

// await waits for a's answer, until settle ends.
func (r *run) await(a publishing) (*jetstream.PubAck, error) {
	if a.err != nil {
		return nil, a.err
	}
	select {
	case ack := <-a.fut.Ok():
		return ack, nil
	case err := <-a.fut.Err():
		return nil, fmt.Errorf("publish: %w", err)
	case <-r.settle.Done():
		return nil, errNoAck
	}
}

func (r *run) acked(req wire.Request, ack *jetstream.PubAck) {
	if ack.Duplicate {
		r.tally.duplicates.Add(1)
	} else {
		r.tally.published.Add(1)
	}
	r.ids.write(req.ID)
}

// failed counts and logs a request that is not in the stream.
func (r *run) failed(req wire.Request, attempts int, err error) {
	r.tally.failed.Add(1)
	r.p.log.Error("request not stored", "id", req.ID, "attempts", attempts, "err", err)
}

// unconfirmed counts and logs a request that may or may not be in the stream.
func (r *run) unconfirmed(req wire.Request, attempts int, err error) {
	r.tally.unconfirmed.Add(1)
	r.p.log.Error("request unconfirmed: it may or may not be in the stream", "id", req.ID, "attempts", attempts, "err", err)
}

// gaveUp counts a request given up on after err: failed if its last attempt was
// refused, unconfirmed if that attempt's fate is unknown (its answer was lost).
func (r *run) gaveUp(req wire.Request, attempts int, err error) {
	if outcomeUnknown(err) {
		r.unconfirmed(req, attempts, err)
	} else {
		r.failed(req, attempts, err)
	}
}

// retryable reports whether another attempt may succeed: the stream is full or
// for a moment unable to store (an API error with code 503, such as error code 10077
// "maximum messages exceeded" under discard-new), or the answer was lost or never
// came.
func retryable(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.Code == http.StatusServiceUnavailable
	}
	for _, target := range []error{
		jetstream.ErrAsyncPublishTimeout, jetstream.ErrNoStreamResponse, jetstream.ErrTooManyStalledMsgs,
		nats.ErrDisconnected, nats.ErrNoResponders, nats.ErrTimeout, nats.ErrReconnectBufExceeded,
	} {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}

// outcomeUnknown reports whether an attempt that failed with err may still have
// been stored: it was sent, but its answer never came.
func outcomeUnknown(err error) bool {
	return errors.Is(err, jetstream.ErrAsyncPublishTimeout) || errors.Is(err, nats.ErrDisconnected) ||
		errors.Is(err, nats.ErrTimeout) || errors.Is(err, errNoAck)
}

// fatal reports whether err ends every later publish too: the connection is closed
// or closing. The connection is asked as well, since some of its errors reach us
// as text only.
func (p *Producer) fatal(err error) bool {
	return errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrConnectionDraining) ||
		p.nc.IsClosed() || p.nc.IsDraining()
}
