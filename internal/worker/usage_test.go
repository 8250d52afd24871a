package worker_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/exchange"
	"github.com/ratefleet/ratefleet/internal/limiter"
	"github.com/ratefleet/ratefleet/internal/profile"
	"github.com/ratefleet/ratefleet/internal/testenv"
	"github.com/ratefleet/ratefleet/wire"
)

// TestWorkers_UsageHeadersLeaveAnOutsideClientItsShare: another client uses
// 30 % of the key's budget, which the workers see only in the upstream's usage
// headers: the key draws no 429, and serves every request.
func TestWorkers_UsageHeadersLeaveAnOutsideClientItsShare(t *testing.T) {
	// 20 requests per 101 ms (a rule counting requests, reported in OpenAI's
	// headers), delays of 0..5 ms each way; the other client calls evenly,
	// from the simulator's start, at 30 % of that.
	window := 100 * time.Millisecond
	cfg := exchange.DefaultConfig()
	cfg.Keys = exchange.DefaultKeys()[:1]
	cfg.Limit = 0
	cfg.InDelay, cfg.OutDelay = exchange.DelayRange{Max: 5 * time.Millisecond}, exchange.DelayRange{Max: 5 * time.Millisecond}
	cfg.Rules = []exchange.Rule{{Kind: exchange.Sliding, Limit: 20, Window: window, Dimension: exchange.Requests, Scope: exchange.PerKey}}
	cfg.UsageHeaders = []exchange.HeaderStyle{exchange.OpenAIHeaders}
	cfg.Outside = exchange.Outside{Rate: 0.3 * 20 / (window + time.Millisecond).Seconds(), Keys: []string{cfg.Keys[0].Name()}}
	env := testenv.Start(t, testenv.Options{Exchange: &cfg})

	p := loadProfile(t, profile.ReferenceYAML, env.ExchangeURL, profile.Rule{Limit: 20, Window: window})
	p.Usage = []profile.UsageHeader{{Header: "x-ratelimit-remaining-requests", Rule: 0, Reports: profile.ReportsRemaining}}
	require.NoError(t, p.Validate())
	ids := publishRequests(t, env, 300, time.Minute)
	startProfiled(t, env, 2, cfg.Keys, p, limiter.Config{MaxDelay: 250 * time.Millisecond}) // a loaded machine delays more than 5 ms (fastExchange)
	waitDrained(t, env, 60*time.Second)

	st := env.Exchange.Stats()
	require.Len(t, st.Keys, 1)
	require.Positive(t, st.Keys[0].Outside, "the other client used the key")
	require.Zero(t, st.Keys[0].RateLimited, "no 429 on the shared key")
	served := 0
	for _, r := range results(t, env) {
		require.Equal(t, wire.Served, r.Outcome, r.Error)
		served++
	}
	require.Equal(t, len(ids), served, "every request served")
	t.Logf("the key: %d served, %d of the other client's calls", st.Keys[0].OK, st.Keys[0].Outside)
}
