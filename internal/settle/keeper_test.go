package settle_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/graveyard"
	"github.com/ratefleet/ratefleet/internal/natsconn"
	"github.com/ratefleet/ratefleet/internal/settle"
	"github.com/ratefleet/ratefleet/internal/streams"
	"github.com/ratefleet/ratefleet/internal/testenv"
	"github.com/ratefleet/ratefleet/wire"
)

// keeperSetup applies streams.yaml with one delivery and a 1 s ack wait, publishes
// one request, and lets a consumer that never answers take its only delivery: a
// worker that died during its last attempt.
func keeperSetup(t *testing.T) (*natsconn.Conn, *settle.Keeper, wire.Request) {
	t.Helper()
	c := testenv.NATS(t, func(cfg *streams.Config) {
		cfg.Requests.Consumer.MaxDeliver = 1
		cfg.Requests.Consumer.AckWait = time.Second
	})
	ctx := context.Background()

	k, err := settle.NewKeeper(ctx, c.JS, c.Streams, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	r := wire.New(time.Now(), time.Minute, []byte(`{"x":1}`))
	data, err := r.Encode()
	require.NoError(t, err)
	_, err = c.JS.Publish(ctx, c.Streams.Requests.Stream.Subjects[0], data, jetstream.WithMsgID(r.ID))
	require.NoError(t, err)
	cons, err := c.JS.Consumer(ctx, c.Streams.Requests.Stream.Name, c.Streams.Requests.Consumer.Durable)
	require.NoError(t, err)
	msg, err := cons.Next()
	require.NoError(t, err)
	require.Equal(t, data, msg.Data()) // taken, and never acknowledged
	return c, k, r
}

func entries(t *testing.T, c *natsconn.Conn) []graveyard.Entry {
	t.Helper()
	g, err := graveyard.New(c.JS, c.Streams.Graveyard.Stream.Name, c.Streams.Graveyard.Stream.Subjects[0])
	require.NoError(t, err)
	var out []graveyard.Entry
	require.NoError(t, g.Walk(context.Background(), graveyard.Filter{}, func(s graveyard.Stored) bool { out = append(out, s.Entry); return true }))
	return out
}

func requestsLeft(t *testing.T, c *natsconn.Conn) uint64 {
	t.Helper()
	st, err := c.JS.Stream(context.Background(), c.Streams.Requests.Stream.Name)
	require.NoError(t, err)
	return st.CachedInfo().State.Msgs
}

func TestKeeper_BuriesARequestWhoseLastAttemptNoWorkerReported(t *testing.T) {
	c, k, r := keeperSetup(t)
	k.Every = time.Hour // the advisory alone must do it
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = k.Run(ctx) }()

	// Buried, then removed from the queue: the keeper does both, one after the other.
	require.Eventually(t, func() bool { return len(entries(t, c)) == 1 && requestsLeft(t, c) == 0 }, 15*time.Second, 50*time.Millisecond)
	e := entries(t, c)[0]
	require.Equal(t, wire.ReasonMaxDeliveries, e.Reason)
	require.Equal(t, r.ID, e.RequestID)
	require.Equal(t, uint64(1), e.Deliveries)
	require.Contains(t, e.Error, "max-deliveries advisory")
	got, err := wire.Decode(e.Original)
	require.NoError(t, err)
	require.Equal(t, r.ID, got.ID)
	require.Zero(t, requestsLeft(t, c), "removed from the queue once buried")

	st, err := c.JS.Stream(context.Background(), c.Streams.Results.Stream.Name)
	require.NoError(t, err)
	m, err := st.GetLastMsgForSubject(context.Background(), wire.ResultSubject(c.Streams.Results.Prefix(), wire.Anonymous, r.ID))
	require.NoError(t, err, "the caller learns of it from the results stream too")
	res, err := wire.DecodeResult(m.Data)
	require.NoError(t, err)
	require.Equal(t, wire.Buried, res.Outcome)
	require.Equal(t, wire.ReasonMaxDeliveries, res.Reason)
}

func TestKeeper_ReconcileFindsWhatALostAdvisoryMissed(t *testing.T) {
	c, k, r := keeperSetup(t)
	ctx := context.Background()
	// Wait until the server has given up on the request; the next request is
	// acknowledged, which moves the ack floor past the first; then lose the
	// first one's advisory.
	cons, err := c.JS.Consumer(ctx, c.Streams.Requests.Stream.Name, c.Streams.Requests.Consumer.Durable)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		info, err := cons.Info(ctx)
		return err == nil && info.NumAckPending == 0
	}, 15*time.Second, 50*time.Millisecond)
	next := wire.New(time.Now(), time.Minute, nil)
	data, err := next.Encode()
	require.NoError(t, err)
	_, err = c.JS.Publish(ctx, c.Streams.Requests.Stream.Subjects[0], data, jetstream.WithMsgID(next.ID))
	require.NoError(t, err)
	msg, err := cons.Next()
	require.NoError(t, err)
	require.Equal(t, data, msg.Data())
	require.NoError(t, msg.DoubleAck(ctx))
	require.Eventually(t, func() bool {
		info, err := cons.Info(ctx)
		return err == nil && info.AckFloor.Stream >= 2
	}, 15*time.Second, 50*time.Millisecond)
	adv, err := c.JS.Stream(ctx, c.Streams.Graveyard.Advisories.Name)
	require.NoError(t, err)
	require.NoError(t, adv.Purge(ctx))
	require.Equal(t, uint64(1), requestsLeft(t, c), "still in the stream below the ack floor")

	t0 := time.Now()
	k.Now = func() time.Time { return t0 }
	n, err := k.Reconcile(ctx)
	require.NoError(t, err)
	require.Zero(t, n, "seen once below the ack floor: not yet")
	k.Now = func() time.Time { return t0.Add(k.Settle) }
	n, err = k.Reconcile(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	es := entries(t, c)
	require.Len(t, es, 1)
	require.Equal(t, r.ID, es[0].RequestID)
	require.Zero(t, requestsLeft(t, c))

	n, err = k.Reconcile(ctx)
	require.NoError(t, err)
	require.Zero(t, n, "nothing twice")
	require.NoError(t, k.Resolve(ctx, 1, 1, "again"))
	require.Len(t, entries(t, c), 1)
}

// TestKeeper_ReconcileLeavesAnotherRoutesQueuedRequests queues an urgent
// request, then moves the batch consumer's ack floor past it: the urgent
// request, never delivered, is its own consumer's, and stays queued.
func TestKeeper_ReconcileLeavesAnotherRoutesQueuedRequests(t *testing.T) {
	c := testenv.NATS(t, nil)
	ctx := context.Background()
	k, err := settle.NewKeeper(ctx, c.JS, c.Streams, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	base := c.Streams.Requests.Subject()
	urgent := wire.New(time.Now(), time.Minute, nil)
	urgent.Priority = wire.Urgent
	data, err := urgent.Encode()
	require.NoError(t, err)
	_, err = c.JS.Publish(ctx, urgent.Subject(base), data, jetstream.WithMsgID(urgent.ID))
	require.NoError(t, err)
	batch := wire.New(time.Now(), time.Minute, nil)
	data, err = batch.Encode()
	require.NoError(t, err)
	_, err = c.JS.Publish(ctx, batch.Subject(base), data, jetstream.WithMsgID(batch.ID))
	require.NoError(t, err)
	cons, err := c.JS.Consumer(ctx, c.Streams.Requests.Stream.Name, c.Streams.Requests.Consumer.Durable)
	require.NoError(t, err)
	msg, err := cons.Next()
	require.NoError(t, err)
	require.Equal(t, data, msg.Data(), "the batch consumer sees only the batch request")
	require.NoError(t, msg.DoubleAck(ctx))
	require.Eventually(t, func() bool {
		info, err := cons.Info(ctx)
		return err == nil && info.AckFloor.Stream >= 2
	}, 15*time.Second, 50*time.Millisecond)

	t0 := time.Now()
	for _, at := range []time.Time{t0, t0.Add(k.Settle), t0.Add(2 * k.Settle)} {
		k.Now = func() time.Time { return at }
		n, err := k.Reconcile(ctx)
		require.NoError(t, err)
		require.Zero(t, n)
	}
	require.Empty(t, entries(t, c))
	require.Equal(t, uint64(1), requestsLeft(t, c), "the urgent request waits for its consumer")
}

// TestKeeper_BuriesAnUrgentRequestGivenUpOnByItsOwnConsumer lets the urgent
// consumer's only delivery of a request lapse: its max-deliveries advisory,
// of a consumer other than workers, reaches the keeper all the same.
func TestKeeper_BuriesAnUrgentRequestGivenUpOnByItsOwnConsumer(t *testing.T) {
	c := testenv.NATS(t, func(cfg *streams.Config) {
		cfg.Requests.Consumer.MaxDeliver = 1
		cfg.Requests.Consumer.AckWait = time.Second
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	k, err := settle.NewKeeper(ctx, c.JS, c.Streams, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	k.Every = time.Hour // the advisory alone must do it
	go func() { _ = k.Run(ctx) }()

	r := wire.New(time.Now(), time.Minute, nil)
	r.Priority = wire.Urgent
	data, err := r.Encode()
	require.NoError(t, err)
	_, err = c.JS.Publish(ctx, r.Subject(c.Streams.Requests.Subject()), data, jetstream.WithMsgID(r.ID))
	require.NoError(t, err)
	cons, err := c.JS.Consumer(ctx, c.Streams.Requests.Stream.Name, c.Streams.Requests.ConsumerName(wire.Urgent, wire.Any))
	require.NoError(t, err)
	msg, err := cons.Next()
	require.NoError(t, err)
	require.Equal(t, data, msg.Data()) // taken, and never acknowledged

	require.Eventually(t, func() bool { return len(entries(t, c)) == 1 && requestsLeft(t, c) == 0 }, 15*time.Second, 50*time.Millisecond)
	e := entries(t, c)[0]
	require.Equal(t, wire.ReasonMaxDeliveries, e.Reason)
	require.Equal(t, r.ID, e.RequestID)
}
