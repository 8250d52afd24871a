package limiter_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/limiter"
)

func TestLimiter_ARequestKeepsItsPlaceUntilItCanNoLongerArrive(t *testing.T) {
	// One request per more than 100 ms, so the next send waits for the bound of
	// the one before: Next = ub1 + 101. L = 10 ms, τ = 10 ms, H = 500 ms, no
	// order rule (a profile without a nonce), no margin. #1 is sent and written
	// at 0; then something happens to it, at the step's time.
	base := limiter.Config{
		Rules:    []limiter.Rule{{Limit: 1, Window: 100 * time.Millisecond}},
		MaxDelay: 10 * time.Millisecond, MaxDelayCeiling: 10 * time.Millisecond, MaxArrival: 500 * time.Millisecond,
		Margin: limiter.NoMargin, Registration: limiter.NoRegistration, Unordered: true,
	}
	never := ms(3_600_000) // an hour: the bound is open
	tests := []struct {
		name   string
		before func(l *limiter.Limiter) // sends before #1, at negative times
		report func(l *limiter.Limiter, tk limiter.Ticket)
		unsent bool // #1 is not reported written
		at     int  // Next is asked at this ms
		want   time.Time
	}{
		{name: "in flight, 300 ms after it left: open", at: 300, want: never},
		{name: "in flight, an hour after it left: still open", at: 3_600_000, want: never.Add(time.Hour)},
		{name: "answered at 5: min(left + L, answer)",
			report: func(l *limiter.Limiter, tk limiter.Ticket) { l.Answered(tk, ms(5)) }, at: 5, want: ms(5 + 101)},
		{name: "answered at 25, within 2L + τ: left + L",
			report: func(l *limiter.Limiter, tk limiter.Ticket) { l.Answered(tk, ms(25)) }, at: 25, want: ms(10 + 101)},
		{name: "answered at 900, an outlier: its answer",
			report: func(l *limiter.Limiter, tk limiter.Ticket) { l.Answered(tk, ms(900)) }, at: 900, want: ms(900 + 101)},
		{name: "lost at 200: left + H",
			report: func(l *limiter.Limiter, tk limiter.Ticket) { l.Lost(tk, ms(200)) }, at: 200, want: ms(500 + 101)},
		{name: "lost at 700, past H: give-up + L",
			report: func(l *limiter.Limiter, tk limiter.Ticket) { l.Lost(tk, ms(700)) }, at: 700, want: ms(710 + 101)},
		{name: "lost at 200 after a 600 ms round trip: H is raised to it",
			before: func(l *limiter.Limiter) {
				tk, err := l.Sent(ms(-5000))
				require.NoError(t, err)
				l.Wrote(tk, ms(-5000))
				l.Answered(tk, ms(-4400))
			},
			report: func(l *limiter.Limiter, tk limiter.Ticket) { l.Lost(tk, ms(200)) }, at: 200, want: ms(600 + 101)},
		{name: "a gateway answered at 30 and may pass it on until 230",
			report: func(l *limiter.Limiter, tk limiter.Ticket) { l.LostUntil(tk, ms(30), ms(230)) }, at: 30, want: ms(230 + 101)},
		{name: "a gateway's hold shorter than L: left + L",
			report: func(l *limiter.Limiter, tk limiter.Ticket) { l.LostUntil(tk, ms(3), ms(4)) }, at: 3, want: ms(10 + 101)},
		{name: "never left: no place at all", unsent: true,
			report: func(l *limiter.Limiter, tk limiter.Ticket) { l.Unsent(tk, ms(3)) }, at: 3, want: ms(3)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := mustNew(t, base)
			if tt.before != nil {
				tt.before(l)
			}
			tk, err := l.Sent(ms(0))
			require.NoError(t, err)
			if !tt.unsent {
				l.Wrote(tk, ms(0))
			}
			if tt.report != nil {
				tt.report(l, tk)
			}
			got := l.Next(ms(tt.at))
			if tt.want.After(never.Add(-time.Minute)) {
				assert.True(t, got.After(never), "Next is %v: the request in flight must keep its place", got)
				return
			}
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestLimiter_NeverLeftIsTakenAsLostWhenItWasWritten(t *testing.T) {
	// Unsent contradicts a Wrote: the request may have left, so it is Lost.
	l := mustNew(t, limiter.Config{
		Rules:    []limiter.Rule{{Limit: 1, Window: 100 * time.Millisecond}},
		MaxDelay: 10 * time.Millisecond, MaxDelayCeiling: 10 * time.Millisecond, MaxArrival: 500 * time.Millisecond,
		Margin: limiter.NoMargin, Registration: limiter.NoRegistration, Unordered: true,
	})
	tk, err := l.Sent(ms(0))
	require.NoError(t, err)
	l.Wrote(tk, ms(2))
	l.Unsent(tk, ms(3))
	assert.Equal(t, ms(502+101), l.Next(ms(3)))
}

func TestLimiter_AnUnansweredRequestKeepsItsPlaceAfterItLeavesTheRing(t *testing.T) {
	// small(): 3 per >100 ms, L = 10 ms. #0 is written at 0 and never answered:
	// it may arrive at any moment, and holds one of the 3 places however many
	// sends follow it. Every other send must leave at least 101 ms after the
	// answer of the one two before it.
	l := mustNew(t, small())
	tk, err := l.Sent(ms(0))
	require.NoError(t, err)
	l.Wrote(tk, ms(0))
	var sent, answered []time.Time
	at := ms(0)
	for len(sent) < 30 {
		at = l.Next(at)
		tk, err := l.Sent(at)
		require.NoError(t, err)
		l.Wrote(tk, at)
		l.Answered(tk, at.Add(time.Millisecond))
		sent, answered = append(sent, at), append(answered, at.Add(time.Millisecond))
	}
	for k := 2; k < len(sent); k++ {
		assert.False(t, sent[k].Before(answered[k-2].Add(101*time.Millisecond)),
			"send %d at %s: a fourth arrival within 100 ms while #0 may still arrive", k+1, sent[k].Sub(ms(0)))
	}
}

func TestLimiter_OnlyARequestsOwnPlaceWaitsForItsGatewayHold(t *testing.T) {
	// small(): 3 per >100 ms, L = 10 ms, with the order rule. A gateway answered
	// #1 at 5 and may pass it on until 2005: #1 holds one place of the window
	// until then, but the key's next sends go on (the order rule takes left +
	// L, not the hold), two more within the window, then the third waits.
	l := mustNew(t, small())
	tk, err := l.Sent(ms(0))
	require.NoError(t, err)
	l.Wrote(tk, ms(0))
	l.LostUntil(tk, ms(5), ms(2005))
	require.Equal(t, ms(11), l.Next(ms(5)), "the order rule: left + L + 1")
	at := ms(11)
	for range 2 {
		at = l.Next(at)
		tk, err := l.Sent(at)
		require.NoError(t, err)
		l.Wrote(tk, at)
		l.Answered(tk, at)
	}
	require.Equal(t, ms(12), at, "two sends go on at once")
	// Three places: #1 (2005), #2 (11), #3 (12): the next waits for #2 + 101.
	assert.Equal(t, ms(112), l.Next(at))
}

func TestLimiter_TheOrderRuleLooksPastASendThatNeverLeft(t *testing.T) {
	// small(): L = 10 ms. #1 is written at 0; #2, sent at 11, never left. The
	// next send waits for #1's order bound (0 + 10 + 1), not for #2's.
	l := mustNew(t, small())
	tk, err := l.Sent(ms(0))
	require.NoError(t, err)
	l.Wrote(tk, ms(0))
	tk, err = l.Sent(ms(11))
	require.NoError(t, err)
	l.Unsent(tk, ms(12))
	assert.Equal(t, ms(12), l.Next(ms(12)))
}

func TestLimiter_ASendStillLeavingMovesItsBoundWithNow(t *testing.T) {
	// One request per more than 100 ms, no order rule, L = 10 ms: while #1 is
	// not reported written it may leave at any moment, so the next send waits
	// for now + L + 101, asked at any time.
	l := mustNew(t, limiter.Config{
		Rules:    []limiter.Rule{{Limit: 1, Window: 100 * time.Millisecond}},
		MaxDelay: 10 * time.Millisecond, Margin: limiter.NoMargin, Registration: limiter.NoRegistration, Unordered: true,
	})
	_, err := l.Sent(ms(0))
	require.NoError(t, err)
	for _, at := range []int{0, 5, 50, 500} {
		assert.Equal(t, ms(at+10+101), l.Next(ms(at)), "asked at %d ms", at)
	}
}
