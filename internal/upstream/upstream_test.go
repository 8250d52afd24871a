package upstream_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/exchange"
	"github.com/ratefleet/ratefleet/internal/upstream"
)

func startExchange(t *testing.T, mutate func(*exchange.Config)) *exchange.Server {
	t.Helper()
	cfg := exchange.DefaultConfig()
	cfg.InDelay, cfg.OutDelay = exchange.DelayRange{}, exchange.DelayRange{}
	cfg.Limit = 2
	cfg.BlockAfter = 3
	if mutate != nil {
		mutate(&cfg)
	}
	ex, err := exchange.New(cfg, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	require.NoError(t, ex.Open("127.0.0.1:0"))
	t.Cleanup(func() { _ = ex.Close(context.Background()) })
	return ex
}

func TestClient_ClassifiesEachAnswer(t *testing.T) {
	ex := startExchange(t, nil)
	c, err := upstream.New(ex.URL(), 2*time.Second, 4, nil)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	key := exchange.DefaultKeys()[0].Secret()
	ctx := context.Background()

	wrote := false
	a := c.Send(ctx, key, 10, "r1", func(time.Time) { wrote = true })
	require.Equal(t, upstream.OK, a.Class, a.Msg)
	require.True(t, wrote)
	require.False(t, a.Wrote.After(a.Answered))
	require.False(t, a.Unknown())

	a = c.Send(ctx, key, 5, "r2", nil)
	require.Equal(t, upstream.BadNonce, a.Class)
	require.Equal(t, 400, a.Status)

	// The ring of 2 is full now: the next ones within the window are rate-limited,
	// and the third rejection blocks the key.
	for range 3 {
		a = c.Send(ctx, key, 20, "r3", nil)
		require.Equal(t, upstream.RateLimited, a.Class)
	}
	a = c.Send(ctx, key, 21, "r4", nil)
	require.Equal(t, upstream.KeyUnusable, a.Class, "blocked")
	require.Equal(t, 429, a.Status)

	a = c.Send(ctx, "not-a-key", 1, "r5", nil)
	require.Equal(t, upstream.KeyUnusable, a.Class)
	require.Equal(t, 401, a.Status)

	require.NoError(t, ex.SetFaults(exchange.Faults{ErrorRate: 1, ErrorStatus: 502}))
	a = c.Send(ctx, exchange.DefaultKeys()[1].Secret(), 1, "r6", nil)
	require.Equal(t, upstream.ServerError, a.Class)
	require.Equal(t, 502, a.Status)
}

func TestClient_TimeoutIsAnUnknownOutcomeAndNeverShowsTheKey(t *testing.T) {
	ex := startExchange(t, func(c *exchange.Config) { c.OutDelay = exchange.DelayRange{Min: time.Second, Max: time.Second} })
	c, err := upstream.New(ex.URL(), 100*time.Millisecond, 4, nil)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	secret := exchange.DefaultKeys()[0].Secret()
	a := c.Send(context.Background(), secret, 1, "slow", nil)
	require.Equal(t, upstream.Timeout, a.Class)
	require.True(t, a.Unknown(), "the request left; no answer came back")
	require.NotContains(t, a.Msg, secret)
}

func TestClient_ConnectionRefused(t *testing.T) {
	c, err := upstream.New("http://127.0.0.1:1", time.Second, 1, nil)
	require.NoError(t, err)
	secret := exchange.DefaultKeys()[0].Secret()
	a := c.Send(context.Background(), secret, 1, "x", nil)
	require.Equal(t, upstream.ConnError, a.Class)
	require.False(t, a.Unknown(), "nothing left")
	require.NotContains(t, a.Msg, secret)
}

func TestNew_RejectsABadURL(t *testing.T) {
	for _, u := range []string{"", "127.0.0.1:8080", "ftp://x", "http://"} {
		_, err := upstream.New(u, time.Second, 1, nil)
		require.Error(t, err, u)
	}
}
