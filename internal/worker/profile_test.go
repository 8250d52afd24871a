package worker_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/exchange"
	"github.com/ratefleet/ratefleet/internal/graveyard"
	"github.com/ratefleet/ratefleet/internal/keys"
	"github.com/ratefleet/ratefleet/internal/limiter"
	"github.com/ratefleet/ratefleet/internal/profile"
	"github.com/ratefleet/ratefleet/internal/testenv"
	"github.com/ratefleet/ratefleet/internal/upstream"
	"github.com/ratefleet/ratefleet/internal/worker"
	"github.com/ratefleet/ratefleet/wire"
)

func signedKeys() []keys.Key { return exchange.SignedKeys() }

// loadProfile parses a built-in profile pointed at baseURL, with its rules
// replaced by rules.
func loadProfile(t *testing.T, doc, baseURL string, rules ...profile.Rule) *profile.Profile {
	t.Helper()
	p, err := profile.Parse("test", []byte(doc))
	require.NoError(t, err)
	p.BaseURL = baseURL
	p.Rate.Rules = rules
	return p
}

// startProfiled runs n workers sending through profile p until the test ends.
func startProfiled(t *testing.T, env *testenv.Env, n int, ks []keys.Key, p *profile.Profile, lc limiter.Config) {
	t.Helper()
	startProfiledTimeout(t, env, n, ks, p, lc, 2*time.Second)
}

// startProfiledTimeout is startProfiled with the workers' request timeout.
func startProfiledTimeout(t *testing.T, env *testenv.Env, n int, ks []keys.Key, p *profile.Profile, lc limiter.Config, timeout time.Duration) {
	t.Helper()
	require.NoError(t, p.CheckKeys(ks))
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	factory, err := worker.NewPacerFactory("adaptive", p.LimiterConfig(lc))
	require.NoError(t, err)
	for i := range n {
		up, err := upstream.NewProfile(p, timeout, 32, nil)
		require.NoError(t, err)
		t.Cleanup(up.Close)
		w, err := worker.New(ctx, env.Conn.JS, worker.Config{
			ID: fmt.Sprintf("w%d", i+1), Keys: ks, Upstream: up, Streams: env.Conn.Streams,
			NewPacer: factory, ClaimRetry: 100 * time.Millisecond, StatsInterval: 200 * time.Millisecond,
			Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		})
		require.NoError(t, err)
		wg.Go(func() { _ = w.Run(ctx) })
	}
}

// results reads every result in the results stream.
func results(t *testing.T, env *testenv.Env) []wire.Result {
	t.Helper()
	ctx := context.Background()
	st, err := env.Conn.JS.Stream(ctx, env.Conn.Streams.Results.Stream.Name)
	require.NoError(t, err)
	info, err := st.Info(ctx)
	require.NoError(t, err)
	var out []wire.Result
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		require.NoError(t, err)
		r, err := wire.DecodeResult(m.Data)
		require.NoError(t, err)
		require.Equal(t, wire.ResultSubject(env.Conn.Streams.Results.Prefix(), wire.Anonymous, r.ID), m.Subject)
		out = append(out, r)
	}
	return out
}

func TestWorkers_SignedProfileServesEveryRequestWithOneResultEach(t *testing.T) {
	cfg := fastExchange()
	cfg.Keys = signedKeys()
	env := testenv.Start(t, testenv.Options{Exchange: cfg})
	ids := publishRequests(t, env, 400, time.Minute)
	p := loadProfile(t, profile.SignedYAML, env.ExchangeURL, profile.Rule{Limit: 20, Window: 100 * time.Millisecond})
	startProfiled(t, env, 3, signedKeys(), p, limiter.Config{MaxDelay: 250 * time.Millisecond})

	waitDrained(t, env, 60*time.Second)
	st := env.Exchange.Stats()
	require.Zero(t, st.UnknownKey, "every signature was right")
	for _, k := range st.Keys {
		require.Zero(t, k.RateLimited, "no 429 on %s", k.Name)
		require.Zero(t, k.BadNonce, "no 400 on %s", k.Name)
	}
	answered := answeredIDs(env)
	sort.Strings(ids)
	sort.Strings(answered)
	require.Equal(t, ids, answered, "every request signed, sent and answered 200")

	var got []string
	for _, r := range results(t, env) {
		require.Equal(t, wire.Served, r.Outcome)
		require.Equal(t, http.StatusOK, r.Status)
		require.Contains(t, r.Body, `"req_id":"`+r.ID+`"`, "the upstream's own answer comes back")
		require.Equal(t, []string{"application/json"}, r.Header["Content-Type"])
		got = append(got, r.ID)
	}
	sort.Strings(got)
	require.Equal(t, ids, got, "one result per request")
}

// arrivals records when each per-minute request was answered, and its status.
type arrivals struct {
	h  http.Handler
	mu sync.Mutex
	at []time.Time
	st []int
}

func (a *arrivals) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec := httptest.NewRecorder()
	a.h.ServeHTTP(rec, r)
	a.mu.Lock()
	a.at, a.st = append(a.at, time.Now()), append(a.st, rec.Code)
	a.mu.Unlock()
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
}

func TestWorker_PerMinuteProfileHonoursRetryAfterAndKeepsTheKey(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Exchange: fastExchange()})
	cfg := exchange.DefaultConfig()
	cfg.Keys = exchange.DefaultKeys()[:1]
	cfg.InDelay, cfg.OutDelay = exchange.DelayRange{}, exchange.DelayRange{}
	cfg.BlockAfter = 0
	ex, err := exchange.New(cfg, nil)
	require.NoError(t, err)
	rec := &arrivals{h: ex.Handler()}
	srv := httptest.NewServer(rec)
	t.Cleanup(srv.Close)

	// Throttled for 5 s with Retry-After: 2: the key draws 429s at about 0, 2
	// and 4 s (more than the reference's ban guard takes), then serves them all.
	ex.Throttle(5*time.Second, 2*time.Second)
	ids := publishRequests(t, env, 5, time.Minute)
	p := loadProfile(t, profile.PerMinuteYAML, srv.URL, profile.Rule{Limit: 20, Window: 100 * time.Millisecond})
	startProfiled(t, env, 1, cfg.Keys, p, limiter.Config{})
	waitDrained(t, env, 30*time.Second)

	rec.mu.Lock()
	defer rec.mu.Unlock()
	// The profile has no nonce, so the requests a window allows leave together
	// and come back 429 together. Every arrival after such a burst (more than
	// 50 ms after a 429) was sent after the 429 came back: it waited out
	// Retry-After.
	var n429 int
	for i, s := range rec.st {
		if s != http.StatusTooManyRequests {
			continue
		}
		n429++
		require.Less(t, i+1, len(rec.at))
		for _, at := range rec.at[i+1:] {
			if gap := at.Sub(rec.at[i]); gap > 50*time.Millisecond {
				require.GreaterOrEqual(t, gap, 2*time.Second-10*time.Millisecond, "the next send waited out Retry-After")
				break
			}
		}
	}
	require.GreaterOrEqual(t, n429, 3, "three 429s: past the reference's ban guard")
	var served []string
	for _, r := range results(t, env) {
		require.Equal(t, wire.Served, r.Outcome, r.Error)
		require.Equal(t, 200, r.Status)
		served = append(served, r.ID)
		require.True(t, strings.Contains(r.Body, r.ID))
	}
	sort.Strings(ids)
	sort.Strings(served)
	require.Equal(t, ids, served, "the key was never quarantined: every request served")
}

func TestWorkers_ARequestOfANewerVersionIsLeftThenBuriedNeverSent(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Exchange: fastExchange()})
	created := time.Now().UTC().Format(time.RFC3339Nano)
	publish(t, env, []byte(`{"v":5,"id":"from-the-future","created":"`+created+`","ttl_ms":60000,"call3":{"x":1}}`), "from-the-future")
	startWorkers(t, env, 1, exchange.DefaultKeys()[:1])

	waitDrained(t, env, 30*time.Second)
	require.Empty(t, answeredIDs(env), "never sent")
	graves := graveyardEntries(t, env)
	require.Len(t, graves, 1)
	require.Equal(t, "from-the-future", graves[0].RequestID)
	require.Len(t, graves[0].Attempts, env.Conn.Streams.Requests.Consumer.MaxDeliver, "left for a newer worker at every delivery")
	require.Contains(t, graves[0].Error, "unsupported_version")
	rs := results(t, env)
	require.Len(t, rs, 1)
	require.Equal(t, wire.Buried, rs[0].Outcome)
	require.Contains(t, rs[0].Error, "a newer worker must serve it")
}

func TestWorker_AWeightedRequestTakesItsWeightOfTheWindow(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Exchange: fastExchange()})
	var ids []string
	for range 40 {
		r := wire.New(time.Now(), time.Minute, nil)
		r.Weight = 5
		b, err := r.Encode()
		require.NoError(t, err)
		publish(t, env, b, r.ID)
		ids = append(ids, r.ID)
	}
	p := loadProfile(t, profile.ReferenceYAML, env.ExchangeURL, profile.Rule{Limit: 20, Window: 100 * time.Millisecond})
	p.Rate.MaxWeight = 5
	startProfiled(t, env, 1, exchange.DefaultKeys()[:1], p, limiter.Config{MaxDelay: 250 * time.Millisecond})

	waitDrained(t, env, 30*time.Second)
	k := env.Exchange.Stats().Keys[0]
	require.EqualValues(t, 40, k.OK)
	require.LessOrEqual(t, k.MaxInWindow, 4, "weight 5 of 20 units: at most 4 requests in any window")
	require.Len(t, results(t, env), len(ids))
}

// sends records every request that reaches the simulator: its method and the
// path as it came on the wire.
type sends struct {
	h  http.Handler
	mu sync.Mutex
	at []string
}

func (s *sends) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.at = append(s.at, r.Method+" "+r.URL.EscapedPath())
	s.mu.Unlock()
	s.h.ServeHTTP(w, r)
}

// TestWorker_ACallTheProfileDoesNotListIsBuriedNeverSent runs a worker whose
// profile lists one call. Calls outside the list, and paths that go up only
// once decoded (%2e%2e, ..%2f: wire.Call.Validate refuses them when the request
// is decoded), are buried as not_allowed with a result each: none reaches the
// simulator, while the listed call is served.
func TestWorker_ACallTheProfileDoesNotListIsBuriedNeverSent(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Exchange: fastExchange()})
	rec := &sends{h: env.Exchange.Handler()}
	srv := httptest.NewServer(rec)
	t.Cleanup(srv.Close)

	var served, refused []string
	for i, c := range []wire.Call{
		{Method: "GET", Path: "/api/request"},
		{Method: "GET", Path: "/api/request"},
		{Method: "GET", Path: "/admin/faults"},
		{Method: "POST", Path: "/api/request", Body: "a=1"},
		{Method: "DELETE", Path: "/admin/faults"},
		{Method: "GET", Path: "/api/request/x"},
	} {
		r := wire.New(time.Now(), time.Minute, nil)
		r.Call = &c
		b, err := r.Encode()
		require.NoError(t, err)
		publish(t, env, b, r.ID)
		if i < 2 {
			served = append(served, r.ID)
		} else {
			refused = append(refused, r.ID)
		}
	}
	created := time.Now().UTC().Format(time.RFC3339Nano)
	encoded := map[string]string{
		"dots":             "/api/%2e%2e/admin/faults",
		"dots in capitals": "/api/%2E%2E/admin/faults",
		"slash":            "/api/..%2fadmin/faults",
	}
	for name, path := range encoded {
		id := "encoded-" + strings.ReplaceAll(name, " ", "-")
		publish(t, env, []byte(`{"v":2,"id":"`+id+`","created":"`+created+`","ttl_ms":60000,"call":{"method":"GET","path":"`+path+`"}}`), id)
	}

	p := loadProfile(t, profile.ReferenceYAML+"calls:\n  - {method: GET, path: /api/request}\n", srv.URL, profile.Rule{Limit: 20, Window: 100 * time.Millisecond})
	require.Len(t, p.Calls, 1)
	startProfiled(t, env, 1, exchange.DefaultKeys()[:1], p, limiter.Config{MaxDelay: 250 * time.Millisecond})
	waitDrained(t, env, 30*time.Second)

	rec.mu.Lock()
	require.Equal(t, []string{"GET /api/request", "GET /api/request"}, rec.at, "only the listed call reaches the simulator")
	rec.mu.Unlock()
	require.ElementsMatch(t, served, answeredIDs(env))

	notAllowed := map[string]graveyard.Entry{}
	for _, e := range graveyardEntries(t, env) {
		require.Equal(t, wire.ReasonNotAllowed, e.Reason, "buried as %s: %s", e.Reason, e.Error)
		notAllowed[e.RequestID] = e
	}
	require.Len(t, notAllowed, len(refused)+len(encoded))
	for _, id := range refused {
		e, ok := notAllowed[id]
		require.True(t, ok, "request %s buried as not_allowed", id)
		require.Contains(t, e.Error, "not among the profile's calls")
		require.Empty(t, e.Attempts, "never sent")
	}
	for name, path := range encoded {
		id := "encoded-" + strings.ReplaceAll(name, " ", "-")
		e, ok := notAllowed[id]
		require.True(t, ok, "%s: buried as not_allowed", path)
		require.Contains(t, e.Error, "path leaves the base URL", "%s: refused when decoded", path)
		refused = append(refused, id)
	}
	for _, r := range results(t, env) {
		if r.Outcome == wire.Buried {
			require.Equal(t, wire.ReasonNotAllowed, r.Reason)
			require.Contains(t, refused, r.ID, "each refused request has its result")
		}
	}
	require.EqualValues(t, len(served), env.Exchange.Stats().Keys[0].OK)
}
