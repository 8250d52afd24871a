package worker_test

import (
	"context"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/exchange"
	"github.com/ratefleet/ratefleet/internal/keystate"
	"github.com/ratefleet/ratefleet/internal/testenv"
	"github.com/ratefleet/ratefleet/internal/upstream"
	"github.com/ratefleet/ratefleet/internal/worker"
	"github.com/ratefleet/ratefleet/wire"
)

// Edge 3: a producer whose clock runs an hour ahead cannot keep a request alive:
// its time to live counts from when the server stored it.
func TestWorkers_StalenessCountsFromTheServersStoredTimeWhenEarlier(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Exchange: fastExchange()})
	ahead := wire.New(time.Now().Add(time.Hour), 300*time.Millisecond, nil)
	data, err := ahead.Encode()
	require.NoError(t, err)
	publish(t, env, data, ahead.ID)
	time.Sleep(400 * time.Millisecond) // past its time to live on the server's clock

	startWorkers(t, env, 1, exchange.DefaultKeys()[:1])
	waitDrained(t, env, 30*time.Second)
	es := graveyardEntries(t, env)
	require.Len(t, es, 1)
	require.Equal(t, wire.ReasonExpired, es[0].Reason)
	require.Equal(t, ahead.ID, es[0].RequestID)
	require.Empty(t, answeredIDs(env), "never sent")
}

// Edge 3: a worker measures how far its clock is from the server's.
func TestClockOffset_TellsAClockAheadOrBehindFromTheServers(t *testing.T) {
	env := testenv.Start(t, testenv.Options{})
	tests := []struct {
		name   string
		shift  time.Duration
		beyond bool
	}{
		{"in step", 0, false},
		{"2 s ahead", 2 * time.Second, true},
		{"2 s behind", -2 * time.Second, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now := func() time.Time { return time.Now().Add(tt.shift) }
			off, err := worker.ClockOffset(context.Background(), env.Conn.JS, env.Conn.Streams.Requests.Stream.Name, now)
			require.NoError(t, err)
			require.Equal(t, tt.beyond, off.Beyond(worker.DefaultClockSkew), "offset %s ± %s", off.Offset, off.Uncertainty)
		})
	}
}

// Edge 2: when the only key is unusable, nothing pulls; the keeper of a worker
// that holds no key buries the requests whose time to live runs out.
func TestWorkers_WithNoUsableKeyExpiredRequestsAreBuriedAsKeyUnusable(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Exchange: fastExchange()})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	ks := exchange.DefaultKeys()[:1]
	state, err := keystate.Open(ctx, env.Conn.JS, env.Conn.Streams.KV.KeyState.Bucket)
	require.NoError(t, err)
	require.NoError(t, state.MarkUnusable(ctx, ks[0].Name(), "refused by the upstream", false, time.Now()))
	ids := publishRequests(t, env, 3, 500*time.Millisecond)

	factory, err := worker.NewPacerFactory("adaptive", fastLimiter())
	require.NoError(t, err)
	up, err := upstream.New(env.ExchangeURL, 2*time.Second, 32, nil)
	require.NoError(t, err)
	t.Cleanup(up.Close)
	w, err := worker.New(ctx, env.Conn.JS, worker.Config{
		ID: "w1", Keys: ks, Upstream: up, Streams: env.Conn.Streams, NewPacer: factory,
		ClaimRetry: 100 * time.Millisecond, Keeper: true, NoKeyStall: time.Second,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	require.NoError(t, err)
	wg.Add(1)
	go func() { defer wg.Done(); _ = w.Run(ctx) }()

	waitDrained(t, env, 20*time.Second)
	es := graveyardEntries(t, env)
	require.Len(t, es, len(ids))
	var got []string
	for _, e := range es {
		require.Equal(t, wire.ReasonKeyUnusable, e.Reason)
		got = append(got, e.RequestID)
	}
	require.ElementsMatch(t, ids, got)
	require.Empty(t, answeredIDs(env))
}
