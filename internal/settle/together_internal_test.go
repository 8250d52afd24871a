package settle

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/burst"
	"github.com/ratefleet/ratefleet/internal/natsconn"
	"github.com/ratefleet/ratefleet/internal/testenv"
	"github.com/ratefleet/ratefleet/wire"
)

// deliveries publishes n requests and takes them from the requests consumer.
func deliveries(t *testing.T, c *natsconn.Conn, n int) []Delivery {
	t.Helper()
	ctx := context.Background()
	for range n {
		data, err := wire.New(time.Now(), time.Minute, []byte(`"x"`)).Encode()
		require.NoError(t, err)
		_, err = c.JS.Publish(ctx, c.Streams.Requests.Stream.Subjects[0], data)
		require.NoError(t, err)
	}
	cons, err := c.JS.Consumer(ctx, c.Streams.Requests.Stream.Name, c.Streams.Requests.Consumer.Durable)
	require.NoError(t, err)
	batch, err := cons.Fetch(n, jetstream.FetchMaxWait(5*time.Second))
	require.NoError(t, err)
	var ds []Delivery
	for m := range batch.Messages() {
		req, err := wire.Decode(m.Data())
		require.NoError(t, err)
		md, err := m.Metadata()
		require.NoError(t, err)
		ds = append(ds, Delivery{Msg: m, Meta: md, Req: req, Key: "k1"})
	}
	require.Len(t, ds, n)
	return ds
}

// serveAll serves each delivery from its own goroutine, as a worker's handlers
// do, and returns once all are settled.
func serveAll(s *Settler, ds []Delivery) {
	var wg sync.WaitGroup
	for _, d := range ds {
		wg.Go(func() {
			s.Serve(context.Background(), d, wire.Result{ID: d.Req.ID, Status: 200, Body: "ok", Delivery: d.Meta.NumDelivered, At: time.Now()})
		})
	}
	wg.Wait()
}

// Results served within the window of each other are stored in one burst, and
// every request is acknowledged with its result stored.
func TestServe_ResultsServedTogetherAreStoredInOneBurstThenAcknowledged(t *testing.T) {
	c := testenv.NATS(t, nil)
	ctx := context.Background()
	s, err := New(ctx, c.JS, Config{Streams: c.Streams, Worker: "w1", Log: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	s.together.pace = burst.New(200 * time.Millisecond) // wide enough for every goroutine to join
	ds := deliveries(t, c, 8)

	serveAll(s, ds)

	require.Equal(t, int64(1), s.together.bursts.Load(), "eight results served at once go out in one burst")
	requireStoredAndAcknowledged(t, c, s, ds)
}

// requireStoredAndAcknowledged checks that each of ds has its result stored
// and that every request is acknowledged.
func requireStoredAndAcknowledged(t *testing.T, c *natsconn.Conn, s *Settler, ds []Delivery) {
	t.Helper()
	ctx := context.Background()
	for _, d := range ds {
		res, ok, err := s.results.Of(ctx, d.Req.Owner, d.Req.ID, d.Meta.Sequence.Stream)
		require.NoError(t, err)
		require.True(t, ok, "the result of %s is stored", d.Req.ID)
		require.Equal(t, wire.Served, res.Outcome)
		require.Equal(t, "ok", res.Body)
	}
	cons, err := c.JS.Consumer(ctx, c.Streams.Requests.Stream.Name, c.Streams.Requests.Consumer.Durable)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		info, err := cons.Info(ctx)
		return err == nil && info.NumAckPending == 0 && info.NumPending == 0
	}, 5*time.Second, 20*time.Millisecond, "every request acknowledged")
}

// Where results come further apart than the window (a worker with few keys),
// one is not held for the others: it is written alone, stored and acknowledged.
func TestServe_ALoneResultIsWrittenAlone(t *testing.T) {
	c := testenv.NATS(t, nil)
	ctx := context.Background()
	s, err := New(ctx, c.JS, Config{Streams: c.Streams, Worker: "w1", Log: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	// Results came a minute apart so far.
	for i := range 4 {
		s.together.pace.Arrive(time.Now().Add(time.Duration(i-4) * time.Minute))
	}
	ds := deliveries(t, c, 1)

	serveAll(s, ds)

	require.Zero(t, s.together.bursts.Load(), "written alone, not in a burst")
	requireStoredAndAcknowledged(t, c, s, ds)
}

// A result that cannot be stored leaves its request unacknowledged, in a burst
// as alone: it is delivered again, and none is acknowledged without its result.
func TestServe_ARequestWhoseResultIsNotStoredIsNotAcknowledged(t *testing.T) {
	c := testenv.NATS(t, nil)
	ctx := context.Background()
	s, err := New(ctx, c.JS, Config{Streams: c.Streams, Worker: "w1", Log: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	ds := deliveries(t, c, 4)
	// Results can no longer be stored: the stream is gone.
	require.NoError(t, c.JS.DeleteStream(ctx, c.Streams.Results.Stream.Name))

	serveAll(s, ds)

	require.Positive(t, s.together.bursts.Load(), "the results went out together first")
	st, err := c.JS.Stream(ctx, c.Streams.Requests.Stream.Name)
	require.NoError(t, err)
	info, err := st.Info(ctx)
	require.NoError(t, err)
	require.Equal(t, uint64(4), info.State.Msgs, "no request is acknowledged: each stays in the queue, to be delivered again")
}
