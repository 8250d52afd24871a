package limiter_test

import (
	"testing"
	"time"

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
