package worker_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/client"
	"github.com/ratefleet/ratefleet/internal/exchange"
	"github.com/ratefleet/ratefleet/internal/limiter"
	"github.com/ratefleet/ratefleet/internal/profile"
	"github.com/ratefleet/ratefleet/internal/testenv"
	"github.com/ratefleet/ratefleet/wire"
)

// On a server with a stock 1 MiB max payload, an upstream answering 1.5 MiB:
// each request is sent once, and its caller gets the whole answer (kept in the
// results stream, in parts). Before, the result's publish failed, the request was
// sent again at every delivery and buried with its answer lost.
func TestWorkers_AnAnswerLargerThanAMessageIsKeptWholeAndSentOnce(t *testing.T) {
	const size = 3 << 19 // 1.5 MiB
	big := `{"data":"` + strings.Repeat("x", size) + `"}`
	var sends atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sends.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(big))
	}))
	t.Cleanup(up.Close)

	env := testenv.Start(t, testenv.Options{MaxPayload: 1 << 20})
	require.Equal(t, int64(1<<20), env.Conn.NC.MaxPayload())
	p := loadProfile(t, profile.PerMinuteYAML, up.URL, profile.Rule{Limit: 100, Window: time.Second})
	p.Answers.MaxBody = 2 << 20
	startProfiled(t, env, 1, exchange.DefaultKeys()[:1], p, limiter.Config{MaxDelay: 250 * time.Millisecond})

	nc, err := nats.Connect(env.NATS.ClientURL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	c, err := client.New(nc)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const n = 3
	for i := range n {
		res, err := c.Do(ctx, client.Request{TTL: time.Minute})
		require.NoError(t, err, "request %d", i)
		require.Equal(t, wire.Served, res.Outcome)
		require.Equal(t, len(big), res.BodySize)
		require.Equal(t, big, res.Body, "the whole answer")
		again, err := c.Await(ctx, res.ID)
		require.NoError(t, err)
		require.Equal(t, big, again.Body, "and again from the results stream")
	}
	waitDrained(t, env, 10*time.Second)
	require.Equal(t, int64(n), sends.Load(), "each request sent once")
}

// An LLM-like upstream answering in 3 to 8 s, with the ack wait at its default
// (10 s) and a request timeout above it: every request is sent exactly once.
// The message stays in progress for the whole send, so no delivery repeats it.
func TestWorkers_ASlowUpstreamGetsEveryRequestExactlyOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("answers take up to 8 s")
	}
	var mu sync.Mutex
	sends := map[string]int{}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("X-Request-Id")
		mu.Lock()
		sends[id]++
		n := len(sends)
		mu.Unlock()
		time.Sleep(3*time.Second + time.Duration(n%6)*time.Second) // 3 to 8 s
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"completion":"…"}`))
	}))
	t.Cleanup(up.Close)
	env := testenv.Start(t, testenv.Options{})
	require.Equal(t, 10*time.Second, env.Conn.Streams.Requests.Consumer.AckWait, "the default ack wait")
	p := loadProfile(t, profile.PerMinuteYAML, up.URL, profile.Rule{Limit: 600, Window: time.Minute})
	startProfiledTimeout(t, env, 1, exchange.DefaultKeys()[:1], p, limiter.Config{MaxDelay: 50 * time.Millisecond}, 20*time.Second)

	ids := publishRequests(t, env, 16, 2*time.Minute)
	waitDrained(t, env, 60*time.Second)
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, sends, len(ids))
	for id, n := range sends {
		require.Equal(t, 1, n, "request %s sent %d times", id, n)
	}
	require.Empty(t, graveyardEntries(t, env))
}
