package burst_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/ratefleet/ratefleet/internal/burst"
)

func TestPace_HoldsOnlyWhereCompanyIsExpected(t *testing.T) {
	const (
		window  = 20 * time.Millisecond
		quarter = window / 4
	)
	start := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		gaps []time.Duration // between arrivals, after the first
		want bool
	}{
		{"no arrival yet: company expected", nil, true},
		{"one arrival: no gap seen", []time.Duration{}, true},
		{"a worker at full rate: an arrival a millisecond", repeat(time.Millisecond, 20), true},
		{"one key: an arrival every 50 ms", repeat(50*time.Millisecond, 8), false},
		{"five keys on one worker: every 10.5 ms", repeat(10500*time.Microsecond, 20), false},
		{"50 keys on one worker: every 1.05 ms", repeat(1050*time.Microsecond, 20), true},
		{"just under a quarter of the window", repeat(quarter-time.Microsecond, 50), true},
		{"just over a quarter of the window: fewer than four expected within it", repeat(quarter+time.Microsecond, 50), false},
		{"a long pause, then full rate again", append(append(repeat(time.Millisecond, 20), time.Hour), repeat(time.Millisecond, 8)...), true},
		{"full rate, then a pause", append(repeat(time.Millisecond, 20), time.Minute), false},
		{"a clock that steps back counts as no gap", append(repeat(time.Millisecond, 4), -time.Hour, -time.Hour), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := burst.New(window)
			if tt.gaps != nil {
				at := start
				p.Arrive(at)
				for _, g := range tt.gaps {
					at = at.Add(g)
					p.Arrive(at)
				}
			}
			assert.Equal(t, tt.want, p.Worth())
			assert.Equal(t, window, p.Window())
		})
	}
}

func repeat(d time.Duration, n int) []time.Duration {
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = d
	}
	return out
}
