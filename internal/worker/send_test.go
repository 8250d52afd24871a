package worker_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/exchange"
	"github.com/ratefleet/ratefleet/internal/keys"
	"github.com/ratefleet/ratefleet/internal/keystate"
	"github.com/ratefleet/ratefleet/internal/limiter"
	"github.com/ratefleet/ratefleet/internal/testenv"
	"github.com/ratefleet/ratefleet/internal/upstream"
	"github.com/ratefleet/ratefleet/internal/worker"
)

// soloWorker is one worker on its own NATS connection, stopped on its own.
type soloWorker struct {
	w    *worker.Worker
	nc   *nats.Conn
	stop context.CancelFunc
	done chan struct{}
}

// startSolo runs a worker with its own connection and clock offset until stopped
// or the test ends.
func startSolo(t *testing.T, env *testenv.Env, id, upstreamURL string, skew time.Duration, lc limiter.Config, ks []keys.Key) *soloWorker {
	t.Helper()
	return startSoloHolding(t, env, id, upstreamURL, skew, lc, ks, 1)
}

// startSoloHolding is startSolo for a worker holding up to maxKeys keys.
func startSoloHolding(t *testing.T, env *testenv.Env, id, upstreamURL string, skew time.Duration, lc limiter.Config, ks []keys.Key, maxKeys int) *soloWorker {
	t.Helper()
	return startSoloWith(t, env, id, upstreamURL, skew, lc, ks, maxKeys, nil)
}

// startSoloWith is startSoloHolding with the worker's configuration changed by
// mod, if not nil.
func startSoloWith(t *testing.T, env *testenv.Env, id, upstreamURL string, skew time.Duration, lc limiter.Config, ks []keys.Key, maxKeys int, mod func(*worker.Config)) *soloWorker {
	t.Helper()
	nc, err := nats.Connect(env.NATS.ClientURL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	factory, err := worker.NewPacerFactory("adaptive", lc)
	require.NoError(t, err)
	clock := func() time.Time { return time.Now().Add(skew) }
	up, err := upstream.New(upstreamURL, 2*time.Second, 32, clock)
	require.NoError(t, err)
	t.Cleanup(up.Close)
	ctx, cancel := context.WithCancel(context.Background())
	cfg := worker.Config{
		ID: id, Keys: ks, MaxKeys: maxKeys, Upstream: up, Streams: env.Conn.Streams, NewPacer: factory, Now: clock,
		ClaimRetry: 100 * time.Millisecond, StatsInterval: 200 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})).With("test_worker", id),
	}
	if mod != nil {
		mod(&cfg)
	}
	w, err := worker.New(ctx, js, cfg)
	require.NoError(t, err)
	s := &soloWorker{w: w, nc: nc, stop: cancel, done: make(chan struct{})}
	go func() { defer close(s.done); _ = w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-s.done })
	return s
}

// crash cuts the worker off NATS and stops it: no handoff, no release.
func (s *soloWorker) crash() {
	s.nc.Close()
	s.stop()
	<-s.done
}

// concurrency serves h and tracks the most requests it had in progress at once.
type concurrency struct {
	now, most atomic.Int32
}

func (c *concurrency) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := c.now.Add(1)
		defer c.now.Add(-1)
		for {
			m := c.most.Load()
			if n <= m || c.most.CompareAndSwap(m, n) {
				break
			}
		}
		h.ServeHTTP(w, r)
	})
}

// slowAnswers starts NATS and a simulator whose arrivals come within 5 ms and
// whose answers 300 ms later, served at the returned URL, which counts the
// requests it has in progress at once.
func slowAnswers(t *testing.T) (*testenv.Env, string, *concurrency) {
	t.Helper()
	cfg := fastExchange()
	cfg.OutDelay = exchange.DelayRange{Min: 300 * time.Millisecond, Max: 300 * time.Millisecond}
	env := testenv.Start(t, testenv.Options{Exchange: cfg})
	c := new(concurrency)
	srv := httptest.NewServer(c.wrap(env.Exchange.Handler()))
	t.Cleanup(srv.Close)
	return env, srv.URL, c
}

func TestWorker_PipelinesAKeysRequestsWhenTheRoundTripExceedsTheDelayBound(t *testing.T) {
	// Arrivals within L (0..5 ms on the way in, with room for a loaded machine's
	// lag), answers 300 ms later: the limiter's order rule lets the next send leave
	// L + 1 ms after the previous one left, long before its answer.
	env, url, c := slowAnswers(t)
	ids := publishRequests(t, env, 20, time.Minute)
	startSolo(t, env, "w1", url, 0, fastLimiter(), exchange.DefaultKeys()[:1])
	waitDrained(t, env, 60*time.Second)

	k := env.Exchange.Stats().Keys[0]
	require.Zero(t, k.RateLimited)
	require.Zero(t, k.BadNonce, "nonces arrived in order although several were in flight")
	require.ElementsMatch(t, ids, answeredIDs(env))
	require.GreaterOrEqual(t, c.most.Load(), int32(2), "several requests of the key were in flight at once")
}

func TestWorker_AKeyHoldsAtMostMaxInFlightRequests(t *testing.T) {
	// The model above, where the key keeps two requests in flight at once; with
	// MaxInFlight 1 it keeps one, each handler taking the next request once its
	// own is settled.
	env, url, c := slowAnswers(t)
	ids := publishRequests(t, env, 10, time.Minute)
	startSoloWith(t, env, "w1", url, 0, fastLimiter(), exchange.DefaultKeys()[:1], 1, func(c *worker.Config) { c.MaxInFlight = 1 })
	waitDrained(t, env, 60*time.Second)

	require.ElementsMatch(t, ids, answeredIDs(env))
	require.Equal(t, int32(1), c.most.Load(), "requests of the key in flight at once")
}

func TestWorkers_AHandoffNeedsNoClockAgreement(t *testing.T) {
	tests := []struct {
		name          string
		first, second time.Duration // each holder's clock offset
	}{
		{"the next holder's clock is a second ahead", -500 * time.Millisecond, 500 * time.Millisecond},
		{"the next holder's clock is a second behind", 500 * time.Millisecond, -500 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The reference's one-second window, so a handoff (milliseconds) falls
			// well inside it.
			cfg := fastExchange()
			cfg.Window = time.Second
			lc := fastLimiter()
			lc.Rules = []limiter.Rule{limiter.DefaultRule}
			env := testenv.Start(t, testenv.Options{Exchange: cfg})
			publishRequests(t, env, 200, time.Minute)
			ks := exchange.DefaultKeys()[:1]
			a := startSolo(t, env, "first", env.ExchangeURL, tt.first, lc, ks)
			// Let the first holder fill the key's window, then hand over mid-stream.
			require.Eventually(t, func() bool { return env.Exchange.Stats().Keys[0].OK >= 30 }, 30*time.Second, time.Millisecond)
			startSolo(t, env, "second", env.ExchangeURL, tt.second, lc, ks)
			a.stop()
			<-a.done
			okAtHandoff := env.Exchange.Stats().Keys[0].OK
			require.Eventually(t, func() bool { return env.Exchange.Stats().Keys[0].OK >= okAtHandoff+30 }, 30*time.Second, 5*time.Millisecond,
				"the second holder serves the key")

			k := env.Exchange.Stats().Keys[0]
			require.Zero(t, k.RateLimited, "no 429 across the handoff")
			require.Zero(t, k.BadNonce, "no 400 across the handoff")
			require.LessOrEqual(t, k.MaxInWindow, 20)
		})
	}
}

// scripted429 answers 429 "exceeded rate limit" to as many requests as its
// budget allows, and holds every other request until the test ends.
type scripted429 struct {
	budget   atomic.Int32
	answered atomic.Int32
	stop     chan struct{}
	once     sync.Once
}

func (s *scripted429) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.budget.Add(-1) < 0 {
		select {
		case <-s.stop:
		case <-r.Context().Done():
		}
		return
	}
	s.answered.Add(1)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusTooManyRequests)
	_, _ = io.WriteString(w, `{"status":"error","error_msg":"exceeded rate limit"}`)
}

func TestWorkers_TheBanGuardTripsOnAKeysLifetimeCountAcrossACrash(t *testing.T) {
	env := testenv.Start(t, testenv.Options{})
	up := &scripted429{stop: make(chan struct{})}
	srv := httptest.NewServer(up)
	t.Cleanup(func() { up.once.Do(func() { close(up.stop) }); srv.Close() })
	store, err := keystate.Open(context.Background(), env.Conn.JS, env.Conn.Streams.KV.KeyState.Bucket)
	require.NoError(t, err)
	ks := exchange.DefaultKeys()[:1]
	count := func() int {
		r, _, err := store.Get(context.Background(), ks[0].Name())
		require.NoError(t, err)
		return r.Count429
	}
	publishRequests(t, env, 50, time.Minute)

	// The first holder draws two 429s, then its next request hangs: it crashes
	// with the two counted in key state.
	up.budget.Store(2)
	first := startSolo(t, env, "first", srv.URL, 0, fastLimiter(), ks)
	require.Eventually(t, func() bool { return count() == 2 }, 30*time.Second, 10*time.Millisecond)
	require.EqualValues(t, 2, up.answered.Load())
	first.crash()

	// The next holder starts from the fleet's count: its first 429 is the key's
	// third, which trips the guard (3 of the upstream's 10). The upstream would
	// answer a fourth.
	up.budget.Store(2)
	startSolo(t, env, "second", srv.URL, 0, fastLimiter(), ks)
	require.Eventually(t, func() bool {
		r, _, err := store.Get(context.Background(), ks[0].Name())
		return err == nil && r.Quarantined
	}, 30*time.Second, 10*time.Millisecond, "the ban guard quarantined the key")
	r, _, err := store.Get(context.Background(), ks[0].Name())
	require.NoError(t, err)
	require.True(t, r.Unusable)
	require.Equal(t, 3, r.Count429)
	require.EqualValues(t, 3, up.answered.Load(), "the key drew three 429s in its life, no more")
}

func TestWorkers_AWorkerThatJoinsLateGetsItsShareOfTheKeys(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Exchange: fastExchange()})
	ids := publishRequests(t, env, 600, time.Minute)
	ks := exchange.DefaultKeys()
	first := startSoloHolding(t, env, "first", env.ExchangeURL, 0, fastLimiter(), ks, 5)
	held := func(w *soloWorker) int {
		rep, err := w.w.Report(time.Now())
		require.NoError(t, err)
		n := 0
		for _, k := range rep.Keys {
			if k.Held {
				n++
			}
		}
		return n
	}
	require.Eventually(t, func() bool { return held(first) == 5 }, 10*time.Second, 10*time.Millisecond, "alone, it holds every key")
	second := startSoloHolding(t, env, "second", env.ExchangeURL, 0, fastLimiter(), ks, 5)
	require.Eventually(t, func() bool { return held(first) == 3 && held(second) == 2 }, 20*time.Second, 10*time.Millisecond,
		"keys handed over one at a time until the shares are even")
	waitDrained(t, env, 60*time.Second)
	for _, k := range env.Exchange.Stats().Keys {
		require.Zero(t, k.RateLimited, "no 429 on %s across the handovers", k.Name)
		require.Zero(t, k.BadNonce, "no 400 on %s across the handovers", k.Name)
	}
	// A key handed over keeps, in its old holder's report, its limiter as it
	// ended: every answer it had (all 200s) counted.
	rep, err := first.w.Report(time.Now())
	require.NoError(t, err)
	var handed []string
	for _, k := range rep.Keys {
		if !k.Held {
			handed = append(handed, k.Name)
			require.Equal(t, k.OK, k.Answers, "key %s", k.Name)
		}
	}
	require.Len(t, handed, 2)
	require.ElementsMatch(t, ids, answeredIDs(env))
}

// TestWorker_AStoppedWorkersReportKeepsItsKeysLimitersAsTheyEnded: a key's
// limiter is read for reports, and as the key's session ends, not for every
// request. With no report while the keys served (the interval is an hour),
// the report of the stopped worker still counts every answer its limiters had.
func TestWorker_AStoppedWorkersReportKeepsItsKeysLimitersAsTheyEnded(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Exchange: fastExchange()})
	ids := publishRequests(t, env, 100, time.Minute)
	w := startSoloWith(t, env, "solo", env.ExchangeURL, 0, fastLimiter(), exchange.DefaultKeys()[:2], 2,
		func(c *worker.Config) { c.StatsInterval = time.Hour })
	waitDrained(t, env, 30*time.Second)
	require.ElementsMatch(t, ids, answeredIDs(env))
	w.stop()
	<-w.done
	rep, err := w.w.Report(time.Now())
	require.NoError(t, err)
	var ok, answers uint64
	for _, k := range rep.Keys {
		require.False(t, k.Held, "key %s released", k.Name)
		ok += k.OK
		answers += k.Answers
	}
	require.Equal(t, uint64(len(ids)), ok)
	require.Equal(t, ok, answers, "every 200 in the limiters' counts")
}
