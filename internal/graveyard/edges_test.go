package graveyard_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/graveyard"
	"github.com/ratefleet/ratefleet/internal/natsconn"
	"github.com/ratefleet/ratefleet/internal/streams"
	"github.com/ratefleet/ratefleet/internal/testenv"
	"github.com/ratefleet/ratefleet/wire"
)

// open starts an embedded server and applies streams.yaml, changed by mod.
func open(t *testing.T, mod func(*streams.Config)) *natsconn.Conn {
	t.Helper()
	return testenv.NATS(t, mod)
}

// Edge 7: ending a request that never failed writes nothing to the attempts
// bucket, and the bucket is bounded as declared.
func TestAttempts_ForgetWritesNothingForARequestWithoutLogAndTheBucketIsBounded(t *testing.T) {
	c := open(t, nil)
	ctx := context.Background()
	a, err := graveyard.OpenAttempts(ctx, c.JS, c.Streams.KV.Attempts.Bucket)
	require.NoError(t, err)
	for range 50 {
		require.NoError(t, a.Forget(ctx, wire.New(time.Now(), time.Second, nil).ID))
	}
	require.NoError(t, a.Record(ctx, "failed-once", graveyard.Attempt{Result: "server_error"}))
	require.NoError(t, a.Forget(ctx, "failed-once"))
	list, err := a.List(ctx, "failed-once")
	require.NoError(t, err)
	require.Empty(t, list)

	st, err := c.JS.Stream(ctx, "KV_"+c.Streams.KV.Attempts.Bucket)
	require.NoError(t, err)
	info := st.CachedInfo()
	require.LessOrEqual(t, info.State.Msgs, uint64(1), "at most the one purge marker of the request that had a log")
	require.Equal(t, c.Streams.KV.Attempts.MaxBytes, info.Config.MaxBytes)
	require.Positive(t, info.Config.MaxBytes)
}

// Edge 5: a replay interrupted after publishing and rerun after the requests
// stream's duplicate window stores its request once: the ledger remembers it.
func TestReplay_RerunAfterTheDuplicateWindowStoresNothingTwice(t *testing.T) {
	const window = time.Second
	c := open(t, func(cfg *streams.Config) { cfg.Requests.Stream.DuplicateWindow = window })
	ctx := context.Background()
	g, err := graveyard.New(c.JS, c.Streams.Graveyard.Stream.Name, c.Streams.Graveyard.Stream.Subjects[0])
	require.NoError(t, err)
	ids := bury(t, c, g, 2)
	var all []graveyard.Stored
	require.NoError(t, g.Walk(ctx, graveyard.Filter{}, func(s graveyard.Stored) bool { all = append(all, s); return true }))
	r := graveyard.NewReplayer(g, c.Streams.Requests.Stream.Subjects[0], time.Minute, nil)
	r.DuplicateWindow = window
	r.Ledger, err = graveyard.OpenLedger(ctx, c.JS, c.Streams.KV.Replays.Bucket)
	require.NoError(t, err)

	// The first run publishes both, and is interrupted before removing either
	// entry (as if it could not reach the graveyard).
	for _, s := range all {
		interrupted := s
		interrupted.Seq = 0
		_, err := r.Replay(ctx, interrupted)
		require.Error(t, err)
	}
	require.Equal(t, uint64(2), graveyardCount(t, c))
	time.Sleep(window + 100*time.Millisecond) // the stream forgets the ids

	for _, s := range all {
		_, err := r.Replay(ctx, s)
		require.NoError(t, err)
	}
	require.Zero(t, graveyardCount(t, c))
	got := replayedIDs(t, c)
	for _, id := range ids {
		require.Equal(t, 1, got[id], "request %s stored once", id)
	}
}
