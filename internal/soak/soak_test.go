package soak

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestByLastFault_CountsEachBurialUnderTheFaultBeforeIt(t *testing.T) {
	at := time.Date(2026, 12, 7, 6, 0, 0, 0, time.UTC)
	faults := []Fault{
		{Kind: FaultNATS, At: at.Add(20 * time.Second)},
		{Kind: FaultUnusableKey, At: at.Add(40 * time.Second)},
	}
	tests := []struct {
		name string
		at   []time.Duration
		want map[int]int
	}{
		{name: "none", want: map[int]int{}},
		{name: "before any fault", at: []time.Duration{0, 19 * time.Second}, want: map[int]int{-1: 2}},
		{name: "at a fault's instant, under it", at: []time.Duration{20 * time.Second}, want: map[int]int{0: 1}},
		{name: "each under the last before it", at: []time.Duration{5 * time.Second, 25 * time.Second, 39 * time.Second, 41 * time.Second, time.Hour},
			want: map[int]int{-1: 1, 0: 2, 1: 2}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var ts []time.Time
			for _, d := range tc.at {
				ts = append(ts, at.Add(d))
			}
			require.Equal(t, tc.want, byLastFault(faults, ts))
		})
	}
}

func TestFormat_SaysAfterWhichFaultRequestsExpired(t *testing.T) {
	at := time.Date(2026, 12, 7, 6, 0, 0, 0, time.UTC)
	r := Result{
		Faults: []Fault{{Kind: FaultNATS, At: at, Detail: "the server stopped and started again"}},
		Audit: Audit{Published: 100, Served: 90, Buried: map[string]int{"expired": 10},
			ExpiredAfter: map[int]int{-1: 3, 0: 7}},
	}
	out := Format(r, Config{})
	require.Contains(t, out, "    3  before any fault\n")
	require.Contains(t, out, "    7  after 06:00:00 "+FaultNATS+" (the server stopped and started again)\n")
}
