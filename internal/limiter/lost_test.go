package limiter_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/limiter"
)

func TestLimiter_AGatewaysAnswerHoldsTheNextSendUntilTheRequestCanNoLongerArrive(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 15, 0, 0, 0, time.UTC)
	ms := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	tests := []struct {
		name     string
		report   func(l *limiter.Limiter, tk limiter.Ticket)
		wantNext time.Time
	}{
		// Written at 0, L = 50 ms: the order rule lets the next leave at 51.
		{"lost: left + L", func(l *limiter.Limiter, tk limiter.Ticket) { l.Lost(tk, ms(10)) }, ms(51)},
		// A gateway answered at 10 and may pass the request on for 2 s: 2010 + 1.
		{"gateway: answer + hold", func(l *limiter.Limiter, tk limiter.Ticket) { l.LostUntil(tk, ms(10), ms(2010)) }, ms(2011)},
		// A hold shorter than L changes nothing.
		{"gateway with a short hold: left + L", func(l *limiter.Limiter, tk limiter.Ticket) { l.LostUntil(tk, ms(10), ms(20)) }, ms(51)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := limiter.New(limiter.Config{})
			require.NoError(t, err)
			tk, err := l.Sent(ms(0))
			require.NoError(t, err)
			l.Wrote(tk, ms(0))
			tt.report(l, tk)
			require.Equal(t, tt.wantNext, l.Next(ms(10)))
		})
	}
}

func TestLimiter_AnUnansweredRequestKeepsItsPlaceAfterItLeavesTheRing(t *testing.T) {
	// small(): 3 per >100 ms, L = 10 ms, ceiling 1 s; the ring keeps 6 sends.
	// #0 is written at 0 and never answered: it may arrive until 1000, and holds
	// one of the 3 places until 1000 + 101, long after later sends have pushed it
	// out of the ring. Every other send must leave at least 101 ms after the
	// answer of the one two before it until then.
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
	require.True(t, sent[6].Before(ms(1000)), "#0 left the ring while it could still arrive")
	for k := 2; k < len(sent); k++ {
		if sent[k].Before(ms(1101)) {
			assert.False(t, sent[k].Before(answered[k-2].Add(101*time.Millisecond)),
				"send %d at %s: a fourth arrival within 100 ms while #0 may still arrive", k+1, sent[k].Sub(ms(0)))
		}
	}
}
