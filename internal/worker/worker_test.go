package worker_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/exchange"
	"github.com/ratefleet/ratefleet/internal/graveyard"
	"github.com/ratefleet/ratefleet/internal/keys"
	"github.com/ratefleet/ratefleet/internal/limiter"
	"github.com/ratefleet/ratefleet/internal/profile"
	"github.com/ratefleet/ratefleet/internal/streams"
	"github.com/ratefleet/ratefleet/internal/testenv"
	"github.com/ratefleet/ratefleet/internal/upstream"
	"github.com/ratefleet/ratefleet/internal/worker"
	"github.com/ratefleet/ratefleet/wire"
)

// fastExchange follows the reference rules with time scaled down tenfold: 20
// requests per more than 100 ms, delays of 0..5 ms each way. The workers' limiters
// get the same rule and a delay bound of 250 ms: everything runs in one process
// here, where a loaded machine delays timers and goroutines by more than 5 ms, and
// the bound must hold for the real delay, not the configured one.
func fastExchange() *exchange.Config {
	cfg := exchange.DefaultConfig()
	cfg.Window = 100 * time.Millisecond
	cfg.InDelay = exchange.DelayRange{Max: 5 * time.Millisecond}
	cfg.OutDelay = exchange.DelayRange{Max: 5 * time.Millisecond}
	return &cfg
}

// fastRetry tries a failed attempt again after 10 ms, then at most 50 ms.
func fastRetry() *profile.Retry {
	return &profile.Retry{First: 10 * time.Millisecond, MaxDelay: 50 * time.Millisecond}
}

func fastLimiter() limiter.Config {
	return limiter.Config{Rules: []limiter.Rule{{Limit: 20, Window: 100 * time.Millisecond}}, MaxDelay: 250 * time.Millisecond}
}

// startWorkers runs n workers, each allowed every key, until the test ends.
func startWorkers(t *testing.T, env *testenv.Env, n int, ks []keys.Key) []*worker.Worker {
	t.Helper()
	return startWorkersHolding(t, env, n, 1, ks)
}

// startWorkersHolding runs n workers holding up to maxKeys keys each.
func startWorkersHolding(t *testing.T, env *testenv.Env, n, maxKeys int, ks []keys.Key) []*worker.Worker {
	t.Helper()
	return startWorkersRetrying(t, env, n, maxKeys, fastRetry(), ks)
}

// startWorkersRetrying runs n workers holding up to maxKeys keys each, with
// retry as their retry policy.
func startWorkersRetrying(t *testing.T, env *testenv.Env, n, maxKeys int, retry *profile.Retry, ks []keys.Key) []*worker.Worker {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	factory, err := worker.NewPacerFactory("adaptive", fastLimiter())
	require.NoError(t, err)
	var out []*worker.Worker
	for i := range n {
		up, err := upstream.New(env.ExchangeURL, 2*time.Second, 32, nil)
		require.NoError(t, err)
		t.Cleanup(up.Close)
		w, err := worker.New(ctx, env.Conn.JS, worker.Config{
			ID: fmt.Sprintf("w%d", i+1), Keys: ks, MaxKeys: maxKeys, Upstream: up, Streams: env.Conn.Streams,
			NewPacer: factory, ClaimRetry: 100 * time.Millisecond, StatsInterval: 200 * time.Millisecond,
			Retry:  retry,
			Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		})
		require.NoError(t, err)
		out = append(out, w)
		wg.Add(1)
		go func() { defer wg.Done(); _ = w.Run(ctx) }()
	}
	return out
}

func publish(t *testing.T, env *testenv.Env, data []byte, id string) {
	t.Helper()
	msg := nats.NewMsg(env.Conn.Streams.Requests.Stream.Subjects[0])
	msg.Data = data
	_, err := env.Conn.JS.PublishMsg(context.Background(), msg, jetstream.WithMsgID(id))
	require.NoError(t, err)
}

func publishRequests(t *testing.T, env *testenv.Env, n int, ttl time.Duration) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range n {
		r := wire.New(time.Now(), ttl, nil)
		b, err := r.Encode()
		require.NoError(t, err)
		publish(t, env, b, r.ID)
		ids[i] = r.ID
	}
	return ids
}

// waitDrained waits until the queue holds nothing: every request acknowledged.
func waitDrained(t *testing.T, env *testenv.Env, timeout time.Duration) {
	t.Helper()
	sc := env.Conn.Streams
	require.Eventually(t, func() bool {
		st, err := env.Conn.JS.Stream(context.Background(), sc.Requests.Stream.Name)
		return err == nil && st.CachedInfo().State.Msgs == 0
	}, timeout, 20*time.Millisecond, "the requests stream did not empty")
}

func graveyardEntries(t *testing.T, env *testenv.Env) []graveyard.Entry {
	t.Helper()
	ctx := context.Background()
	st, err := env.Conn.JS.Stream(ctx, env.Conn.Streams.Graveyard.Stream.Name)
	require.NoError(t, err)
	var out []graveyard.Entry
	state := st.CachedInfo().State
	for seq := state.FirstSeq; state.Msgs > 0 && seq <= state.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		require.NoError(t, err)
		e, err := graveyard.DecodeMsg(m.Header, m.Data)
		require.NoError(t, err)
		out = append(out, e)
	}
	return out
}

func TestWorkers_EveryRequestAnsweredExactlyOnceWithoutA429(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Exchange: fastExchange()})
	ids := publishRequests(t, env, 2000, time.Minute)
	startWorkers(t, env, 5, exchange.DefaultKeys())

	waitDrained(t, env, 60*time.Second)
	st := env.Exchange.Stats()
	for _, k := range st.Keys {
		require.Zero(t, k.RateLimited, "no 429 on %s", k.Name)
		require.Zero(t, k.BadNonce, "no 400 on %s", k.Name)
		require.LessOrEqual(t, k.MaxInWindow, 20, "key %s", k.Name)
	}
	require.Zero(t, st.Duplicates, "no request answered 200 twice")
	answered := answeredIDs(env)
	sort.Strings(ids)
	sort.Strings(answered)
	require.Equal(t, ids, answered, "every published request answered 200")
	require.Empty(t, graveyardEntries(t, env))
}

func answeredIDs(env *testenv.Env) []string {
	var ids []string
	for id := range env.Exchange.IDCounts() {
		ids = append(ids, id)
	}
	return ids
}

func TestWorkers_MalformedAndStaleRequestsEndInTheGraveyard(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Exchange: fastExchange()})
	garbage := []byte(`{"not":"a request"`)
	publish(t, env, garbage, "garbage")
	stale := wire.New(time.Now().Add(-time.Hour), time.Second, []byte(`{"order":7}`))
	staleData, err := stale.Encode()
	require.NoError(t, err)
	publish(t, env, staleData, stale.ID)
	ok := publishRequests(t, env, 10, time.Minute)

	startWorkers(t, env, 1, exchange.DefaultKeys()[:1])
	waitDrained(t, env, 30*time.Second)

	entries := graveyardEntries(t, env)
	require.Len(t, entries, 2)
	byReason := map[string]graveyard.Entry{}
	for _, e := range entries {
		byReason[e.Reason] = e
	}
	mal := byReason[wire.ReasonMalformed]
	require.Equal(t, garbage, mal.Original, "the full original payload is kept")
	require.Contains(t, mal.Error, "malformed")
	require.Equal(t, "w1", mal.Worker)
	exp := byReason[wire.ReasonExpired]
	require.Equal(t, stale.ID, exp.RequestID)
	require.Equal(t, staleData, exp.Original)
	require.Equal(t, uint64(1), exp.Deliveries)

	require.ElementsMatch(t, ok, answeredIDs(env), "a stale request is never sent")
}

func TestWorkers_RetryABurstOfServerErrorsUntilEverySucceeds(t *testing.T) {
	env := testenv.Start(t, testenv.Options{
		Exchange: fastExchange(),
		Streams: func(c *streams.Config) {
			c.Requests.Consumer.MaxDeliver = 20
		},
	})
	require.NoError(t, env.Exchange.SetFaults(exchange.Faults{ErrorRate: 0.5, ErrorStatus: 503}))
	ids := publishRequests(t, env, 300, time.Minute)
	ws := startWorkers(t, env, 2, exchange.DefaultKeys()[:2])

	require.Eventually(t, func() bool { return env.Exchange.Stats().Faults >= 50 }, 30*time.Second, 10*time.Millisecond)
	require.NoError(t, env.Exchange.SetFaults(exchange.Faults{}))
	waitDrained(t, env, 60*time.Second)

	answered := answeredIDs(env)
	sort.Strings(ids)
	sort.Strings(answered)
	require.Equal(t, ids, answered, "every request succeeded in the end")
	for _, k := range env.Exchange.Stats().Keys {
		require.Zero(t, k.RateLimited, "no 429 on %s", k.Name)
	}
	require.Empty(t, graveyardEntries(t, env))
	var serverErrors uint64
	for _, w := range ws {
		rep, err := w.Report(time.Now())
		require.NoError(t, err)
		serverErrors += rep.Results["server_error"]
	}
	require.GreaterOrEqual(t, serverErrors, uint64(50), "the 5xx answers were seen and retried")
}

func TestWorker_OneProcessHoldsSeveralKeysEachWithItsOwnLimiter(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Exchange: fastExchange()})
	ids := publishRequests(t, env, 500, time.Minute)
	ws := startWorkersHolding(t, env, 1, 5, exchange.DefaultKeys())
	waitDrained(t, env, 60*time.Second)

	st := env.Exchange.Stats()
	for _, k := range st.Keys {
		require.NotZero(t, k.OK, "key %s was used", k.Name)
		require.Zero(t, k.RateLimited, "no 429 on %s", k.Name)
		require.Zero(t, k.BadNonce, "no 400 on %s", k.Name)
	}
	require.ElementsMatch(t, ids, answeredIDs(env))
	rep, err := ws[0].Report(time.Now())
	require.NoError(t, err)
	held := 0
	for _, k := range rep.Keys {
		if k.Held {
			held++
			// Every answer was a 200, and the limiter's count of them is in the report.
			require.Equal(t, k.OK, k.Answers, "key %s", k.Name)
			require.LessOrEqual(t, k.BusyAnswers, k.Answers, "key %s", k.Name)
		}
	}
	require.Equal(t, 5, held)
}

func TestWorkers_LastFailedDeliveryBuriesWithEveryAttempt(t *testing.T) {
	env := testenv.Start(t, testenv.Options{
		Exchange: fastExchange(),
		Streams: func(c *streams.Config) {
			c.Requests.Consumer.MaxDeliver = 3
		},
	})
	require.NoError(t, env.Exchange.SetFaults(exchange.Faults{ErrorRate: 1, ErrorStatus: 502}))
	ids := publishRequests(t, env, 3, time.Minute)
	startWorkers(t, env, 2, exchange.DefaultKeys()[:2])
	waitDrained(t, env, 30*time.Second)

	entries := graveyardEntries(t, env)
	require.Len(t, entries, 3)
	var buried []string
	for _, e := range entries {
		buried = append(buried, e.RequestID)
		require.Equal(t, wire.ReasonMaxDeliveries, e.Reason)
		require.Equal(t, uint64(3), e.Deliveries)
		require.Len(t, e.Attempts, 3, "every attempt, whichever worker made it")
		for i, a := range e.Attempts {
			require.Equal(t, uint64(i+1), a.Delivery)
			require.Equal(t, 502, a.Status)
			require.Equal(t, "server_error", a.Result)
			require.NotEmpty(t, a.Key)
		}
		r, err := wire.Decode(e.Original)
		require.NoError(t, err, "the full original request is kept")
		require.Equal(t, e.RequestID, r.ID)
	}
	require.ElementsMatch(t, ids, buried)
}
