package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/ratefleet/ratefleet/internal/fleet"
	"github.com/ratefleet/ratefleet/internal/lease"
	"github.com/ratefleet/ratefleet/internal/stats"
)

// ScaleConfig describes the scale benchmark: for each number of keys, a fresh
// fleet of Workers processes holding an equal share, first idle, then offered
// PerKeyRate requests a second per key.
type ScaleConfig struct {
	Bin        string
	Keys       []int
	Workers    int
	PerKeyRate float64
	// Idle is how long the idle phase is measured; Load how long the load phase
	// publishes, with requests living TTL.
	Idle, Load, TTL time.Duration
	Logs            io.Writer
	Logger          *slog.Logger
}

// ScaleRow is one number of keys' result.
type ScaleRow struct {
	Keys, Held int
	// ClaimAll is the time from starting the workers until every key was held.
	ClaimAll time.Duration
	// IdleCores is the CPU the workers and NATS used while idle, in cores, and
	// IdleControlMsgs the messages a second NATS received meanwhile (renewals,
	// pulls, stats: the control plane).
	IdleCores       float64
	IdleControlMsgs float64
	// MaxWaitingPulls is the most pull requests the consumer had waiting at once.
	MaxWaitingPulls int
	// Under load: requests answered 200 a second, the bound (the offered rate, or
	// the keys' limit if lower), CPU of the workers and NATS per request.
	OKPerSecond, Bound float64
	CPUPerRequest      time.Duration
	// From the whole run.
	RateLimited, BadNonce, PullErrors uint64
	Published, Served, Buried, Lost   int64
}

// perKeyBound is the provable rate of one reference key (package limiter's doc).
const perKeyBound = 20 / 1.0435

// Scale runs the scale benchmark, one row per number of keys.
func Scale(ctx context.Context, cfg ScaleConfig) ([]ScaleRow, error) {
	var rows []ScaleRow
	for _, n := range cfg.Keys {
		if ctx.Err() != nil {
			break
		}
		cfg.Logger.Info("benchmark: scale", "keys", n, "workers", cfg.Workers)
		row, err := scaleOne(ctx, cfg, n)
		if err != nil {
			return rows, fmt.Errorf("scale %d keys: %w", n, err)
		}
		rows = append(rows, row)
	}
	return rows, nil
}

func scaleOne(ctx context.Context, cfg ScaleConfig, n int) (ScaleRow, error) {
	row := ScaleRow{Keys: n}
	rate := cfg.PerKeyRate * float64(n)
	share := (n + cfg.Workers - 1) / cfg.Workers
	f, err := fleet.Up(ctx, fleet.Config{
		Bin: cfg.Bin, Workers: 0, Duration: cfg.Load, Drain: 30 * time.Second, Keys: manyKeys(n),
		ProducerArgs: []string{"--shape", "rate", "--rate", fmt.Sprint(rate), "--ttl", cfg.TTL.String(), "--progress", "0"},
		WorkerArgs:   []string{"--keys", fmt.Sprint(share)},
		Logs:         cfg.Logs, Logger: cfg.Logger,
	})
	if err != nil {
		return row, err
	}
	defer f.Down()
	kv, err := f.Conn.JS.KeyValue(ctx, f.Conn.Streams.KV.Leases.Bucket)
	if err != nil {
		return row, err
	}
	table := lease.NewTable()
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go func() { _ = table.Run(wctx, kv) }()

	t0 := time.Now()
	for range cfg.Workers {
		if _, err := f.StartWorker(); err != nil {
			return row, err
		}
	}
	held := func() int {
		v := table.View()
		c := 0
		for name := range v.Keys {
			if _, ok := v.Held(name); ok {
				c++
			}
		}
		return c
	}
	for held() < n && time.Since(t0) < 60*time.Second {
		if err := fleet.Sleep(ctx, 10*time.Millisecond); err != nil {
			return row, err
		}
	}
	row.ClaimAll, row.Held = time.Since(t0), held()

	// Idle: nothing published.
	watchPulls, maxWaiting := watchWaitingPulls(ctx, f)
	cpu0, msgs0, at0 := cpu(f), inMsgs(f), time.Now()
	if err := fleet.Sleep(ctx, cfg.Idle); err != nil {
		return row, err
	}
	cpu1, msgs1, at1 := cpu(f), inMsgs(f), time.Now()
	row.IdleCores = (cpu1 - cpu0).Seconds() / at1.Sub(at0).Seconds()
	row.IdleControlMsgs = float64(msgs1-msgs0) / at1.Sub(at0).Seconds()

	// Load.
	before, err := fleet.FetchExchangeTotals(ctx, f.ExchangeURL)
	if err != nil {
		return row, err
	}
	cpu0, at0 = cpu(f), time.Now()
	if err := f.Produce(ctx); err != nil {
		return row, err
	}
	after, err := fleet.FetchExchangeTotals(ctx, f.ExchangeURL)
	if err != nil {
		return row, err
	}
	cpu1, at1 = cpu(f), time.Now()
	ok := after.OK - before.OK
	row.OKPerSecond = float64(ok) / at1.Sub(at0).Seconds()
	row.Bound = min(rate, float64(n)*perKeyBound)
	if ok > 0 {
		row.CPUPerRequest = (cpu1 - cpu0) / time.Duration(ok)
	}
	f.Drain(ctx)
	watchPulls()
	row.MaxWaitingPulls = *maxWaiting

	sum, err := f.Summarize(ctx, cfg.Load)
	if err != nil {
		return row, err
	}
	row.RateLimited, row.BadNonce = sum.Exchange.RateLimited, sum.Exchange.BadNonce
	row.PullErrors = sum.Results[stats.ResultPullError]
	row.Published, row.Served, row.Buried, row.Lost = int64(sum.Published), int64(sum.Exchange.Distinct), int64(sum.Buried), sum.Lost()
	return row, nil
}

// cpu returns the CPU time used so far by f's workers and this process, which
// runs NATS.
func cpu(f *fleet.Fleet) time.Duration {
	total := fleet.SelfCPU()
	for _, w := range f.Workers {
		total += w.CPU()
	}
	return total
}

// inMsgs returns the messages the NATS nodes have received so far.
func inMsgs(f *fleet.Fleet) int64 {
	var servers []*server.Server
	if f.NATS != nil {
		servers = append(servers, f.NATS.NATS())
	}
	if f.Cluster != nil {
		for _, n := range f.Cluster.Nodes {
			if s := n.NATS(); s != nil {
				servers = append(servers, s)
			}
		}
	}
	var total int64
	for _, s := range servers {
		if v, err := s.Varz(nil); err == nil {
			total += v.InMsgs
		}
	}
	return total
}

// watchWaitingPulls samples the consumer's count of waiting pull requests every
// second until stop is called; max holds the highest seen.
func watchWaitingPulls(ctx context.Context, f *fleet.Fleet) (stop func(), highest *int) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	m := new(int)
	sc := f.Conn.Streams
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			if c, err := f.Conn.JS.Consumer(ctx, sc.Requests.Stream.Name, sc.Requests.Consumer.Durable); err == nil {
				*m = max(*m, c.CachedInfo().NumWaiting)
			}
			_ = fleet.Sleep(ctx, time.Second)
		}
	}()
	return func() { cancel(); <-done }, m
}

// FormatScale renders the rows as one Markdown table.
func FormatScale(rows []ScaleRow, cfg ScaleConfig) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\nScale: %d workers, keys shared evenly; idle %s, then %.1f req/s per key offered for %s (TTL %s)\n\n",
		cfg.Workers, cfg.Idle, cfg.PerKeyRate, cfg.Load, cfg.TTL)
	b.WriteString("| keys | held | claim all | idle cores (workers+NATS) | idle CPU per held key | control msgs/s idle | max waiting pulls | req/s | bound | ratio | CPU/req | 429 | 400 | pull errors | published = served + buried + queued (lost) |\n")
	b.WriteString("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
	for _, r := range rows {
		ratio := 0.0
		if r.Bound > 0 {
			ratio = r.OKPerSecond / r.Bound
		}
		perKey := time.Duration(0)
		if r.Held > 0 {
			perKey = time.Duration(r.IdleCores * float64(time.Second) / float64(r.Held))
		}
		fmt.Fprintf(&b, "| %d | %d | %s | %.3f | %s/s | %.0f | %d | %.1f | %.1f | %.3f | %s | %d | %d | %d | %d = %d + %d + %d (%d) |\n",
			r.Keys, r.Held, r.ClaimAll.Round(time.Millisecond), r.IdleCores, perKey.Round(time.Microsecond), r.IdleControlMsgs,
			r.MaxWaitingPulls, r.OKPerSecond, r.Bound, ratio, r.CPUPerRequest.Round(time.Microsecond),
			r.RateLimited, r.BadNonce, r.PullErrors, r.Published, r.Served, r.Buried, r.Published-r.Served-r.Buried-r.Lost, r.Lost)
	}
	return b.String()
}
