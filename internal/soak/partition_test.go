package soak

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/fleet"
)

func TestFormatPartition_CountsEveryIDAndNamesWhatFailed(t *testing.T) {
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	faults := []Fault{
		{Kind: FaultLeader, At: at, End: at.Add(12 * time.Second), Detail: "node 2 cut off"},
		{Kind: FaultFlap, At: at.Add(30 * time.Second), End: at.Add(50 * time.Second), Detail: "link 1-3"},
		{Kind: FaultFlap, At: at.Add(60 * time.Second), End: at.Add(70 * time.Second), Detail: "link 2-3"},
	}
	tests := []struct {
		name    string
		res     PartitionResult
		want    []string
		notWant []string
	}{
		{
			name: "every id accounted for",
			res: PartitionResult{Result: Result{Faults: faults, Audit: Audit{
				Published: 100, Unacked: 2, Served: 90, Queued: 1,
				Buried:          map[string]int{"expired": 10, "max_deliveries": 1},
				ServedAndBuried: map[string]int{"expired on redelivery": 3},
				Twice:           []Repeat{{ID: "a", Cause: "leader isolated at 10:00:00 (node 2 cut off)"}},
				ExpiredAfter:    map[int]int{-1: 4, 1: 6},
			}}},
			want: []string{
				"| ids published (acknowledged to a producer) | 100 |",
				"| buried: expired | 10 |",
				"| buried: max_deliveries | 1 |",
				"| of the buried, done upstream first: expired on redelivery | 3 |",
				"| of the buried, expired before any fault | 4 |",
				"| of the buried, expired after 10:00:30 " + FaultFlap + " (link 1-3) | 6 |",
				"| **lost** | 0 |",
				"| 102 = 90 + 11 + 1 + 0 |",
				"| **429s drawn** | 0 |",
				"| answered 200 more than once | 1 |",
				"explained by leader isolated at 10:00:00 (node 2 cut off) | 1 |",
				"| faults injected: leader isolated | 1 |",
				"| faults injected: flapping link | 2 |",
				"| faults injected: delayed link | 0 |",
			},
			notWant: []string{"LOST", "UNEXPLAINED", "no fault"},
		},
		{
			name: "a lost id, a 429 and a repeat nothing explains",
			res: PartitionResult{
				Result: Result{Faults: faults, Audit: Audit{
					Published: 3, Served: 2, Lost: []string{"gone"},
					Twice: []Repeat{{ID: "twice", Times: []time.Time{at, at.Add(time.Second)}}},
				}},
				Exchange: fleet.ExchangeTotals{RateLimited: 1},
			},
			want: []string{
				"| **lost** | 1 |",
				"| **429s drawn** | 1 |",
				"**explained by no fault** | 1 |",
				"LOST gone",
				"UNEXPLAINED REPEAT twice done at 10:00:00.000, 10:00:01.000",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := FormatPartition(tt.res, Config{Workers: 6, Duration: time.Minute, TTL: 10 * time.Second, Seed: 9})
			require.Contains(t, out, "(seed 9)")
			for _, w := range tt.want {
				require.Contains(t, out, w)
			}
			for _, w := range tt.notWant {
				require.NotContains(t, out, w)
			}
			table := 0
			for _, line := range strings.Split(out, "\n") {
				if strings.HasPrefix(line, "|") {
					table++
				}
			}
			require.Greater(t, table, 10, "one Markdown table")
		})
	}
}
