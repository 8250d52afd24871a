package bench_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/bench"
	"github.com/ratefleet/ratefleet/internal/exchange"
	"github.com/ratefleet/ratefleet/internal/limiter"
)

// TestRouting_ServesEveryRequestOnItsRouteAtASmallN runs the routing benchmark
// with the simulator's time scaled down tenfold: every request is served, the
// labelled ones only by labelled keys, without a 429 or a 400.
func TestRouting_ServesEveryRequestOnItsRouteAtASmallN(t *testing.T) {
	x := exchange.DefaultConfig()
	x.Window = 100 * time.Millisecond
	x.InDelay = exchange.DelayRange{Max: 5 * time.Millisecond}
	x.OutDelay = exchange.DelayRange{Max: 5 * time.Millisecond}
	res, err := bench.Routing(context.Background(), bench.RoutingConfig{
		Batch: 200, Urgent: 40, UrgentRate: 20, Keys: 3, Exchange: &x,
		Limiter: limiter.Config{Rules: []limiter.Rule{{Limit: 20, Window: 100 * time.Millisecond}}, MaxDelay: 250 * time.Millisecond},
		Timeout: time.Minute,
	})
	require.NoError(t, err)
	t.Logf("\n%s", bench.RoutingTable(res))
	require.Equal(t, 200, res.Batch)
	require.Equal(t, 40, res.Urgent)
	require.Equal(t, 48, res.Labelled, "every fifth of each kind")
	require.Equal(t, 240, res.Served, "%+v", res)
	require.Zero(t, res.Buried+res.Pending)
	require.Zero(t, res.Violations)
	require.Zero(t, res.RateLimited)
	require.Zero(t, res.BadNonce)
	require.Positive(t, res.UrgentP99, "every urgent request's send was seen")
	require.GreaterOrEqual(t, res.BatchWorst, res.UrgentP99, "the backlog waits longer than the urgent requests")
}
