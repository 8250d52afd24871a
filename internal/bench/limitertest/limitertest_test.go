package limitertest_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/bench/limitertest"
	"github.com/ratefleet/ratefleet/internal/limiter"
)

var t0 = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

func TestUpstream_AcceptsOnlyMoreThanTheWindowInWholeMilliseconds(t *testing.T) {
	u := limitertest.NewUpstream([]limiter.Rule{{Limit: 2, Window: 100 * time.Millisecond}})
	for i, s := range []struct {
		at    time.Duration
		nonce uint64
		want  int
	}{
		{0, 1, 200},
		{10 * time.Millisecond, 2, 200},
		{100*time.Millisecond + 900*time.Microsecond, 3, 429}, // 100 - 0 in whole ms: not more than 100
		{101 * time.Millisecond, 4, 200},                      // 101 - 0
		{110*time.Millisecond + 990*time.Microsecond, 5, 429}, // 110 - 10
		{111 * time.Millisecond, 3, 400},                      // 111 - 10 passes; the nonce is stale, yet recorded
		{201*time.Millisecond + 500*time.Microsecond, 6, 429}, // 201 - 101
		{202 * time.Millisecond, 6, 200},                      // 202 - 101
	} {
		assert.Equal(t, s.want, u.Arrive(t0.Add(s.at), s.nonce), "arrival %d at %v", i, s.at)
	}
	assert.Equal(t, 4, u.Accepted)
	assert.Equal(t, 3, u.RateLimited)
	assert.Equal(t, 1, u.BadNonce)
}

// eager sends whenever asked and learns nothing.
type eager struct{}

func (eager) Next(now time.Time) time.Time                      { return now }
func (eager) Late(time.Time, time.Duration)                     {}
func (eager) Sent(time.Time) (limiter.Ticket, error)            { return limiter.Ticket{}, nil }
func (eager) Wrote(limiter.Ticket, time.Time)                   {}
func (eager) Answered(limiter.Ticket, time.Time)                {}
func (eager) Inverted(limiter.Ticket, time.Time)                {}
func (eager) Lost(limiter.Ticket, time.Time)                    {}
func (eager) Rejected(limiter.Ticket, time.Time, time.Duration) {}
func (eager) Quarantined() bool                                 { return false }

func TestRun_ChecksNoncesInArrivalOrderWithTiesAtTheirWorst(t *testing.T) {
	for _, tc := range []struct {
		name   string
		delays limitertest.Delays
	}{
		{"overtaken", limitertest.Cycle(limitertest.Trip{In: 10 * time.Millisecond}, limitertest.Trip{})},
		{"tied", limitertest.Constant(0, 0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := limitertest.Run{Pacer: eager{}, Requests: 2, Delays: tc.delays, Start: t0}.Execute()
			require.NoError(t, res.Err)
			assert.Equal(t, 1, res.BadNonce)
			assert.Equal(t, 1, res.Accepted)
		})
	}
}

func TestRun_ReportsThroughput(t *testing.T) {
	res := limitertest.Run{
		Pacer: eager{}, Requests: 11, Delays: limitertest.Constant(0, 0), Start: t0,
		Ready: func(i int) time.Time { return t0.Add(time.Duration(i) * 100 * time.Millisecond) },
	}.Execute()
	require.NoError(t, res.Err)
	assert.InDelta(t, 10.0, res.Rate(), 1e-9)
	assert.Equal(t, t0, res.FirstSend)
	assert.Equal(t, t0.Add(time.Second), res.LastSend)
}
