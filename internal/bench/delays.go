package bench

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/ratefleet/ratefleet/internal/bench/limitertest"
	"github.com/ratefleet/ratefleet/internal/fleet"
	"github.com/ratefleet/ratefleet/internal/keys"
	"github.com/ratefleet/ratefleet/internal/limiter"
	"github.com/ratefleet/ratefleet/internal/profile"
	"github.com/ratefleet/ratefleet/internal/stats"
)

// DelayCase is one row of the delay benchmark: a simulator whose delays the
// workers' default L (50 ms) may not bound, and the bound the row is held to.
type DelayCase struct {
	Name string
	// Keys is how many keys the fleet uses; Workers processes hold KeysPerWorker
	// each.
	Keys, Workers, KeysPerWorker int
	// Rate is the offered load, at or above the bound.
	Rate         float64
	ExchangeArgs []string
	// Bound is the rate the row is compared with, and BoundNote says what it is.
	Bound     float64
	BoundNote string
	// ProfileYAML, when set, is the workers' upstream profile (written to a
	// file for them); the reference otherwise.
	ProfileYAML string
	// Duration, when set, is how long the row is measured instead of the
	// benchmark's duration: a per-minute rule needs whole minutes.
	Duration time.Duration
}

// DelayRow is one case's result.
type DelayRow struct {
	Case        DelayCase
	OKPerSecond float64
	RateLimited uint64
	BadNonce    uint64
	// CPUPerRequest is the workers' CPU time per request answered 200.
	CPUPerRequest time.Duration
	// BoxBusy is the machine's busy share of its cores over the measured time.
	BoxBusy float64
	// Spikes counts the requests the simulator delayed with a spike, over the
	// whole run.
	Spikes uint64
	// Timeouts counts the attempts the workers gave up on; ServedTwice the
	// request ids the upstream answered 200 more than once; Unaccounted the
	// published requests neither served, buried nor still queued (0 unless
	// something is lost).
	Timeouts, ServedTwice uint64
	Unaccounted           int64
}

// Oracle returns the sends a second of keys limiters that know the true largest
// incoming delay in (and keep the same order rule) against incoming delays
// uniform over 0..in and outgoing ones over 0..out (whole ms), each key
// simulated for requests sends with limitertest.
func Oracle(keys int, in, out time.Duration, requests int) float64 {
	total := 0.0
	for k := range keys {
		l, err := limiter.New(limiter.Config{MaxDelay: in, MaxDelayCeiling: max(in, time.Second)})
		if err != nil {
			return 0
		}
		res := limitertest.Run{Pacer: l, Requests: requests,
			Delays: limitertest.Asymmetric(uint64(1000+k), in, out, time.Millisecond)}.Execute()
		total += res.Rate()
	}
	return total
}

// DefaultManyWorkers is how many worker processes share the many-keys case's
// keys: one a core of the 2-core machine the benchmark was first run on. More
// processes on the same cores cost more CPU a request (each has its own runtime,
// connections and flushes), and at this load every core is busy.
const DefaultManyWorkers = 2

// DelayCases returns the benchmark's rows: (a) the reference, (b) a spread
// wider than L, (c) spikes, (d) manyKeys keys on one machine, shared by
// manyWorkers worker processes, (e) a slow tail of 2.5 s, (f) a tail of 12 s,
// past the request timeout and the ack wait, (g) a per-minute rule with spikes,
// (h) a profile with no nonce and a 100/s rule.
func DelayCases(manyKeys, manyWorkers int) []DelayCase {
	perKey := 20 / 1.0435 // 20 per 1000 + 1 + 1 ms + E[min(50, in + out)] = 41.5 ms
	return []DelayCase{
		{Name: "(a) reference, 5 keys", Keys: 5, Workers: 5, KeysPerWorker: 1, Rate: 200,
			Bound: SafeBound, BoundNote: "safe bound 5 × 20 / 1043.5 ms"},
		{Name: "(b) in 0..100 ms, out 0..50 ms, L starts at 50 ms", Keys: 5, Workers: 5, KeysPerWorker: 1, Rate: 200,
			ExchangeArgs: []string{"--in-max-delay", "100ms", "--out-max-delay", "50ms"},
			Bound:        Oracle(5, 100*time.Millisecond, 50*time.Millisecond, 20_000),
			BoundNote:    "oracle: limiter with L = 100 ms, same order rule, in limitertest"},
		{Name: "(c) 1% of requests +300 ms on the way in", Keys: 5, Workers: 5, KeysPerWorker: 1, Rate: 200,
			ExchangeArgs: []string{"--spike-share", "0.01", "--spike-delay", "300ms"},
			BoundNote:    "(a)'s measured rate"},
		{Name: fmt.Sprintf("(d) %d keys on this machine", manyKeys), Keys: manyKeys, Workers: manyWorkers,
			KeysPerWorker: (manyKeys + manyWorkers - 1) / manyWorkers, Rate: float64(manyKeys) * 20,
			Bound: float64(manyKeys) * perKey, BoundNote: fmt.Sprintf("safe bound %d × 20 / 1043.5 ms", manyKeys)},
		{Name: "(e) 1% of requests +2.5 s on the way in, every worker default", Keys: 5, Workers: 5, KeysPerWorker: 1, Rate: 200,
			ExchangeArgs: []string{"--spike-share", "0.01", "--spike-delay", "2500ms"},
			BoundNote:    "(a)'s measured rate"},
		{Name: "(f) 0.5% of requests +12 s on the way in (past the timeout and the ack wait)", Keys: 5, Workers: 5, KeysPerWorker: 1, Rate: 200,
			ExchangeArgs: []string{"--spike-share", "0.005", "--spike-delay", "12s"},
			BoundNote:    "(a)'s measured rate"},
		{Name: "(g) per-minute mode, 60 a minute, 5% of requests +2.5 s", Keys: 5, Workers: 5, KeysPerWorker: 1, Rate: 10,
			ExchangeArgs: []string{"--limit", "60", "--window", "1m", "--block-after", "0", "--spike-share", "0.05", "--spike-delay", "2500ms"},
			ProfileYAML:  profile.PerMinuteYAML, Duration: 2 * time.Minute,
			Bound: 5 * 60 / 60.0435, BoundNote: "5 × 60 / (60 s + 1 + 1 + 41.5 ms)"},
		{Name: "(h) no nonce, 100 per second, 2 keys", Keys: 2, Workers: 2, KeysPerWorker: 1, Rate: 250,
			ExchangeArgs: []string{"--limit", "100", "--window", "1s", "--block-after", "0"},
			ProfileYAML:  strings.Replace(profile.PerMinuteYAML, "{limit: 60, window: 1m}", "{limit: 100, window: 1s}", 1),
			Bound:        2 * 100 / 1.0435, BoundNote: "2 × 100 / 1043.5 ms"},
	}
}

// manyKeys returns n keys for the simulator and the workers.
func manyKeys(n int) []keys.Key {
	out := make([]keys.Key, n)
	for i := range out {
		out[i] = keys.New(fmt.Sprintf("k%03d", i+1), fmt.Sprintf("BENCHKEY%024d", i+1))
	}
	return out
}

// Delays runs each case with the adaptive limiter and returns one row each.
func Delays(ctx context.Context, cfg Config, cases []DelayCase) ([]DelayRow, error) {
	var rows []DelayRow
	for _, c := range cases {
		if ctx.Err() != nil {
			break
		}
		cfg.Logger.Info("benchmark: delays", "case", c.Name, "keys", c.Keys, "offered_rate", c.Rate, "duration", cfg.Duration)
		row, err := benchDelay(ctx, cfg, c)
		if err != nil {
			return rows, fmt.Errorf("benchmark %s: %w", c.Name, err)
		}
		rows = append(rows, row)
	}
	return rows, nil
}

func benchDelay(ctx context.Context, cfg Config, c DelayCase) (DelayRow, error) {
	row := DelayRow{Case: c}
	if c.Duration > 0 {
		cfg.Duration = c.Duration
	}
	var setup fleet.Setup
	if c.ProfileYAML != "" {
		var err error
		if setup, err = fleet.WithProfile("delays", c.ProfileYAML); err != nil {
			return row, err
		}
		defer setup.Close()
	}
	fc := fleet.Config{
		Profile: setup.Profile,
		Bin:     cfg.Bin, Workers: c.Workers, Duration: cfg.Warmup + cfg.Duration + time.Second,
		ProducerArgs: []string{"--shape", "rate", "--rate", fmt.Sprint(c.Rate), "--ttl", "10m", "--progress", "0"},
		WorkerArgs:   []string{"--keys", fmt.Sprint(c.KeysPerWorker)},
		ExchangeArgs: c.ExchangeArgs,
		Logs:         cfg.Logs, Logger: cfg.Logger,
	}
	if c.Keys != 5 {
		fc.Keys = manyKeys(c.Keys)
	}
	f, err := fleet.Up(ctx, fc)
	if err != nil {
		return row, err
	}
	defer f.Down()
	m, err := measure(ctx, f, cfg.Warmup, cfg.Duration)
	if err != nil {
		return row, err
	}
	row.OKPerSecond, row.BoxBusy = m.okPerSecond, m.boxBusy
	cpu := m.workerCPU
	total, err := fleet.FetchExchangeTotals(ctx, f.ExchangeURL)
	if err != nil {
		return row, err
	}
	row.RateLimited, row.BadNonce, row.Spikes = total.RateLimited, total.BadNonce, total.Spikes
	if total.OK > 0 {
		row.CPUPerRequest = cpu / time.Duration(total.OK)
	}
	sum, err := f.Summarize(ctx, cfg.Warmup+cfg.Duration)
	if err != nil {
		return row, err
	}
	row.Timeouts, row.ServedTwice, row.Unaccounted = sum.Results[stats.ResultTimeout], sum.Exchange.Duplicates, sum.Lost()
	return row, nil
}

// FormatDelays renders the rows as one Markdown table. A row without a bound of
// its own (c) is compared with the first row's measured rate.
func FormatDelays(rows []DelayRow, cfg Config) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Delays: the adaptive limiter started on L = 50 ms against delays it may not bound; %s measured after %s warm-up per row, offered load above the bound (time to live 10 min). 429 and 400 over the whole run.\n\n",
		cfg.Duration, cfg.Warmup)
	fmt.Fprintf(&b, "| case | 429 | 400 | spikes | timeouts | served twice | unaccounted | ok req/s | bound req/s | ratio | bound | worker CPU ms/req | machine busy |\n")
	fmt.Fprintf(&b, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |\n")
	for _, r := range rows {
		bound := r.Case.Bound
		if bound == 0 && len(rows) > 0 {
			bound = rows[0].OKPerSecond
		}
		ratio := 0.0
		if bound > 0 {
			ratio = r.OKPerSecond / bound
		}
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %d | %d | %d | %.2f | %.2f | %.3f | %s | %.2f | %.0f%% |\n", r.Case.Name, r.RateLimited, r.BadNonce, r.Spikes,
			r.Timeouts, r.ServedTwice, r.Unaccounted, r.OKPerSecond, bound, ratio, r.Case.BoundNote, float64(r.CPUPerRequest)/float64(time.Millisecond), 100*r.BoxBusy)
	}
	return b.String()
}
