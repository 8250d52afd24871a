package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/ratefleet/ratefleet/internal/exchange"
	"github.com/ratefleet/ratefleet/internal/fleet"
	"github.com/ratefleet/ratefleet/internal/host"
	"github.com/ratefleet/ratefleet/internal/keys"
	"github.com/ratefleet/ratefleet/internal/profile"
)

// UsageConfig describes the usage-header benchmark: a fleet of keys, the first
// shared with a client outside the fleet that uses Share of its budget, which
// the workers see only in the upstream's usage headers.
type UsageConfig struct {
	Bin string
	// Keys is how many keys the fleet holds, 1 when 0; the outside client uses
	// the first.
	Keys int
	// Workers is how many workers run, 1 when 0.
	Workers int
	// Share is the part of the first key's budget (20 per 1001 ms) the outside
	// client uses, evenly spaced; 0.3 when 0.
	Share float64
	// Duration is the measured time; Warmup runs before it.
	Duration, Warmup time.Duration
	Logs             io.Writer
	Logger           *slog.Logger
}

// UsageRow is what the usage-header benchmark measured on the shared key.
type UsageRow struct {
	Share float64
	// RateLimited counts the shared key's 429s over the whole run;
	// OthersRateLimited the other keys'.
	RateLimited, OthersRateLimited uint64
	// OKPerSecond is the shared key's 200s a second over the measured time, and
	// Outside the outside client's calls a second counted on it then.
	OKPerSecond, Outside float64
	// Bound is what the outside client leaves of the key: (1 − Share) × 20 per
	// 1001 ms, the reference's hard ceiling of one key less the share.
	Bound float64
	// BoxBusy is the machine's busy share of its cores over the measured time.
	BoxBusy float64
}

// keyCeiling is one key's 20 requests per 1001 ms: no client can do better.
const keyCeiling = 20 / 1.001

// usageProfileYAML is the reference profile reading OpenAI's remaining
// requests as the usage of its one rule.
const usageProfileYAML = profile.ReferenceYAML + `usage:
  - {header: x-ratelimit-remaining-requests, rule: 0, reports: remaining}
`

// Usage runs the usage-header benchmark: the simulator counts each key with one
// sliding rule equal to the reference's ring (20 per [t − 1000 ms, t], reported
// in OpenAI's headers, with the reference's delays), its outside client calls
// the first key Share × 20 per 1001 ms evenly, and the producer offers every key
// more than it takes.
func Usage(ctx context.Context, cfg UsageConfig) (UsageRow, error) {
	n, workers, share := max(cfg.Keys, 1), max(cfg.Workers, 1), cfg.Share
	if share == 0 {
		share = 0.3
	}
	row := UsageRow{Share: share, Bound: (1 - share) * keyCeiling}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	ks := exchange.DefaultKeys()
	if n > len(ks) {
		ks = manyKeys(n)
	}
	ks = ks[:n]
	setup, err := fleet.WithProfile("usage", usageProfileYAML)
	if err != nil {
		return row, err
	}
	defer setup.Close()
	cfg.Logger.Info("benchmark: usage headers", "keys", n, "workers", workers, "share", share, "duration", cfg.Duration)
	f, err := fleet.Up(ctx, fleet.Config{
		Bin: cfg.Bin, Workers: workers, Duration: cfg.Warmup + cfg.Duration + time.Second,
		Keys: ks, Profile: setup.Profile,
		ProducerArgs: []string{"--shape", "rate", "--rate", fmt.Sprint(25 * n), "--ttl", "10m", "--progress", "0"},
		ExchangeArgs: []string{"--limit", "0", "--rule", "kind=sliding,limit=20,window=1s,cost=requests,scope=key",
			"--usage-headers", "openai", "--outside-rate", fmt.Sprint(share * keyCeiling), "--outside-keys", ks[0].Name()},
		Logs: cfg.Logs, Logger: cfg.Logger,
	})
	if err != nil {
		return row, err
	}
	defer f.Down()

	produced := make(chan error, 1)
	go func() { produced <- f.Produce(ctx) }()
	if err := fleet.Sleep(ctx, cfg.Warmup); err != nil {
		return row, err
	}
	before, err := keyStats(ctx, f.ExchangeURL, ks[0])
	if err != nil {
		return row, err
	}
	t0 := time.Now()
	busy0, total0 := host.CPU()
	if err := fleet.Sleep(ctx, cfg.Duration); err != nil {
		return row, err
	}
	after, err := keyStats(ctx, f.ExchangeURL, ks[0])
	if err != nil {
		return row, err
	}
	secs := time.Since(t0).Seconds()
	if busy1, total1 := host.CPU(); total1 > total0 {
		row.BoxBusy = float64(busy1-busy0) / float64(total1-total0)
	}
	row.OKPerSecond = float64(after.shared.OK-before.shared.OK) / secs
	row.Outside = float64(after.shared.Outside-before.shared.Outside) / secs
	if err := <-produced; err != nil {
		return row, err
	}
	f.StopWorkers()
	end, err := keyStats(ctx, f.ExchangeURL, ks[0])
	if err != nil {
		return row, err
	}
	row.RateLimited, row.OthersRateLimited = end.shared.RateLimited, end.othersRateLimited
	return row, nil
}

// sharedStats is the simulator's count of the shared key, and of the others'
// 429s.
type sharedStats struct {
	shared            exchange.KeyStats
	othersRateLimited uint64
}

// keyStats reads the simulator's stats of key k and the others' 429s.
func keyStats(ctx context.Context, baseURL string, k keys.Key) (sharedStats, error) {
	var s sharedStats
	st, err := fleet.FetchExchangeStats(ctx, baseURL)
	if err != nil {
		return s, err
	}
	found := false
	for _, ks := range st.Keys {
		if ks.Name == k.Name() {
			s.shared, found = ks, true
		} else {
			s.othersRateLimited += ks.RateLimited
		}
	}
	if !found {
		return s, fmt.Errorf("exchange stats: no key %s", k.Name())
	}
	return s, nil
}

// FormatUsage renders the rows as one Markdown table.
func FormatUsage(rows []UsageRow, cfg UsageConfig) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Usage headers: %d key(s), the first shared with a client outside the fleet, seen only in OpenAI's usage headers; one sliding rule of 20 per [t − 1000 ms, t] a key, the reference's delays; %s measured after %s warm-up.\n\n",
		max(cfg.Keys, 1), cfg.Duration, cfg.Warmup)
	fmt.Fprintf(&b, "| outside share | 429 on the shared key | 429 on the others | shared key ok req/s | left by the outside client | vs left | outside calls/s | box busy |\n")
	fmt.Fprintf(&b, "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %.0f%% | %d | %d | %.2f | %.2f | %.1f%% | %.2f | %.0f%% |\n",
			100*r.Share, r.RateLimited, r.OthersRateLimited, r.OKPerSecond, r.Bound, 100*r.OKPerSecond/r.Bound, r.Outside, 100*r.BoxBusy)
	}
	return b.String()
}
