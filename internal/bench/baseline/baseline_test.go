package baseline_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/bench/baseline"
	"github.com/ratefleet/ratefleet/internal/bench/limitertest"
	"github.com/ratefleet/ratefleet/internal/limiter"
)

// The production limiter has the same methods, so a worker swaps either in.
var _ baseline.Pacer = (*limiter.Limiter)(nil)

const L = 50 * time.Millisecond

func mustNew(t *testing.T, name string, o baseline.Options) baseline.Pacer {
	t.Helper()
	p, err := baseline.NewWith(name, o)
	require.NoError(t, err)
	return p
}

func TestNew_KnowsEveryNameAndListsThemForAnUnknownOne(t *testing.T) {
	for _, name := range baseline.Names() {
		p, err := baseline.New(name)
		require.NoError(t, err, name)
		data, err := p.Handoff()
		require.NoError(t, err)
		var h struct{ Baseline string }
		require.NoError(t, json.Unmarshal(data, &h))
		assert.Equal(t, name, h.Baseline)
	}
	_, err := baseline.New("leaky")
	require.ErrorIs(t, err, baseline.ErrUnknown)
	assert.EqualError(t, err, `unknown baseline "leaky": want one of interval-ring, ring-buffer, rate-burst1, rate-burst20`)

	_, err = baseline.NewWith(baseline.IntervalRing, baseline.Options{Rule: limiter.Rule{Limit: 0, Window: time.Second}})
	assert.ErrorContains(t, err, "want at least 1 request per at least 1ms")
}

func TestBaselines_SpaceSendsAsDesigned(t *testing.T) {
	// With every answer back at once, the first 23 sends of a saturating load.
	ms := func(n ...int) []time.Duration {
		out := make([]time.Duration, len(n))
		for i, x := range n {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	repeat := func(d time.Duration, n int) []time.Duration {
		out := make([]time.Duration, n)
		for i := range out {
			out[i] = d
		}
		return out
	}
	every50 := func(from, n int) []time.Duration {
		out := make([]time.Duration, n)
		for i := range out {
			out[i] = time.Duration(from+50*i) * time.Millisecond
		}
		return out
	}
	for _, tc := range []struct {
		name string
		want []time.Duration
	}{
		// 50 ms apart; the 21st waits for the 1st + 1001 ms (now - oldest > 1000 in ms).
		{baseline.IntervalRing, append(every50(0, 20), ms(1001, 1051, 1101)...)},
		// A window's sends at once; then the 1st + 1000 ms + the 30 ms buffer, and a ns.
		{baseline.RingBuffer, append(repeat(0, 20), repeat(1030*time.Millisecond+1, 3)...)},
		// One token every 50 ms.
		{baseline.RateBurst1, every50(0, 23)},
		// 20 tokens at once, then one every 50 ms.
		{baseline.RateBurst20, append(repeat(0, 20), ms(50, 100, 150)...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := mustNew(t, tc.name, baseline.Options{})
			t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
			at := t0
			var got []time.Duration
			for range len(tc.want) {
				at = p.Next(at)
				tk, err := p.Sent(at)
				require.NoError(t, err)
				p.Wrote(tk, at)
				p.Answered(tk, at)
				got = append(got, at.Sub(t0))
				if next := p.Next(at); next.After(at) {
					_, err = p.Sent(next.Add(-time.Nanosecond))
					assert.ErrorIs(t, err, limiter.ErrTooEarly, "a send before Next")
				}
			}
			assert.Equal(t, tc.want, got)
		})
	}
}

// run drives a pacer with the guard off through the simulated upstream.
func run(t *testing.T, name string, n int, d limitertest.Delays) limitertest.Result {
	t.Helper()
	res := limitertest.Run{Pacer: mustNew(t, name, baseline.Options{GuardThreshold: -1}), Requests: n, Delays: d}.Execute()
	require.NoError(t, res.Err)
	require.Equal(t, n, res.Sent)
	return res
}

func TestIntervalRing_RejectedWhenDelaysVary(t *testing.T) {
	// Without delays, spacing send times is enough.
	res := run(t, baseline.IntervalRing, 10_000, limitertest.Constant(0, 0))
	assert.Zero(t, res.RateLimited)
	assert.Zero(t, res.BadNonce)

	// A window of requests that arrive L late, then a window of requests that
	// arrive at once: the 21st arrives 1001 - 50 ms after the 1st, and the upstream
	// rejects it. (The 22nd is then measured against the 1st again, and passes.)
	// This is why spacing send times cannot be made safe.
	res = run(t, baseline.IntervalRing, 10_000, limitertest.Blocks(20, limitertest.Trip{In: L}, limitertest.Trip{}))
	assert.Equal(t, 10_000/40, res.RateLimited, "the first request of every fast window")
}

func TestRingBuffer_RejectedWhenJitterExceedsItsBufferAndOutOfOrderInEveryBurst(t *testing.T) {
	// Without delays its windows are spaced right, but a window's 20 sends leave
	// at one instant and arrive together, in an order nothing guarantees: at
	// worst, 19 of every 20 fail the nonce check.
	res := run(t, baseline.RingBuffer, 10_000, limitertest.Constant(0, 0))
	assert.Zero(t, res.RateLimited)
	assert.Equal(t, 10_000/20*19, res.BadNonce)

	// Jitter of 50 ms beats a buffer of at most 50 ms: at the buffer's top, the
	// fast arrival is 1000 ms and a fraction after the slow one, still 1000 in
	// whole ms.
	res = run(t, baseline.RingBuffer, 10_000, limitertest.Blocks(20, limitertest.Trip{In: L}, limitertest.Trip{}))
	assert.Positive(t, res.RateLimited)

	// A window's sends leave together; random delays reorder their arrivals.
	res = run(t, baseline.RingBuffer, 10_000, limitertest.Uniform(1, L, time.Millisecond))
	assert.Positive(t, res.BadNonce)
}

func TestRateBaselines_RejectedEvenWithoutDelays(t *testing.T) {
	// 20 a second from a token bucket puts the 21st send exactly 1000 ms after the
	// 1st (burst 1), or 50 ms after it (burst 20): not more than 1000 ms.
	for _, name := range []string{baseline.RateBurst1, baseline.RateBurst20} {
		res := run(t, name, 1000, limitertest.Constant(0, 0))
		assert.Positive(t, res.RateLimited, name)
	}
}

func TestBaselines_GuardStopsThemBeforeTheUpstreamBlocksTheKeyUnlessTheySendInBursts(t *testing.T) {
	later := time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name    string
		blocked bool
	}{
		{baseline.IntervalRing, false},
		// A whole window leaves at one instant, before the first 429 can come back:
		// the guard trips too late, and the upstream would block the key.
		{baseline.RingBuffer, true},
		{baseline.RateBurst1, false},
		{baseline.RateBurst20, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := mustNew(t, tc.name, baseline.Options{})
			res := limitertest.Run{Pacer: p, Requests: 10_000, Delays: limitertest.Blocks(20, limitertest.Trip{In: L}, limitertest.Trip{})}.Execute()
			require.NoError(t, res.Err)
			assert.True(t, res.Quarantined)
			assert.True(t, p.Quarantined())
			if tc.blocked {
				assert.GreaterOrEqual(t, res.RateLimited, limiter.DefaultBanThreshold)
			} else {
				assert.Less(t, res.RateLimited, limiter.DefaultBanThreshold)
			}
			assert.Equal(t, later, p.Next(later), "a quarantined pacer's Next is now")
			_, err := p.Sent(later)
			assert.ErrorIs(t, err, limiter.ErrQuarantined)
		})
	}
}

func TestBaselines_ComparedWithTheLimiterUnderTheReferenceDelays(t *testing.T) {
	// Every seed design gets 429s or out-of-order nonces against the reference
	// upstream's delays; the limiter gets neither, at about 95% of the ceiling.
	n := 20_000
	if testing.Short() {
		n = 4_000
	}
	delays := func() limitertest.Delays { return limitertest.Uniform(9, L, time.Millisecond) }
	l, err := limiter.New(limiter.Config{})
	require.NoError(t, err)
	pacers := map[string]limitertest.Pacer{"limiter": l}
	for _, name := range baseline.Names() {
		pacers[name] = mustNew(t, name, baseline.Options{GuardThreshold: -1})
	}
	for _, name := range append([]string{"limiter"}, baseline.Names()...) {
		res := limitertest.Run{Pacer: pacers[name], Requests: n, Delays: delays()}.Execute()
		require.NoError(t, res.Err)
		accepted := float64(res.Accepted) / res.LastSend.Sub(res.FirstSend).Seconds()
		t.Logf("%-14s %6.2f sent/s per key, %6.2f accepted/s per key, %5d 429s, %5d bad nonces",
			name, res.Rate(), accepted, res.RateLimited, res.BadNonce)
		if name == "limiter" {
			assert.Zero(t, res.RateLimited+res.BadNonce)
		} else {
			assert.Positive(t, res.RateLimited+res.BadNonce, name)
		}
	}
}
