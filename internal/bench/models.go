package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ratefleet/ratefleet/internal/exchange"
	"github.com/ratefleet/ratefleet/internal/fleet"
	"github.com/ratefleet/ratefleet/internal/host"
	"github.com/ratefleet/ratefleet/internal/keys"
	"github.com/ratefleet/ratefleet/internal/profile"
)

// ModelCase is one row of the rate-limit models benchmark: the simulator in one
// model, the fleet with the profile that speaks it, and the rule whose rate
// the row is held to.
type ModelCase struct {
	Name string
	// ExchangeArgs pick the simulator's model.
	ExchangeArgs []string
	// ProfileYAML is the workers' profile.
	ProfileYAML string
	// Keys are the fleet's keys; the reference's five when nil.
	Keys []keys.Key
	// Lines, when set, writes the i-th request as a JSON line for the
	// producer's file; else Rate requests a second of the default call.
	Lines func(i int) string
	Count int
	Rate  float64
	// Rule names the simulator's rule (its name in /stats) the row is held to;
	// Bound is its long-run rate in its units a second, Unit names them, and
	// BoundNote says how Bound was computed.
	Rule      string
	Bound     float64
	Unit      string
	BoundNote string
	// Align, when set, starts and ends the measurement just after a multiple of
	// it on the clock: a calendar window's count starts at its start.
	Align time.Duration
	// Warmup and Duration override the benchmark's.
	Warmup, Duration time.Duration
}

// ModelRow is one case's result.
type ModelRow struct {
	Case ModelCase
	// Rate is the rule's units counted a second over the measured time.
	Rate float64
	// RateLimited, BadNonce and Banned count 429s, 400s and 418s over the run.
	RateLimited, BadNonce, Banned uint64
	// Lost counts requests published but neither served, buried nor queued.
	Lost int64
	// BoxBusy is the machine's busy share of its cores over the measured time.
	BoxBusy float64
}

// Ratio is the row's rate over its bound.
func (r ModelRow) Ratio() float64 { return r.Rate / r.Case.Bound }

// ModelCases returns the benchmark's rows on the simulator's models.
func ModelCases() ([]ModelCase, error) {
	llm, err := profile.BuiltinYAML("llm")
	if err != nil {
		return nil, err
	}
	// The simulator's llm model is tier 1 scaled 12 times: the profile is
	// given its numbers.
	llm = strings.NewReplacer(
		"{kind: bucket, limit: 50, rate: 0.8334, counts: requests", "{kind: bucket, limit: 600, rate: 10, counts: requests",
		"{kind: bucket, limit: 30000, rate: 500, counts: input_tokens", "{kind: bucket, limit: 360000, rate: 6000, counts: input_tokens",
		"{kind: bucket, limit: 8000, rate: 133.34, counts: output_tokens", "{kind: bucket, limit: 96000, rate: 1600, counts: output_tokens",
	).Replace(llm)
	binance, err := profile.BuiltinYAML("binance")
	if err != nil {
		return nil, err
	}
	shared := strings.Replace(profile.ReferenceYAML, "rules: [{limit: 20, window: 1s}]", "rules: [{limit: 60, window: 1s, scope: upstream}]", 1)
	if shared == profile.ReferenceYAML {
		return nil, fmt.Errorf("the reference profile's rule is not where the shared row expects it")
	}
	var binanceKeys, refKeys []keys.Key
	for _, k := range exchange.DefaultKeys() {
		binanceKeys = append(binanceKeys, keys.NewSigning(k.Name(), k.Secret(), k.Secret(), "").WithGroups("main", nil))
		refKeys = append(refKeys, k)
	}
	prompt := strings.Repeat("a", 400) // 100 input tokens, as the simulator counts them
	binanceCalls := []string{
		`{"call":{"method":"GET","path":"/api/v3/ticker/price","query":[{"name":"symbol","value":"BTCUSDT"}]}}`,
		`{"call":{"method":"GET","path":"/api/v3/ticker/price","query":[{"name":"symbol","value":"ETHUSDT"}]}}`,
		`{"call":{"method":"GET","path":"/api/v3/depth","query":[{"name":"symbol","value":"BTCUSDT"}]}}`,
		`{"call":{"method":"GET","path":"/api/v3/ticker/price","query":[{"name":"symbol","value":"SOLUSDT"}]}}`,
		`{"call":{"method":"POST","path":"/api/v3/order","body":"symbol=BTCUSDT&side=BUY&type=MARKET&quantity=0.001"}}`,
	}
	return []ModelCase{
		{
			Name: "five keys, one shared rule of 60/s", ProfileYAML: shared, Keys: refKeys,
			ExchangeArgs: []string{"--limit", "0", "--rule", "kind=sliding,limit=60,window=1s,cost=requests,scope=ip,name=shared"},
			Rate:         90, Rule: "shared", Unit: "req/s",
			Bound: 60 / 1.001, BoundNote: "60 requests in any 1001 ms for all keys together: 59.94/s",
		},
		{
			Name: "binance: weights per path, orders per 10 s per account, weight per IP", ProfileYAML: binance, Keys: binanceKeys,
			ExchangeArgs: []string{"--model", "binance"},
			Lines:        func(i int) string { return binanceCalls[i%len(binanceCalls)] },
			Count:        60000, Rule: "REQUEST_WEIGHT 1m", Unit: "weight/s", Align: time.Minute,
			Bound: 100, BoundNote: "6,000 weight a calendar minute for the IP (the binding rule: the mix costs 2.4 weight and 0.2 orders a call, so 41.7 calls/s and 8.3 orders/s of the 10/s the orders rule allows): 100/s",
			Warmup: 75 * time.Second, Duration: 3 * time.Minute,
		},
		{
			Name: "llm: requests and tokens a minute, output known from the answer", ProfileYAML: llm, Keys: refKeys,
			ExchangeArgs: []string{"--model", "llm"},
			Lines: func(i int) string {
				return fmt.Sprintf(`{"costs":{"input_tokens":100,"output_tokens":512},"call":{"method":"POST","path":"/v1/messages","content_type":"application/json","body":"{\"max_tokens\":512,\"messages\":[{\"role\":\"user\",\"content\":\"%s\"}]}"}}`, prompt)
			},
			Count: 5000, Rule: "output tokens per minute", Unit: "tokens/s",
			Bound: 1600, BoundNote: "96,000 output tokens a minute for the organization, a bucket refilled continuously (the binding rule: 256 a call on average, 6.25 calls/s of 10): 1600/s",
			Warmup: 90 * time.Second, Duration: 2 * time.Minute,
		},
	}, nil
}

// Models runs each case on a fleet of its own.
func Models(ctx context.Context, cfg Config, cases []ModelCase) ([]ModelRow, error) {
	var rows []ModelRow
	for _, c := range cases {
		cfg.Logger.Info("models benchmark: case", "case", c.Name)
		row, err := benchModel(ctx, cfg, c)
		if err != nil {
			return rows, fmt.Errorf("%s: %w", c.Name, err)
		}
		rows = append(rows, row)
	}
	return rows, nil
}

func benchModel(ctx context.Context, cfg Config, c ModelCase) (ModelRow, error) {
	row := ModelRow{Case: c}
	warmup, duration := cfg.Warmup, cfg.Duration
	if c.Warmup > 0 {
		warmup = c.Warmup
	}
	if c.Duration > 0 {
		duration = c.Duration
	}
	setup, err := fleet.WithProfile("models", c.ProfileYAML)
	if err != nil {
		return row, err
	}
	defer setup.Close()
	producer := []string{"--shape", "rate", "--rate", fmt.Sprint(c.Rate), "--ttl", "30m", "--progress", "0"}
	if c.Lines != nil {
		path := filepath.Join(filepath.Dir(setup.Profile), "requests.jsonl")
		var b strings.Builder
		for i := range c.Count {
			b.WriteString(c.Lines(i))
			b.WriteByte('\n')
		}
		if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
			return row, fmt.Errorf("requests file: %w", err)
		}
		producer = []string{"--file", path, "--ttl", "30m", "--progress", "0"}
	}
	run := warmup + duration + c.Align + 5*time.Second
	if c.Lines == nil {
		producer = append(producer, "--duration", run.String())
	}
	f, err := fleet.Up(ctx, fleet.Config{
		Profile: setup.Profile, Keys: c.Keys, Bin: cfg.Bin, Workers: 5, Duration: run,
		ProducerArgs: producer, ExchangeArgs: c.ExchangeArgs, Logs: cfg.Logs, Logger: cfg.Logger,
	})
	if err != nil {
		return row, err
	}
	defer f.Down()
	produced := make(chan error, 1)
	go func() { produced <- f.Produce(ctx) }()
	if err := fleet.Sleep(ctx, warmup); err != nil {
		return row, err
	}
	if c.Align > 0 {
		// Start just after a window starts, before the key's first send in it
		// (which waits for the clock offset).
		start := time.Now().Truncate(c.Align).Add(c.Align + 300*time.Millisecond)
		if err := fleet.Sleep(ctx, time.Until(start)); err != nil {
			return row, err
		}
		duration = duration.Truncate(c.Align)
	}
	before, err := ruleCharged(ctx, f.ExchangeURL, c.Rule)
	if err != nil {
		return row, err
	}
	t0 := time.Now()
	busy0, total0 := host.CPU()
	if err := fleet.Sleep(ctx, duration); err != nil {
		return row, err
	}
	after, err := ruleCharged(ctx, f.ExchangeURL, c.Rule)
	if err != nil {
		return row, err
	}
	elapsed := time.Since(t0)
	if c.Align > 0 {
		elapsed = duration // whole windows: each counts once
	}
	row.Rate = float64(after-before) / elapsed.Seconds()
	if busy1, total1 := host.CPU(); total1 > total0 {
		row.BoxBusy = float64(busy1-busy0) / float64(total1-total0)
	}
	f.StopWorkers() // and the producer
	<-produced
	st, err := fleet.FetchExchangeStats(ctx, f.ExchangeURL)
	if err != nil {
		return row, err
	}
	for _, k := range st.Keys {
		row.RateLimited += k.RateLimited
		row.BadNonce += k.BadNonce
	}
	row.Banned = st.Banned
	sum, err := f.Summarize(ctx, run)
	if err != nil {
		return row, err
	}
	row.Lost = sum.Lost()
	return row, nil
}

// ruleCharged returns the units the simulator's rule has counted.
func ruleCharged(ctx context.Context, baseURL, rule string) (int64, error) {
	st, err := fleet.FetchExchangeStats(ctx, baseURL)
	if err != nil {
		return 0, err
	}
	var names []string
	for _, r := range st.Rules {
		if r.Name == rule {
			return r.Charged, nil
		}
		names = append(names, r.Name)
	}
	return 0, fmt.Errorf("the simulator has no rule %q (it has %s)", rule, strings.Join(names, ", "))
}

// OutsideRow is the usage-header benchmark's result as a row of the models
// table.
func OutsideRow(u UsageRow) ModelRow {
	return ModelRow{
		Case: ModelCase{
			Name: fmt.Sprintf("an outside client using %.0f %% of one key's budget, seen only in usage headers", 100*u.Share),
			Unit: "req/s", Bound: u.Bound,
			BoundNote: fmt.Sprintf("the key's 20 requests per 1001 ms less the outside client's %.0f %%: %.2f/s (429 counts the shared key's)", 100*u.Share, u.Bound),
		},
		Rate: u.OKPerSecond, RateLimited: u.RateLimited, BoxBusy: u.BoxBusy,
	}
}

// FormatModels renders the rows as one Markdown table, then each row's bound
// in a line.
func FormatModels(rows []ModelRow) string {
	var b strings.Builder
	b.WriteString("| model | 429 | 418 | 400 | lost | rate | bound | ratio | box busy |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %d | %.1f %s | %.1f | %.3f | %.0f %% |\n", r.Case.Name, r.RateLimited, r.Banned, r.BadNonce, r.Lost,
			r.Rate, r.Case.Unit, r.Case.Bound, r.Ratio(), 100*r.BoxBusy)
	}
	b.WriteString("\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "- %s: %s.\n", r.Case.Name, r.Case.BoundNote)
	}
	return b.String()
}
