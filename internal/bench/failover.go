package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"syscall"
	"time"

	"github.com/ratefleet/ratefleet/internal/fleet"
	"github.com/ratefleet/ratefleet/internal/lease"
)

// FailoverConfig describes the failover benchmark: a loaded fleet with spare
// workers, one key holder killed every Every, alternately with SIGKILL and SIGTERM,
// and a fresh worker started for each one lost.
type FailoverConfig struct {
	Bin      string
	Workers  int
	Duration time.Duration
	Every    time.Duration
	Rate     float64
	Logs     io.Writer
	Logger   *slog.Logger
}

// FailoverResult is what the failover benchmark measured.
type FailoverResult struct {
	Summary  fleet.Summary
	Kills    []string // what was done, in order
	OKPerSec float64  // answered 200 per second over the run, as the simulator counted
}

// Failover runs the failover benchmark.
func Failover(ctx context.Context, cfg FailoverConfig) (FailoverResult, error) {
	var res FailoverResult
	f, err := fleet.Up(ctx, fleet.Config{
		Bin: cfg.Bin, Workers: cfg.Workers, Duration: cfg.Duration, Drain: 30 * time.Second,
		ProducerArgs: []string{"--shape", "rate", "--rate", fmt.Sprint(cfg.Rate), "--ttl", "10m", "--progress", "0"},
		Logs:         cfg.Logs, Logger: cfg.Logger,
	})
	if err != nil {
		return res, err
	}
	defer f.Down()
	leases, err := f.Conn.JS.KeyValue(ctx, f.Conn.Streams.KV.Leases.Bucket)
	if err != nil {
		return res, fmt.Errorf("open leases: %w", err)
	}
	if err := f.StartProducer(); err != nil {
		return res, err
	}
	start := time.Now()
	before, err := fleet.FetchExchangeTotals(ctx, f.ExchangeURL)
	if err != nil {
		return res, err
	}
	tick := time.NewTicker(cfg.Every)
	defer tick.Stop()
	n := 0
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-f.Producer.Done():
			break loop
		case <-tick.C:
		}
		key := fmt.Sprintf("key%d", n%5+1)
		rec, ok, err := lease.Holder(ctx, leases, key)
		if err != nil || !ok {
			res.Kills = append(res.Kills, fmt.Sprintf("%s: no holder to kill", key))
			n++
			continue
		}
		sig, name := syscall.SIGKILL, "kill -9"
		if n%2 == 1 {
			sig, name = syscall.SIGTERM, "SIGTERM"
		}
		for _, w := range f.Workers {
			if w.Name == rec.Holder {
				_ = w.Signal(sig)
			}
		}
		res.Kills = append(res.Kills, fmt.Sprintf("%s %s (holder of %s) at %s", name, rec.Holder, key, time.Since(start).Round(time.Second)))
		cfg.Logger.Info("failover: stopped a holder", "signal", name, "worker", rec.Holder, "key", key)
		if _, err := f.StartWorker(); err != nil {
			return res, err
		}
		n++
	}
	after, err := fleet.FetchExchangeTotals(ctx, f.ExchangeURL)
	if err != nil {
		return res, err
	}
	res.OKPerSec = float64(after.OK-before.OK) / time.Since(start).Seconds()
	_ = f.Producer.Stop(10 * time.Second)
	f.StopWorkers()
	res.Summary, err = f.Summarize(ctx, time.Since(start))
	return res, err
}

// FormatFailover renders the failover result.
func FormatFailover(r FailoverResult, cfg FailoverConfig) string {
	var b strings.Builder
	s := r.Summary
	fmt.Fprintf(&b, "Failover: 5 keys, %d workers, %.0f req/s offered, %s, one holder stopped every %s (kill -9 and SIGTERM in turn), a new worker started for each.\n",
		cfg.Workers, cfg.Rate, cfg.Duration, cfg.Every)
	for _, k := range r.Kills {
		fmt.Fprintf(&b, "  %s\n", k)
	}
	fmt.Fprintf(&b, "successful: %.2f req/s over the run (%d)   429: %d   400: %d   answered twice: %d\n",
		r.OKPerSec, s.Successful, s.Exchange.RateLimited, s.Exchange.BadNonce, s.Exchange.Duplicates)
	fmt.Fprintf(&b, "published %d = acknowledged %d + graveyard %d + still queued %d (from NATS)\n",
		s.Published, s.Published-s.Buried-s.InQueue, s.Buried, s.InQueue)
	fmt.Fprintf(&b, "the simulator answered %d distinct requests 200; %s\n", s.Exchange.Distinct, fleet.LostLine(s))
	return b.String()
}
