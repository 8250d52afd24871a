// Package bench holds ratefleet's benchmarks: each starts a fleet of real
// processes (internal/fleet) against the simulator on loopback, measures it,
// and renders one Markdown table. Saturation compares the limiter with its
// baselines; Delays runs it against delay models its L does not bound;
// Failover, Scale and Chaos measure handovers, many keys and a three-node
// cluster losing nodes. cmd/fleet runs them (`make bench`).
package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/ratefleet/ratefleet/internal/fleet"
	"github.com/ratefleet/ratefleet/internal/host"
)

// Config describes the saturation benchmark: the same fleet, simulator and
// offered load for each limiter in turn.
type Config struct {
	Bin      string
	Limiters []string
	Workers  int
	// Duration is each limiter's measured time; Warmup runs before it.
	Duration, Warmup time.Duration
	// Rate is the offered load, far above what five keys allow.
	Rate float64
	// Setup is the upstream's shape; the reference when zero.
	Setup  fleet.Setup
	Logs   io.Writer
	Logger *slog.Logger
}

// Row is one limiter's result.
type Row struct {
	Limiter     string
	OKPerSecond float64 // answered 200 per second over the measured time, as the simulator counted
	RateLimited uint64  // 429s over the whole run
	BadNonce    uint64  // 400s over the whole run
	Blocked     uint64  // keys the simulator blocked
	P50, P99    int64   // created-to-answered ms of requests answered 200
	WorkerCPU   time.Duration
	WorkerRSS   int64 // the largest peak RSS of one worker, bytes
	Lost        int64
}

// Saturation runs the saturation benchmark for each limiter and returns one row each.
func Saturation(ctx context.Context, cfg Config) ([]Row, error) {
	var rows []Row
	for _, lim := range cfg.Limiters {
		if ctx.Err() != nil {
			break
		}
		cfg.Logger.Info("benchmark: saturation", "limiter", lim, "workers", cfg.Workers, "offered_rate", cfg.Rate, "duration", cfg.Duration)
		row, err := benchOne(ctx, cfg, lim)
		if err != nil {
			return rows, fmt.Errorf("benchmark %s: %w", lim, err)
		}
		rows = append(rows, row)
	}
	return rows, nil
}

func benchOne(ctx context.Context, cfg Config, lim string) (Row, error) {
	row := Row{Limiter: lim}
	f, err := fleet.Up(ctx, fleet.Config{
		Bin: cfg.Bin, Workers: cfg.Workers, Duration: cfg.Warmup + cfg.Duration + time.Second,
		// A long time to live keeps the queue full: every slot a limiter leaves
		// unused is its own, not a request that went stale at the head of the queue.
		ProducerArgs: []string{"--shape", "rate", "--rate", fmt.Sprint(cfg.Rate), "--ttl", "10m", "--progress", "0"},
		WorkerArgs:   []string{"--limiter", lim},
		Keys:         cfg.Setup.Keys, Profile: cfg.Setup.Profile, ExchangeArgs: cfg.Setup.ExchangeArgs,
		Logs: cfg.Logs, Logger: cfg.Logger,
	})
	if err != nil {
		return row, err
	}
	defer f.Down()
	m, err := measure(ctx, f, cfg.Warmup, cfg.Duration)
	if err != nil {
		return row, err
	}
	row.OKPerSecond, row.WorkerCPU, row.WorkerRSS = m.okPerSecond, m.workerCPU, m.workerRSS
	sum, err := f.Summarize(ctx, 0)
	if err != nil {
		return row, err
	}
	row.RateLimited, row.BadNonce, row.Blocked = sum.Exchange.RateLimited, sum.Exchange.BadNonce, sum.Exchange.Blocked
	row.P50, row.P99, row.Lost = sum.LatencyP50ms, sum.LatencyP99ms, sum.Lost()
	return row, nil
}

// FormatSaturation renders the rows as a Markdown table, with the arithmetic's ceilings
// for reference.
func FormatSaturation(rows []Row, cfg Config) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Saturation: %d workers, 5 keys, %.0f req/s offered (time to live 10 min), %s measured after %s warm-up, per limiter; reference simulator (20 per >1000 ms, 0..50 ms each way). Latency is created-to-answered, so at saturation it is mostly time in the queue.\n\n",
		cfg.Workers, cfg.Rate, cfg.Duration, cfg.Warmup)
	fmt.Fprintf(&b, "| limiter | ok req/s | vs ceiling | 429 | 400 | blocked keys | p50 ms | p99 ms | worker CPU s | worker max RSS MiB | lost |\n")
	fmt.Fprintf(&b, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %.2f | %.1f%% | %d | %d | %d | %d | %d | %.1f | %.1f | %d |\n",
			r.Limiter, r.OKPerSecond, 100*r.OKPerSecond/HardCeiling, r.RateLimited, r.BadNonce, r.Blocked,
			r.P50, r.P99, r.WorkerCPU.Seconds(), float64(r.WorkerRSS)/(1<<20), r.Lost)
	}
	fmt.Fprintf(&b, "| (hard ceiling: 5 × 20 per 1001 ms) | %.2f | 100%% | | | | | | | | |\n", HardCeiling)
	fmt.Fprintf(&b, "| (safe bound, see internal/limiter) | %.2f | %.1f%% | | | | | | | | |\n", SafeBound, 100*SafeBound/HardCeiling)
	return b.String()
}

// HardCeiling is five keys' 20 requests per 1001 ms: no client can do better.
const HardCeiling = 5 * 20 / 1.001

// SafeBound is five keys' 20 requests per 1000 + 1 + 1 ms plus the mean of
// min(50 ms, in + out) with both delays uniform over 0..50 whole ms (41.7 ms): what
// a limiter that is safe for every such delay can reach at best, before the cost
// of keeping arrivals in nonce order.
const SafeBound = 5 * 20 / 1.0437

// measured is what measure saw.
type measured struct {
	okPerSecond float64       // answered 200 a second over the measured time, as the simulator counted
	workerCPU   time.Duration // the workers' CPU over the whole run
	workerRSS   int64         // the largest peak RSS of one worker, bytes
	boxBusy     float64       // the machine's busy share of its cores over the measured time
}

// measure runs the producer, counts the simulator's 200s over duration after
// warmup, waits for the producer to end and stops the workers (what is still
// queued stays there, and is counted as such).
func measure(ctx context.Context, f *fleet.Fleet, warmup, duration time.Duration) (measured, error) {
	var m measured
	produced := make(chan error, 1)
	go func() { produced <- f.Produce(ctx) }()
	if err := fleet.Sleep(ctx, warmup); err != nil {
		return m, err
	}
	before, err := fleet.FetchExchangeTotals(ctx, f.ExchangeURL)
	if err != nil {
		return m, err
	}
	t0 := time.Now()
	busy0, total0 := host.CPU()
	if err := fleet.Sleep(ctx, duration); err != nil {
		return m, err
	}
	after, err := fleet.FetchExchangeTotals(ctx, f.ExchangeURL)
	if err != nil {
		return m, err
	}
	m.okPerSecond = float64(after.OK-before.OK) / time.Since(t0).Seconds()
	if busy1, total1 := host.CPU(); total1 > total0 {
		m.boxBusy = float64(busy1-busy0) / float64(total1-total0)
	}
	logLimiters(ctx, f)
	if err := <-produced; err != nil {
		return m, err
	}
	f.StopWorkers()
	for _, w := range f.Workers {
		cpu, rss := w.Usage()
		m.workerCPU += cpu
		m.workerRSS = max(m.workerRSS, rss)
	}
	return m, nil
}

// logLimiters logs what the workers' limiters have learned, from their last
// reports: how late the processes were and how many keys assume a wider delay
// than they started on. It explains a rate below the bound.
func logLimiters(ctx context.Context, f *fleet.Fleet) {
	reports, err := fleet.LastReports(ctx, f.Conn.JS, f.Conn.Streams.Stats.Stream.Name)
	if err != nil {
		f.Logger().Warn("benchmark: no worker reports", "err", err)
		return
	}
	var lags []float64
	var widened, held int
	var outliers, inversions uint64
	for _, r := range reports {
		for _, k := range r.Keys {
			if !k.Held {
				continue
			}
			held++
			lags = append(lags, k.LagMs)
			if k.MaxDelayMs > 50 {
				widened++
			}
			outliers += k.Outliers
			inversions += k.Inversions
		}
	}
	if len(lags) == 0 {
		return
	}
	slices.Sort(lags)
	f.Logger().Info("benchmark: limiters", "keys_held", held, "lag_ms_p50", lags[len(lags)/2], "lag_ms_max", lags[len(lags)-1],
		"keys_with_L_over_50ms", widened, "outliers", outliers, "inversions", inversions)
}
