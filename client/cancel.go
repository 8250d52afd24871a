package client

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/ratefleet/ratefleet/internal/results"
	"github.com/ratefleet/ratefleet/wire"
)

// Cancel asks the fleet not to send the owner's request id. It writes a cancel
// mark, which only the owner may write (NATS permissions confine each user to
// its own marks), and which a worker reads just before sending the request: a
// request still queued then ends as buried with reason wire.ReasonCancelled,
// and is never sent. A request a worker was already sending ends as that send
// does; Await tells which it was.
//
// A request that already has a result is not cancelled: Cancel returns that
// result with an error wrapping ErrEnded, which says how it ended.
func (c *Client) Cancel(ctx context.Context, id string) (Result, error) {
	if id == "" {
		return Result{}, fmt.Errorf("%w: cancel: no request id", ErrInvalidRequest)
	}
	if res, err := c.ended(ctx, id); err != nil {
		return res, err
	}
	mark, err := json.Marshal(struct {
		ID string    `json:"id"`
		At time.Time `json:"at"`
	}{id, c.now()})
	if err != nil {
		return Result{}, fmt.Errorf("cancel request %s: %w", id, err)
	}
	subject := "$KV." + c.streams.KV.Cancels.Bucket + "." + wire.CancelKey(c.owner, id)
	if _, err := c.js.Publish(ctx, subject, mark); err != nil {
		return Result{}, fmt.Errorf("cancel request %s: write its cancel mark: %w (is %s allowed to this user?)", id, err, subject)
	}
	// It may have ended between the look and the mark.
	return c.ended(ctx, id)
}

// ended returns the result of request id with an error wrapping ErrEnded when
// it has one, or nothing.
func (c *Client) ended(ctx context.Context, id string) (Result, error) {
	res, found, err := results.Get(ctx, c.nc, c.streams.Results, c.owner, id)
	if err != nil {
		return Result{}, fmt.Errorf("cancel request %s: look for its result: %w", id, err)
	}
	if !found {
		return Result{}, nil
	}
	how := res.Outcome
	switch {
	case res.Outcome == Served:
		how = fmt.Sprintf("served with status %d by key %s", res.Status, res.Key)
	case res.Reason != "":
		how = "buried as " + res.Reason
	}
	return res, fmt.Errorf("%w: request %s was %s at %s; it was not cancelled", ErrEnded, id, how, res.At.Format(time.RFC3339))
}
