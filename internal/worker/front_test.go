package worker_test

import (
	"context"
	"net/http"
	"net/http/httptest"
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
)

// Requests to an endpoint that does not exist, refused by the web server in
// front of the upstream (a 404 page, not the upstream's format), end at their
// first answer, given back to the caller: they are not retried, and hold no
// place past their answer. Before, each was taken for a gateway's answer that
// might still be passed on: retried five times, each holding a place for the
// gateway hold, so five of them slowed every good request on the key.
func TestWorkers_ARefusalInFrontOfTheUpstreamIsFinalAndSentOnce(t *testing.T) {
	var missing, good atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/missing" {
			missing.Add(1)
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte("<html>not found</html>"))
			return
		}
		good.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ok":true}`))
	}))
	t.Cleanup(up.Close)
	env := testenv.Start(t, testenv.Options{})
	p := loadProfile(t, profile.PerMinuteYAML, up.URL, profile.Rule{Limit: 20, Window: time.Second})
	p.Calls = nil // any call: the endpoint's absence is the upstream's to say
	startProfiled(t, env, 1, exchange.DefaultKeys()[:1], p, limiter.Config{MaxDelay: 50 * time.Millisecond})
	nc, err := nats.Connect(env.NATS.ClientURL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	c, err := client.New(nc)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var bad, ok []string
	for range 5 {
		id, err := c.Submit(ctx, client.Request{TTL: time.Minute, Call: &client.Call{Path: "/missing"}})
		require.NoError(t, err)
		bad = append(bad, id)
	}
	for range 40 {
		id, err := c.Submit(ctx, client.Request{TTL: time.Minute})
		require.NoError(t, err)
		ok = append(ok, id)
	}
	for _, id := range bad {
		res, err := c.Await(ctx, id)
		require.NoError(t, err)
		require.Equal(t, client.Served, res.Outcome)
		require.Equal(t, http.StatusNotFound, res.Status, "the refusal is given back")
		require.Equal(t, "<html>not found</html>", res.Body)
	}
	for _, id := range ok {
		res, err := c.Await(ctx, id)
		require.NoError(t, err)
		require.True(t, res.OK())
	}
	require.Equal(t, int64(5), missing.Load(), "each refused request sent once")
	require.Equal(t, int64(40), good.Load())
	require.Empty(t, graveyardEntries(t, env))
}
