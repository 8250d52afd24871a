// Package results reads a caller's results as its NATS permissions allow: the
// result of one request by direct get of its subject in the results stream
// ($JS.API.DIRECT.GET.<stream>.<subject>), the one read of the stream that
// permissions can confine to the caller's own subjects (docs/security.md). It
// creates no consumer: a caller may create none.
package results

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ratefleet/ratefleet/internal/streams"
	"github.com/ratefleet/ratefleet/wire"
)

// getTimeout bounds one direct get, so an answer refused on the way back (an
// inbox the user may not read) fails instead of hanging.
const getTimeout = 5 * time.Second

// Get returns the result of owner's request id that the results stream holds
// last, and whether it holds one. A message on that subject whose id is not id
// counts as none.
func Get(ctx context.Context, nc *nats.Conn, rs streams.Results, owner wire.Owner, id string) (wire.Result, bool, error) {
	subject := wire.ResultSubject(rs.Prefix(), owner, id)
	rctx, cancel := context.WithTimeout(ctx, getTimeout)
	defer cancel()
	msg, err := nc.RequestWithContext(rctx, "$JS.API.DIRECT.GET."+rs.Stream.Name+"."+subject, nil)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return wire.Result{}, false, fmt.Errorf("read %s from %s: no direct get answers (apply streams.yaml: results.stream.allow_direct must be true)", subject, rs.Stream.Name)
	case err != nil && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded):
		return wire.Result{}, false, fmt.Errorf("read %s from %s: no answer within %s (may this user read it, and does it connect with its inbox prefix %s?)", subject, rs.Stream.Name, getTimeout, wire.InboxPrefix(string(owner)))
	case err != nil:
		return wire.Result{}, false, fmt.Errorf("read %s from %s: %w", subject, rs.Stream.Name, err)
	}
	switch status := msg.Header.Get("Status"); status {
	case "":
	case "404":
		return wire.Result{}, false, nil
	default:
		return wire.Result{}, false, fmt.Errorf("read %s from %s: %s %s", subject, rs.Stream.Name, status, msg.Header.Get("Description"))
	}
	res, err := wire.DecodeResult(msg.Data)
	if err != nil {
		return wire.Result{}, false, fmt.Errorf("read %s from %s: %w", subject, rs.Stream.Name, err)
	}
	if res.ID != id {
		return wire.Result{}, false, nil
	}
	return res, true, nil
}
