package monitor_test

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/monitor"
)

// sample is a snapshot with a long holder, a quarantined key and graveyard
// entries of two reasons.
func sample() monitor.Snapshot {
	at := time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC)
	return monitor.Snapshot{
		At: at, Elapsed: 90 * time.Second, Successful: 1234, Failed: 3, Rate5s: 95.2, Rate1m: 94.1, RateAll: 90,
		Results: map[string]uint64{"ok": 1234, "rate_limited": 1},
		Queue:   monitor.Queue{Waiting: 12, Redelivery: 2, Graveyard: 3, ByReason: map[string]uint64{"expired": 2, "max_deliveries": 1}},
		Keys: []monitor.Key{
			{Name: "key1", State: monitor.KeyHeld, Holder: "build-host-12345-1a2b3c4d-long", Since: at.Add(-time.Minute), Sent: 600, OK: 599, MaxDelayMs: 50, BusyShare: 0.314, NextFree: at.Add(12 * time.Millisecond)},
			{Name: "key22", State: monitor.KeyQuarantined, Sent: 7, OK: 4, RateLimited: 3, Count429Lifetime: 3, Quarantined: true, Unusable: true, Reason: "ban guard: 3 429s"},
		},
	}
}

func TestWriteText_AlignedColumnsAndRetryNotDLQ(t *testing.T) {
	var b strings.Builder
	require.NoError(t, monitor.WriteText(&b, sample()))
	out := b.String()
	t.Log("\n" + out)
	require.NotContains(t, out, "DLQ")
	require.NotContains(t, out, "map[")
	require.Contains(t, out, "retry 2")
	require.Regexp(t, `graveyard by reason: +expired 2 +max_deliveries 1`, out)
	require.Contains(t, out, "build-host-12345-1a2b3c4d-long", "a long holder is shown whole")
	require.Regexp(t, `busy %`, out)
	require.Regexp(t, `key1 +held .* 50 +0 +31 +0 +12\n`, out, "L, lag, busy share in percent, evidence, free in")
	// Each column of the key table starts at the same offset on every row.
	var rows []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "key") && !strings.Contains(l, ": ") {
			rows = append(rows, l)
		}
	}
	require.Len(t, rows, 3)
	for _, col := range []string{"state", "holder", "sent"} {
		i := strings.Index(rows[0], col)
		for _, r := range rows[1:] {
			require.NotEqual(t, ' ', r[i], "column %s starts at %d in %q", col, i, r)
			require.Equal(t, byte(' '), r[i-1], "column %s starts at %d in %q", col, i, r)
		}
	}
}

func TestSnapshotJSON_SnakeCaseWithUnits(t *testing.T) {
	b, err := json.Marshal(sample())
	require.NoError(t, err)
	var v map[string]any
	require.NoError(t, json.Unmarshal(b, &v))
	require.InDelta(t, 90, v["elapsed_seconds"], 1e-9)
	require.InDelta(t, 95.2, v["rate_5s_per_second"], 1e-9)
	require.Contains(t, v, "latency_p99_ms")
	require.Contains(t, v["queue"], "retry")
	snake := regexp.MustCompile(`^[a-z0-9]+(_[a-z0-9]+)*$`)
	var walk func(any)
	walk = func(x any) {
		switch x := x.(type) {
		case map[string]any:
			for k, e := range x {
				if k == "results" || k == "graveyard_by_reason" {
					continue // keyed by result or reason names
				}
				require.Regexp(t, snake, k)
				walk(e)
			}
		case []any:
			for _, e := range x {
				walk(e)
			}
		}
	}
	walk(v)
}

func TestWriteText_PrintsNoControlCharacterFromNATS(t *testing.T) {
	s := sample()
	s.Keys[0].Holder = "w1\x1b[2J"
	s.Keys[1].Name, s.Keys[1].Reason = "key\x1b]0;x\x07", "ban\x1b[31m\nforged"
	s.Queue.ByReason["odd\x7f"] = 1
	s.Queue.Err = "nats: \u009b2J"
	var b strings.Builder
	require.NoError(t, monitor.WriteText(&b, s))
	out := b.String()
	require.False(t, strings.ContainsFunc(out, func(r rune) bool { return r == 0x1b || r == 0x07 || r == 0x7f || r == 0x9b }), "%q", out)
	require.Contains(t, out, `w1\x1b[2J`)
	require.NotContains(t, out, "\nforged")
}
