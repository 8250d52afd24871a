package settle_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/graveyard"
	"github.com/ratefleet/ratefleet/internal/natsconn"
	"github.com/ratefleet/ratefleet/internal/settle"
	"github.com/ratefleet/ratefleet/internal/streams"
	"github.com/ratefleet/ratefleet/internal/testenv"
	"github.com/ratefleet/ratefleet/wire"
)

// open starts an embedded server and applies streams.yaml, changed by mod, with
// one delivery per request and a 1 s ack wait.
func open(t *testing.T, mod func(*streams.Config)) (*natsconn.Conn, *settle.Keeper) {
	t.Helper()
	c := testenv.NATS(t, func(cfg *streams.Config) {
		cfg.Requests.Consumer.MaxDeliver = 1
		cfg.Requests.Consumer.AckWait = time.Second
		if mod != nil {
			mod(cfg)
		}
	})
	ctx := context.Background()
	k, err := settle.NewKeeper(ctx, c.JS, c.Streams, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	return c, k
}

// requestOf returns an encoded request whose payload makes it size bytes long.
func requestOf(t *testing.T, size int, ttl time.Duration) (wire.Request, []byte) {
	t.Helper()
	r := wire.New(time.Now(), ttl, []byte(`""`))
	data, err := r.Encode()
	require.NoError(t, err)
	if pad := size - len(data); pad > 0 {
		r.Payload = []byte(`"` + strings.Repeat("x", pad) + `"`)
		data, err = r.Encode()
		require.NoError(t, err)
	}
	return r, data
}

// giveUp publishes each request and lets a consumer take its only delivery and
// never answer, then acknowledges one more request so the ack floor passes them
// all: requests the server gave up on whose advisories were lost.
func giveUp(t *testing.T, c *natsconn.Conn, data ...[]byte) {
	t.Helper()
	ctx := context.Background()
	subject := c.Streams.Requests.Stream.Subjects[0]
	cons, err := c.JS.Consumer(ctx, c.Streams.Requests.Stream.Name, c.Streams.Requests.Consumer.Durable)
	require.NoError(t, err)
	for _, d := range data {
		_, err := c.JS.Publish(ctx, subject, d)
		require.NoError(t, err)
		m, err := cons.Next()
		require.NoError(t, err)
		require.Equal(t, len(d), len(m.Data()))
	}
	require.Eventually(t, func() bool {
		info, err := cons.Info(ctx)
		return err == nil && info.NumAckPending == 0
	}, 15*time.Second, 50*time.Millisecond)
	_, last := requestOf(t, 0, time.Minute)
	ack, err := c.JS.Publish(ctx, subject, last)
	require.NoError(t, err)
	m, err := cons.Next()
	require.NoError(t, err)
	require.NoError(t, m.DoubleAck(ctx))
	require.Eventually(t, func() bool {
		info, err := cons.Info(ctx)
		return err == nil && info.AckFloor.Stream >= ack.Sequence
	}, 15*time.Second, 50*time.Millisecond)
	adv, err := c.JS.Stream(ctx, c.Streams.Graveyard.Advisories.Name)
	require.NoError(t, err)
	require.NoError(t, adv.Purge(ctx))
}

// Edge 1: the entry of a request as large as the requests stream allows fits,
// with a full attempt log, and reads back byte for byte.
func TestBury_ARequestOfTheLargestSizeTheQueueTakesWithFullAttempts(t *testing.T) {
	c, k := open(t, nil)
	k.Settle = 0
	size := int(c.Streams.Requests.Stream.MaxMsgSize)
	r, data := requestOf(t, size, time.Minute)
	require.Len(t, data, size)
	var attempts []graveyard.Attempt
	for i := range 64 {
		attempts = append(attempts, graveyard.Attempt{At: time.Now(), Delivery: uint64(i + 1), Result: "server_error", Error: strings.Repeat("é", 2000)})
	}
	g, err := graveyard.New(c.JS, c.Streams.Graveyard.Stream.Name, c.Streams.Graveyard.Stream.Subjects[0])
	require.NoError(t, err)
	ctx := context.Background()
	require.NoError(t, g.Bury(ctx, graveyard.Entry{
		Reason: wire.ReasonMaxDeliveries, RequestID: r.ID, Original: data, Stream: c.Streams.Requests.Stream.Name,
		StreamSeq: 1, Stored: time.Now(), Attempts: attempts, Error: strings.Repeat("e", 10000),
	}))
	es := entries(t, c)
	require.Len(t, es, 1)
	require.True(t, bytes.Equal(data, es[0].Original), "the original, byte for byte")
	require.Equal(t, r.ID, es[0].RequestID)
	require.GreaterOrEqual(t, len(es[0].Attempts), 2)
	require.Equal(t, uint64(1), es[0].Attempts[0].Delivery, "the first attempt is kept")
	require.Equal(t, uint64(64), es[0].Attempts[len(es[0].Attempts)-1].Delivery, "and the last")

	// The same through the keeper, from the requests stream.
	giveUp(t, c, data)
	n, err := k.Reconcile(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.Len(t, entries(t, c), 2)
}

// Edge 1: a request that cannot be buried does not stop reconciliation of the
// ones after it, and is reported.
func TestReconcile_GoesOnPastARequestItCannotBury(t *testing.T) {
	c, k := open(t, func(cfg *streams.Config) { cfg.Requests.Stream.MaxMsgSize = -1 }) // a stream declared before the check
	k.Settle = 0
	big, bigData := requestOf(t, int(c.NC.MaxPayload())-64, time.Minute)
	small, smallData := requestOf(t, 100, time.Minute)
	giveUp(t, c, bigData, smallData)

	n, err := k.Reconcile(context.Background())
	require.ErrorIs(t, err, settle.ErrUnresolved)
	require.Equal(t, 1, n, "the request after the one it could not bury")
	es := entries(t, c)
	require.Len(t, es, 1)
	require.Equal(t, small.ID, es[0].RequestID)
	require.NotEqual(t, big.ID, es[0].RequestID)
}

// Edge 4: on a replicated stream the ack floor moves before the stream removes
// an acknowledged message. A request seen below the floor that leaves the stream
// before Settle is over was served, and is never buried.
func TestReconcile_NeverBuriesARequestTheStreamRemovesLate(t *testing.T) {
	c, k := open(t, nil)
	served, servedData := requestOf(t, 100, time.Minute)
	_, givenUpData := requestOf(t, 100, time.Minute)
	giveUp(t, c, servedData, givenUpData)
	ctx := context.Background()
	t0 := time.Now()
	k.Now = func() time.Time { return t0 }
	n, err := k.Reconcile(ctx)
	require.NoError(t, err)
	require.Zero(t, n, "one sighting below the floor proves nothing")

	// The stream now removes the first, as it does an acknowledged message.
	st, err := c.JS.Stream(ctx, c.Streams.Requests.Stream.Name)
	require.NoError(t, err)
	require.NoError(t, st.DeleteMsg(ctx, 1))

	k.Now = func() time.Time { return t0.Add(k.Settle) }
	n, err = k.Reconcile(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, n, "only the one that stayed")
	es := entries(t, c)
	require.Len(t, es, 1)
	require.NotEqual(t, served.ID, es[0].RequestID)
}

// Edge 6: a recreated requests stream numbers its messages from 1 again; their
// entries must not be taken for duplicates of the earlier ones.
func TestBury_EntriesStayDistinctAcrossARecreatedRequestsStream(t *testing.T) {
	c, k := open(t, nil)
	ctx := context.Background()
	subject := c.Streams.Requests.Stream.Subjects[0]
	var ids []string
	for range 2 {
		r, data := requestOf(t, 100, time.Minute)
		ack, err := c.JS.Publish(ctx, subject, data)
		require.NoError(t, err)
		require.Equal(t, uint64(1), ack.Sequence)
		require.NoError(t, k.Resolve(ctx, 1, 1, "test"))
		ids = append(ids, r.ID)
		require.NoError(t, c.JS.DeleteStream(ctx, c.Streams.Requests.Stream.Name))
		_, err = c.Streams.Apply(ctx, c.JS)
		require.NoError(t, err)
	}
	es := entries(t, c)
	require.Len(t, es, 2, "one entry per request")
	require.Equal(t, ids[0], es[0].RequestID)
	require.Equal(t, ids[1], es[1].RequestID)
}

// Edge 2: with no key held for Stall, requests whose time to live ran out are
// buried as key_unusable; during a shorter gap (a failover) they are not.
func TestKeeper_BuriesExpiredRequestsOnlyOnceNoKeyWasHeldForStall(t *testing.T) {
	tests := []struct {
		name  string
		stall time.Duration
		want  int
	}{
		{"no key for longer than stall", time.Second, 1},
		{"a failover gap", time.Hour, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, k := open(t, nil)
			ctx := context.Background()
			_, stale := requestOf(t, 100, 100*time.Millisecond)
			_, fresh := requestOf(t, 100, time.Hour)
			for _, d := range [][]byte{stale, fresh} {
				_, err := c.JS.Publish(ctx, c.Streams.Requests.Stream.Subjects[0], d)
				require.NoError(t, err)
			}
			k.Serving = func() bool { return false }
			k.Stall = tt.stall
			rctx, cancel := context.WithCancel(ctx)
			done := make(chan struct{})
			go func() { defer close(done); _ = k.Run(rctx) }()
			defer func() { cancel(); <-done }()
			if tt.want == 0 {
				time.Sleep(3 * time.Second) // three sweep ticks: a wait for nothing to happen
				require.Empty(t, entries(t, c))
				return
			}
			// Buried, then removed from the queue: the keeper does both, one after the other.
			require.Eventually(t, func() bool { return len(entries(t, c)) == tt.want && requestsLeft(t, c) == 1 }, 10*time.Second, 50*time.Millisecond,
				"the stale one buried, the fresh one waiting for a key")
			e := entries(t, c)[0]
			require.Equal(t, wire.ReasonKeyUnusable, e.Reason)
			require.True(t, bytes.Equal(stale, e.Original))
		})
	}
}
