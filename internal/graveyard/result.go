package graveyard

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ratefleet/ratefleet/wire"
)

// publishResult writes the buried result of a request the server gave up on,
// unless the request already has a result (a worker wrote it, then died before
// its acknowledgement counted).
func (k *Keeper) publishResult(ctx context.Context, e Entry) error {
	rs := k.cfg.Results
	subject := wire.ResultSubject(rs.Prefix(), e.Owner, e.RequestID)
	st, err := k.js.Stream(ctx, rs.Stream.Name)
	if err != nil {
		return fmt.Errorf("read stream %s: %w", rs.Stream.Name, err)
	}
	if _, err := st.GetLastMsgForSubject(ctx, subject); err == nil {
		return nil
	} else if !errors.Is(err, jetstream.ErrMsgNotFound) {
		return fmt.Errorf("look for the result of %s: %w", e.RequestID, err)
	}
	res := wire.Result{ID: e.RequestID, Outcome: wire.Buried, Reason: e.Reason, Error: e.Error, Delivery: e.Deliveries, At: e.BuriedAt}
	if n := len(e.Attempts); n > 0 {
		res.Status, res.Key = e.Attempts[n-1].Status, e.Attempts[n-1].Key
	}
	data, err := res.Encode()
	if err != nil {
		return err
	}
	msg := nats.NewMsg(subject)
	msg.Data = data
	if _, err := k.js.PublishMsg(ctx, msg, jetstream.WithMsgID(wire.ResultMsgID(e.Owner, e.RequestID, e.Deliveries))); err != nil {
		return fmt.Errorf("publish the result of %s: %w", e.RequestID, err)
	}
	return nil
}
