// Package testenv starts what integration tests run against: an embedded NATS
// server with streams.yaml applied and the upstream simulator on loopback. Each is
// stopped by the test's cleanup.
package testenv

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/embedded"
	"github.com/ratefleet/ratefleet/internal/exchange"
	"github.com/ratefleet/ratefleet/internal/natsconn"
	"github.com/ratefleet/ratefleet/internal/streams"
)

// Env is a running test environment.
type Env struct {
	NATS     *embedded.Server
	Conn     *natsconn.Conn
	Exchange *exchange.Server
	// ExchangeURL is the simulator's base URL.
	ExchangeURL string
}

// Options adjust the environment.
type Options struct {
	// Exchange configures the simulator; exchange.DefaultConfig() when nil.
	Exchange *exchange.Config
	// MaxPayload is the server's max payload; 8 MiB when 0 (1 MiB is a stock
	// server's).
	MaxPayload int32
	// Streams changes the applied declarations before they are applied.
	Streams func(*streams.Config)
}

// Start starts NATS with the declarations applied and the simulator.
func Start(t testing.TB, o Options) *Env {
	t.Helper()
	ns, c := startNATS(t, o.MaxPayload, o.Streams)
	return startExchange(t, &Env{NATS: ns, Conn: c}, o)
}

func startExchange(t testing.TB, env *Env, o Options) *Env {
	t.Helper()
	cfg := exchange.DefaultConfig()
	if o.Exchange != nil {
		cfg = *o.Exchange
	}
	ex, err := exchange.New(cfg, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	require.NoError(t, ex.Open("127.0.0.1:0"))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = ex.Close(ctx)
	})
	env.Exchange, env.ExchangeURL = ex, ex.URL()
	return env
}

// NATS starts an embedded server alone and connects to it as natsconn does (the
// built-in declarations applied), then, when mod is not nil, changes the
// declarations (with priorities, and then with mod) and applies them again.
func NATS(t testing.TB, mod func(*streams.Config)) *natsconn.Conn {
	t.Helper()
	_, c := startNATS(t, 0, mod)
	return c
}

// startNATS starts an embedded server with the given max payload (its default
// when 0), connects to it, and applies the declarations changed by mod, if any.
func startNATS(t testing.TB, maxPayload int32, mod func(*streams.Config)) (*embedded.Server, *natsconn.Conn) {
	t.Helper()
	ns, err := embedded.Start(embedded.Options{MaxPayload: maxPayload})
	require.NoError(t, err)
	t.Cleanup(ns.Shutdown)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := natsconn.Open(ctx, natsconn.Options{URL: ns.ClientURL(), Name: "testenv", Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	t.Cleanup(c.NC.Close)
	// Tests run with priorities, the fleet's fullest shape: urgent requests
	// have a consumer of their own.
	c.Streams.Requests.Consumer.Priorities = true
	if mod != nil {
		mod(c.Streams)
	}
	require.NoError(t, c.Streams.Validate())
	_, err = c.Streams.Apply(ctx, c.JS)
	require.NoError(t, err)
	return ns, c
}
