package limiter_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/limiter"
)

// TestLimiter_AWeightedSendTakesItsWeightInEveryWindow: rule 4 units per 100 ms,
// L = 10 ms, no margin; times are t0 + ms.
func TestLimiter_AWeightedSendTakesItsWeightInEveryWindow(t *testing.T) {
	l := mustNew(t, limiter.Config{Rules: []limiter.Rule{{Limit: 4, Window: 100 * time.Millisecond}}, MaxDelay: 10 * time.Millisecond, Margin: limiter.NoMargin, Registration: limiter.NoRegistration})
	require.Equal(t, 4, l.MaxWeight())

	// Units 1-2 at 0, answered at 5: both arrived by 5.
	tk, err := l.SentN(ms(0), 2)
	require.NoError(t, err)
	l.Answered(tk, ms(5))
	// Units 3-4 may follow at 5 + 1 (order); the window holds 4 units.
	require.Equal(t, ms(6), l.NextN(ms(0), 2))
	tk, err = l.SentN(ms(6), 2)
	require.NoError(t, err)
	l.Answered(tk, ms(10))

	tests := []struct {
		w    int
		want time.Time
		why  string
	}{
		// Unit 5 needs unit 1 (ub 5) + 100 + 1 ms: the report reached every unit.
		{1, ms(106), "unit 1 aged out of the window"},
		{2, ms(106), "units 5-6 need units 1-2, both at ub 5"},
		// Units 5-7 need unit 3 (ub 10) + 101.
		{3, ms(111), "the third unit needs the second send's first unit"},
	}
	for _, tt := range tests {
		require.Equal(t, tt.want, l.NextN(ms(11), tt.w), tt.why)
	}
	_, err = l.SentN(ms(106), 3)
	require.ErrorIs(t, err, limiter.ErrTooEarly)
	_, err = l.SentN(ms(200), 5)
	require.ErrorIs(t, err, limiter.ErrInvalidConfig, "a weight above the smallest limit could never be sent")
	_, err = l.SentN(ms(111), 3)
	require.NoError(t, err)
}

func TestLimiter_TrustRetryAfterPausesExactlyThatLong(t *testing.T) {
	rule := []limiter.Rule{{Limit: 60, Window: time.Minute}}
	tests := []struct {
		name  string
		trust bool

		retry time.Duration
		want  time.Time
	}{
		{"the longest window by default", false, 2 * time.Second, ms(10 + 60_000 + 1 + 1)},
		{"the Retry-After when trusted", true, 2 * time.Second, ms(10 + 2_000)},
		{"no Retry-After to trust: the longest window", true, 0, ms(10 + 60_000 + 1 + 1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := mustNew(t, limiter.Config{Rules: rule, BanThreshold: 100, TrustRetryAfter: tt.trust})
			tk, err := l.Sent(ms(0))
			require.NoError(t, err)
			l.Rejected(tk, ms(10), tt.retry)
			require.Equal(t, tt.want, l.Next(ms(10)))
		})
	}
}

func TestLimiter_MaxWeightIsTheSmallestRulesLimit(t *testing.T) {
	// Rules in any order: a send can never weigh more than the smallest limit.
	for _, rules := range [][]limiter.Rule{
		{{Limit: 100, Window: time.Minute}, {Limit: 3, Window: 100 * time.Millisecond}, {Limit: 20, Window: time.Second}},
		{{Limit: 3, Window: 100 * time.Millisecond}, {Limit: 100, Window: time.Minute}},
	} {
		l := mustNew(t, limiter.Config{Rules: rules})
		require.Equal(t, 3, l.MaxWeight())
		_, err := l.SentN(ms(0), 4)
		require.ErrorIs(t, err, limiter.ErrInvalidConfig)
	}
}
