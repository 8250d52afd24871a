package worker_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/limiter"
	"github.com/ratefleet/ratefleet/internal/worker"
)

func TestCheckTimeouts(t *testing.T) {
	tests := []struct {
		name    string
		timeout time.Duration
		cfg     limiter.Config
		want    string // "" for none
	}{
		{name: "the defaults fit", timeout: worker.DefaultRequestTimeout},
		{name: "a round trip at L = 50 ms is 110 ms", timeout: 110 * time.Millisecond, want: "raise it above 110ms"},
		{name: "just above it", timeout: 111 * time.Millisecond},
		{name: "a wider L needs a longer timeout", timeout: time.Second, cfg: limiter.Config{MaxDelay: 500 * time.Millisecond}, want: "--request-timeout 1s"},
		{name: "longer than the arrival horizon", timeout: time.Minute, want: "--max-arrival 30s"},
		{name: "a longer horizon allows it", timeout: time.Minute, cfg: limiter.Config{MaxArrival: 2 * time.Minute}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := worker.CheckTimeouts(tt.timeout, tt.cfg)
			if tt.want == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, worker.ErrTimeouts)
			require.ErrorContains(t, err, tt.want)
		})
	}
}
