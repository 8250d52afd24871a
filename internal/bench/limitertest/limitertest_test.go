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

func TestUpstream_CountsFixedIntervalsOnItsOwnClock(t *testing.T) {
	// Two per 100 ms interval of the upstream's clock, which is 30 ms behind the
	// simulation's: its intervals start at 30, 130, 230 ms.
	u := limitertest.NewUpstream([]limiter.Rule{{Kind: limiter.Fixed, Limit: 2, Window: 100 * time.Millisecond}})
	u.Offset = 30 * time.Millisecond
	us := time.Microsecond
	for i, s := range []arrival{
		{0, 200},
		{29900 * us, 200},
		{29990 * us, 429}, // the third in [-70, 30)
		{30 * time.Millisecond, 200},
		{129 * time.Millisecond, 200},
		{129900 * us, 429},
		{130 * time.Millisecond, 200}, // a new interval, whatever came just before
	} {
		assert.Equal(t, s.want, u.Arrive(t0.Add(s.at), 0), "arrival %d at %v", i, s.at)
	}
}

// arrival is one arrival at t0 + at and the status the upstream must answer.
type arrival struct {
	at   time.Duration
	want int
}

func TestUpstream_BucketFallsAtItsRate(t *testing.T) {
	ms := time.Millisecond
	for _, tc := range []struct {
		name  string
		rule  limiter.Rule
		steps []arrival
	}{
		// Two units, falling 10 a second: one unit every 100 ms, in whole ms.
		{"continuous", limiter.Rule{Kind: limiter.Bucket, Limit: 2, Rate: 10}, []arrival{
			{0, 200}, {0, 200},
			{50 * ms, 429},                   // 2 - 0.5 + 1 > 2
			{100 * ms, 200},                  // 2 - 1 + 1
			{199900 * time.Microsecond, 429}, // 199 ms on its clock: 2 - 0.99 + 1
			{200 * ms, 200},
		}},
		// Falling 1 a second, all at once at each whole second.
		{"in steps", limiter.Rule{Kind: limiter.Bucket, Limit: 2, Rate: 1, Window: time.Second}, []arrival{
			{0, 200}, {0, 200},
			{999 * ms, 429},
			{1000 * ms, 200},
			{1999 * ms, 429},
			{2000 * ms, 200},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := limitertest.NewUpstream([]limiter.Rule{tc.rule})
			for i, s := range tc.steps {
				assert.Equal(t, s.want, u.Arrive(t0.Add(s.at), 0), "arrival %d at %v", i, s.at)
			}
		})
	}
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
