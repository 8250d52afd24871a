package worker_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
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
