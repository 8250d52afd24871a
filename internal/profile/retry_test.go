package profile_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet"
	"github.com/ratefleet/ratefleet/internal/profile"
	"github.com/ratefleet/ratefleet/internal/streams"
)

func TestRetry_DelayGrowsWithJitterUpToItsCap(t *testing.T) {
	def := profile.Retry{}
	tests := []struct {
		name string
		r    profile.Retry
		n    int
		u    float64
		want time.Duration
	}{
		{"first, no jitter drawn", def, 1, 0.5, 100 * time.Millisecond},
		{"doubles", def, 3, 0.5, 400 * time.Millisecond},
		{"capped", def, 20, 0.5, 30 * time.Second},
		{"jitter down", def, 1, 0, 80 * time.Millisecond},
		{"jitter up", def, 1, 1, 120 * time.Millisecond},
		{"no jitter", profile.Retry{Jitter: -1}, 2, 0, 200 * time.Millisecond},
		{"its own first and factor", profile.Retry{First: time.Second, Factor: 3, Jitter: -1}, 3, 0.5, 9 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, tt.r.Delay(tt.n, tt.u))
		})
	}
}

// With the shipped streams.yaml and a profile that says nothing of retries, a
// request failing at every delivery is tried again for more than five minutes
// (at the least jitter drawn each time) before its deliveries run out: an
// upstream outage of five minutes buries nothing whose time to live allows the
// wait.
func TestRetry_TheDefaultsRideOutAFiveMinuteOutage(t *testing.T) {
	sc, err := streams.Parse("streams.yaml", ratefleet.DefaultStreams())
	require.NoError(t, err)
	var waited time.Duration
	for n := 1; n < sc.Requests.Consumer.MaxDeliver; n++ {
		waited += profile.Reference().Retry.Delay(n, 0)
	}
	require.Greater(t, waited, 5*time.Minute)
}

func TestRetry_RefusesWhatCannotBeMeant(t *testing.T) {
	tests := []struct{ name, yaml, field string }{
		{"negative delay", "retry: {first: -1s}", "retry"},
		{"shrinking factor", "retry: {factor: 0.5}", "retry.factor"},
		{"jitter above one", "retry: {jitter: 2}", "retry.jitter"},
		{"negative attempts", "retry: {max_attempts: -1}", "retry.max_attempts"},
		{"first above the cap", "retry: {first: 1m, max_delay: 1s}", "retry"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := profile.Parse("test", []byte(profile.ReferenceYAML+tt.yaml+"\n"))
			require.ErrorIs(t, err, profile.ErrInvalid)
			require.Contains(t, err.Error(), tt.field)
		})
	}
}
