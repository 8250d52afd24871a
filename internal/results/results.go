// Package results reads a caller's results as its NATS permissions allow: the
// result of one request by direct get of its subject in the results stream
// ($JS.API.DIRECT.GET.<stream>.<subject>), the one read of the stream that
// permissions can confine to the caller's own subjects (docs/security.md). It
// creates no consumer: a caller may create none.
package results

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
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

// Body returns the body of res that travelled in parts (res.BodyParts), read
// by direct get of each part's subject and checked against its size and digest.
func Body(ctx context.Context, nc *nats.Conn, rs streams.Results, owner wire.Owner, res wire.Result) ([]byte, error) {
	subject := wire.ResultSubject(rs.Prefix(), owner, res.ID)
	body := make([]byte, 0, min(max(res.BodySize, 0), 16<<20)) // a size no result can make us allocate blindly
	for i := range res.BodyParts {
		part, err := get(ctx, nc, rs, wire.PartSubject(subject, res.Seq, res.Delivery, i))
		if err != nil {
			return nil, fmt.Errorf("read the answer of %s: part %d of %d: %w", res.ID, i+1, res.BodyParts, err)
		}
		if part == nil {
			return nil, fmt.Errorf("read the answer of %s: part %d of %d is not in %s (aged out?)", res.ID, i+1, res.BodyParts, rs.Stream.Name)
		}
		body = append(body, part.Data...)
	}
	sum := sha256.Sum256(body)
	if got := base64.RawURLEncoding.EncodeToString(sum[:]); len(body) != res.BodySize || got != res.BodyDigest {
		return nil, fmt.Errorf("read the answer of %s: %d bytes with digest %s, but its result says %d and %s", res.ID, len(body), got, res.BodySize, res.BodyDigest)
	}
	return body, nil
}

// Get returns the result of owner's request id that the results stream holds
// last, and whether it holds one. A message on that subject whose id is not id
// counts as none.
func Get(ctx context.Context, nc *nats.Conn, rs streams.Results, owner wire.Owner, id string) (wire.Result, bool, error) {
	subject := wire.ResultSubject(rs.Prefix(), owner, id)
	msg, err := get(ctx, nc, rs, subject)
	if err != nil || msg == nil {
		return wire.Result{}, false, err
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

// get returns the last message on subject in the results stream, by direct
// get, or nil if there is none.
func get(ctx context.Context, nc *nats.Conn, rs streams.Results, subject string) (*nats.Msg, error) {
	rctx, cancel := context.WithTimeout(ctx, getTimeout)
	defer cancel()
	msg, err := nc.RequestWithContext(rctx, "$JS.API.DIRECT.GET."+rs.Stream.Name+"."+subject, nil)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return nil, fmt.Errorf("read %s from %s: no direct get answers (apply streams.yaml: results.stream.allow_direct must be true)", subject, rs.Stream.Name)
	case err != nil && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded):
		return nil, fmt.Errorf("read %s from %s: no answer within %s (may this user read it, and does it connect with its inbox prefix?)", subject, rs.Stream.Name, getTimeout)
	case err != nil:
		return nil, fmt.Errorf("read %s from %s: %w", subject, rs.Stream.Name, err)
	}
	switch status := msg.Header.Get("Status"); status {
	case "":
		return msg, nil
	case "404":
		return nil, nil
	default:
		return nil, fmt.Errorf("read %s from %s: %s %s", subject, rs.Stream.Name, status, msg.Header.Get("Description"))
	}
}
