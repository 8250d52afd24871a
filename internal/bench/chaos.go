package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/ratefleet/ratefleet/internal/fleet"
	"github.com/ratefleet/ratefleet/internal/stats"
)

// ChaosConfig describes the cluster benchmark: a fleet on the embedded three-node
// cluster, under load, with one node stopped every Every and started again after
// Down.
type ChaosConfig struct {
	Bin              string
	Workers          int
	Rate             float64
	Duration         time.Duration
	Every, Down, TTL time.Duration
	Logs             io.Writer
	Logger           *slog.Logger
}

// ChaosResult is what the run did.
type ChaosResult struct {
	Stops    []string
	Summary  fleet.Summary
	OKPerSec float64
}

// Chaos runs the cluster benchmark.
func Chaos(ctx context.Context, cfg ChaosConfig) (ChaosResult, error) {
	var res ChaosResult
	f, err := fleet.Up(ctx, fleet.Config{
		Bin: cfg.Bin, Workers: cfg.Workers, Duration: cfg.Duration, Drain: 60 * time.Second, Cluster: 3,
		ProducerArgs: []string{"--shape", "rate", "--rate", fmt.Sprint(cfg.Rate), "--ttl", cfg.TTL.String(), "--progress", "0"},
		Logs:         cfg.Logs, Logger: cfg.Logger,
	})
	if err != nil {
		return res, err
	}
	defer f.Down()
	start := time.Now()
	produced := make(chan error, 1)
	go func() { produced <- f.Produce(ctx) }()
	t := time.NewTicker(cfg.Every)
	defer t.Stop()
	node := 0
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case err := <-produced:
			if err != nil {
				return res, err
			}
			break loop
		case <-t.C:
		}
		i := node % len(f.Cluster.Nodes)
		node++
		at := time.Since(start).Round(time.Second)
		f.Cluster.StopNode(i)
		cfg.Logger.Info("benchmark: stopped a NATS node", "node", i+1, "at", at)
		if err := fleet.Sleep(ctx, cfg.Down); err != nil {
			break
		}
		if err := f.Cluster.StartNode(i); err != nil {
			return res, fmt.Errorf("restart node %d: %w", i+1, err)
		}
		res.Stops = append(res.Stops, fmt.Sprintf("%s: node %d stopped for %s, then started again", at, i+1, cfg.Down))
	}
	producing := time.Since(start)
	f.Drain(ctx)
	f.StopWorkers()
	res.Summary, err = f.Summarize(ctx, producing)
	if err != nil {
		return res, err
	}
	res.OKPerSec = float64(res.Summary.Exchange.Distinct) / producing.Seconds()
	return res, nil
}

// FormatChaos renders the cluster benchmark's result.
func FormatChaos(r ChaosResult, cfg ChaosConfig) string {
	var b strings.Builder
	s := r.Summary
	fmt.Fprintf(&b, "Cluster: 3 embedded NATS nodes, every stream and bucket R3; %d workers, 5 keys, %.0f req/s offered for %s; one node stopped every %s for %s.\n",
		cfg.Workers, cfg.Rate, cfg.Duration, cfg.Every, cfg.Down)
	for _, st := range r.Stops {
		fmt.Fprintf(&b, "  %s\n", st)
	}
	fmt.Fprintf(&b, "served %.2f req/s   429: %d   400: %d   answered 200 twice: %d (results or acks not written, so delivered again: %d)\n",
		r.OKPerSec, s.Exchange.RateLimited, s.Exchange.BadNonce, s.Exchange.Duplicates, s.Results[stats.ResultAckFailed])
	fmt.Fprintf(&b, "published %d = served %d (distinct ids the simulator answered 200) + graveyard %d + still queued %d; %s\n",
		s.Published, s.Exchange.Distinct, s.Buried, s.InQueue, fleet.LostLine(s))
	fmt.Fprintf(&b, "results by attempt: %v\n", s.Results)
	return b.String()
}
