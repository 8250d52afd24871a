package worker

import (
	"context"
	"errors"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ratefleet/ratefleet/internal/settle"
	"github.com/ratefleet/ratefleet/wire"
)

// withdraw is the last look at a request before it leaves, once the gate has
// granted it slot sl: a request the key may not serve goes back to the queue,
// and one its owner has cancelled (a mark in the cancels bucket, which only
// the owner may write) is buried as cancelled and never sent. Either way the
// slot is given back unsent. It reports whether the request was withdrawn;
// stop ends the request's in-progress marks.
func (s *session) withdraw(ctx context.Context, d settle.Delivery, sl slot, stop func()) bool {
	w := s.w
	serves := s.key.Serves(d.Req.Route())
	cancelled := serves && s.cancelled(ctx, d.Req)
	if serves && !cancelled {
		return false
	}
	stop()
	s.gate.done(sl, false, func(p Pacer) {
		p.Unsent(sl.ticket, w.cfg.Now()) // not a byte left: it cannot arrive
		s.recordLimiter(p)
	})
	if !serves {
		// The consumers' filters keep this from happening; if they were
		// changed by hand, another key takes it.
		s.log.Error("pulled a request this key may not serve; giving it back", "request", d.Req.ID, "route", d.Req.Route().Token())
		w.settler.Back(d)
		return true
	}
	s.log.Info("request cancelled by its owner; not sending it", "request", d.Req.ID)
	w.settler.Bury(ctx, d, wire.ReasonCancelled, "cancelled by its owner before it was sent", nil)
	return true
}

// cancelled reports whether req's owner has marked it cancelled. A mark that
// cannot be read counts as none (the request is sent, as asked before the
// mark), with a warning.
func (s *session) cancelled(ctx context.Context, req wire.Request) bool {
	ctx, cancel := context.WithTimeout(ctx, ackTimeout)
	defer cancel()
	_, err := s.w.cancels.Get(ctx, wire.CancelKey(req.Owner, req.ID))
	switch {
	case err == nil:
		return true
	case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
		return false
	}
	s.log.Warn("could not read the request's cancel mark; sending it", "request", req.ID, "err", err)
	return false
}
