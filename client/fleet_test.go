package client_test

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/ratefleet/ratefleet/internal/embedded"
	"github.com/ratefleet/ratefleet/internal/exchange"
	"github.com/ratefleet/ratefleet/internal/limiter"
	"github.com/ratefleet/ratefleet/internal/natsconn"
	"github.com/ratefleet/ratefleet/internal/upstream"
	"github.com/ratefleet/ratefleet/internal/worker"
)

// startFleet runs, on loopback, an embedded NATS with streams.yaml applied, the
// simulated reference exchange (no delays) and one worker holding its five keys.
// It returns NATS's URL and a function that stops everything.
func startFleet() (string, func(), error) {
	quiet := slog.New(slog.DiscardHandler)
	ns, err := embedded.Start(embedded.Options{})
	if err != nil {
		return "", nil, err
	}
	stops := []func(){ns.Shutdown}
	stop := func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	conn, err := natsconn.Open(ctx, natsconn.Options{URL: ns.ClientURL(), Name: "example", Logger: quiet})
	if err != nil {
		cancel()
		stop()
		return "", nil, err
	}
	stops = append(stops, conn.Close)
	cfg := exchange.DefaultConfig()
	cfg.InDelay, cfg.OutDelay = exchange.DelayRange{}, exchange.DelayRange{}
	ex, err := exchange.New(cfg, quiet)
	if err == nil {
		err = ex.Open("127.0.0.1:0")
	}
	if err != nil {
		cancel()
		stop()
		return "", nil, err
	}
	stops = append(stops, func() { _ = ex.Close(context.Background()) })
	up, err := upstream.New(ex.URL(), 2*time.Second, 8, nil)
	if err != nil {
		cancel()
		stop()
		return "", nil, err
	}
	factory, _ := worker.NewPacerFactory(worker.Adaptive, limiter.Config{})
	w, err := worker.New(ctx, conn.JS, worker.Config{
		ID: "example", Keys: exchange.DefaultKeys(), MaxKeys: 5, Upstream: up, Streams: conn.Streams,
		NewPacer: factory, Logger: quiet,
	})
	if err != nil {
		cancel()
		stop()
		return "", nil, err
	}
	var wg sync.WaitGroup
	wg.Go(func() { _ = w.Run(ctx) })
	stops = append(stops, func() { cancel(); wg.Wait(); up.Close() })
	return ns.ClientURL(), stop, nil
}
