package limiter_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/limiter"
)

func TestRecover_ResumesFromTheCheckpointNotAFullWindow(t *testing.T) {
	cfg := limiter.SetConfig{
		Config: limiter.Config{MaxDelay: 50 * time.Millisecond, Unordered: true, ClockOffset: limiter.NoClockOffset},
		Dims: []limiter.Dimension{
			{Name: "weight", Rules: []limiter.Rule{{Limit: 20, Window: time.Second}}},
			{Name: "orders", Rules: []limiter.Rule{{Limit: 10, Window: time.Second}, {Kind: limiter.Fixed, Limit: 1000, Window: 24 * time.Hour}}},
		},
	}
	s, err := limiter.NewSet(cfg)
	require.NoError(t, err)
	day := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	now := day.Add(time.Hour)
	// 500 orders over the day so far, then a checkpoint.
	for range 500 {
		now = now.Add(120 * time.Millisecond)
		next := s.NextC(now, limiter.Cost{"weight": 1, "orders": 1})
		now = next
		tk, err := s.SentC(now, limiter.Cost{"weight": 1, "orders": 1})
		require.NoError(t, err)
		s.Answered(tk, now.Add(10*time.Millisecond))
	}
	cp := s.State()

	// The holder may have sent for 20 s more, then crashed; the claim comes 3 s
	// later.
	claim := now.Add(23 * time.Second)
	latest := claim.Add(50 * time.Millisecond)
	st := limiter.Recover(cfg, cp, 20*time.Second, latest)
	next, err := limiter.RestoreSet(cfg, st)
	require.NoError(t, err)

	// The 1 s rules are full until a window after the claim, as after a crash
	// with no checkpoint; the day's count resumes: 500 + at most 10 per
	// 1001 ms over 20 s (200) sent, so 300 orders are left today, not none.
	after := latest.Add(time.Second + 2*time.Millisecond)
	require.Equal(t, after, next.NextC(after, limiter.Cost{"weight": 1, "orders": 1}))
	sent := 0
	at := after
	for at.Before(day.Add(24 * time.Hour)) {
		n := next.NextC(at, limiter.Cost{"weight": 1, "orders": 1})
		if !n.Before(day.Add(24 * time.Hour)) {
			break
		}
		tk, err := next.SentC(n, limiter.Cost{"weight": 1, "orders": 1})
		require.NoError(t, err)
		next.Answered(tk, n.Add(time.Millisecond))
		sent++
		at = n
	}
	require.Equal(t, 1000-500-200, sent, "the rest of the day's orders, less what the crashed holder may have sent")

	// Without the checkpoint, the day's orders would wait for the next day.
	full, err := limiter.RestoreSet(cfg, limiter.State{Version: limiter.StateVersion, UpperBounds: []time.Time{latest}, Sends: limiter.MaxLimit})
	require.NoError(t, err)
	require.False(t, full.NextC(after, limiter.Cost{"weight": 1, "orders": 1}).Before(day.Add(24*time.Hour)))
}
