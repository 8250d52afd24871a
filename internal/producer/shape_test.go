package producer_test

import (
	"io"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/producer"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func TestSeed_GapsAreWholeMillisecondsFrom0To21(t *testing.T) {
	s := producer.NewSeed(rand.New(rand.NewPCG(7, 7)))
	twin := rand.New(rand.NewPCG(7, 7))

	due, ok := s.Next(t0)
	require.True(t, ok)
	require.Equal(t, t0, due, "the first request goes at once")

	seen := map[time.Duration]int{}
	const n = 20000
	for i := range n {
		// A timer oversleeping by a few ms does not move the schedule.
		next, ok := s.Next(due.Add(time.Duration(i%3) * time.Millisecond))
		require.True(t, ok)
		gap := next.Sub(due)
		require.Equal(t, time.Duration(twin.IntN(22))*time.Millisecond, gap, "draw %d", i)
		require.True(t, gap >= 0 && gap <= producer.SeedMaxGap, "gap %s", gap)
		seen[gap]++
		due = next
	}
	require.Len(t, seen, 22, "every whole ms from 0 to 21 occurs")
	mean := due.Sub(t0) / n
	require.InDelta(t, float64(10500*time.Microsecond), float64(mean), float64(300*time.Microsecond),
		"mean pause about 10.5 ms: about 95 requests a second")
}

func TestSeed_HeldBackCountsThePauseFromWhenItGoesOn(t *testing.T) {
	s := producer.NewSeed(rand.New(rand.NewPCG(3, 3)))
	twin := rand.New(rand.NewPCG(3, 3))
	tests := []struct {
		late     time.Duration // how late Next is called after the previous due time
		fromThen bool          // whether the pause counts from that call
	}{
		{0, false},
		{producer.SeedMaxGap, false},
		{producer.SeedMaxGap + time.Millisecond, true},
		{5 * time.Second, true},
		{time.Millisecond, false},
	}
	due, _ := s.Next(t0)
	for i, tt := range tests {
		now := due.Add(tt.late)
		next, ok := s.Next(now)
		require.True(t, ok)
		base := due
		if tt.fromThen {
			base = now
		}
		require.Equal(t, base.Add(time.Duration(twin.IntN(22))*time.Millisecond), next, "step %d", i)
		due = next
	}
}

func TestRate_DueTimesFollowAFixedScheduleWhateverTheClock(t *testing.T) {
	tests := []struct {
		rate float64
		want []time.Duration
	}{
		{4, []time.Duration{0, 250 * time.Millisecond, 500 * time.Millisecond, 750 * time.Millisecond, time.Second}},
		{3, []time.Duration{0, 333333333, 666666666, time.Second, 1333333333}},
		{95, []time.Duration{0, 10526315, 21052631, 31578947, 42105263}},
	}
	for _, tt := range tests {
		r, err := producer.NewRate(tt.rate)
		require.NoError(t, err)
		for k, want := range tt.want {
			// A late clock (the producer was held back) does not move the schedule.
			due, ok := r.Next(t0.Add(time.Duration(k) * time.Second))
			require.True(t, ok)
			require.Equal(t, want, due.Sub(t0), "rate %v, request %d", tt.rate, k)
		}
	}
}

func TestPoisson_GapsAreExponentialWithMeanOneOverRate(t *testing.T) {
	const rate = 95.0
	p, err := producer.NewPoisson(rate, rand.New(rand.NewPCG(1, 2)))
	require.NoError(t, err)
	twin := rand.New(rand.NewPCG(1, 2))

	prev, ok := p.Next(t0)
	require.True(t, ok)
	require.Equal(t, t0, prev)
	const n = 20000
	for i := range n {
		// Due times chain from the previous due time, not from the clock.
		due, ok := p.Next(t0.Add(time.Hour))
		require.True(t, ok)
		want := time.Duration(twin.ExpFloat64() * float64(time.Second) / rate)
		require.Equal(t, want, due.Sub(prev), "gap %d", i)
		prev = due
	}
	mean := prev.Sub(t0).Seconds() / n
	require.InEpsilon(t, 1/rate, mean, 0.03)
}

func TestBurst_DueTimes(t *testing.T) {
	tests := []struct {
		name  string
		size  int
		every time.Duration
		want  []time.Duration // then, for a single burst, the end
	}{
		{"one burst", 3, 0, []time.Duration{0, 0, 0}},
		{"repeated", 2, time.Second, []time.Duration{0, 0, time.Second, time.Second, 2 * time.Second, 2 * time.Second, 3 * time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := producer.NewBurst(tt.size, tt.every)
			require.NoError(t, err)
			for k, want := range tt.want {
				due, ok := b.Next(t0.Add(time.Duration(k) * time.Millisecond))
				require.True(t, ok)
				require.Equal(t, want, due.Sub(t0), "request %d", k)
			}
			_, ok := b.Next(t0)
			require.Equal(t, tt.every > 0, ok, "a single burst ends; a repeated one goes on")
		})
	}
}

func TestShapes_RejectBadParameters(t *testing.T) {
	for _, r := range []float64{0, -1, 0.0001, math.NaN(), math.Inf(1)} {
		_, err := producer.NewRate(r)
		require.Error(t, err, "rate %v", r)
		_, err = producer.NewPoisson(r, rand.New(rand.NewPCG(1, 1)))
		require.Error(t, err, "poisson %v", r)
	}
	_, err := producer.NewBurst(0, 0)
	require.Error(t, err)
	_, err = producer.NewBurst(1, -time.Second)
	require.Error(t, err)
}

func TestGenerator_MakesRequestsCreatedWhenDue(t *testing.T) {
	b, err := producer.NewBurst(2, 0)
	require.NoError(t, err)
	g, err := producer.NewGenerator(b, 1500*time.Millisecond, []byte(`{"symbol":"BTC"}`))
	require.NoError(t, err)
	ids := map[string]bool{}
	for range 2 {
		it, err := g.Next(t0)
		require.NoError(t, err)
		require.Equal(t, t0, it.Due)
		require.Equal(t, t0, it.Request.Created)
		require.Equal(t, int64(1500), it.Request.TTLms)
		require.JSONEq(t, `{"symbol":"BTC"}`, string(it.Request.Payload))
		require.NoError(t, it.Request.Validate())
		ids[it.Request.ID] = true
	}
	require.Len(t, ids, 2, "each request has its own id")
	_, err = g.Next(t0)
	require.ErrorIs(t, err, io.EOF)

	_, err = producer.NewGenerator(b, 0, nil)
	require.Error(t, err)
	_, err = producer.NewGenerator(b, time.Second, []byte(`{oops`))
	require.Error(t, err)
}
