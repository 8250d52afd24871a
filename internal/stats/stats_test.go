package stats_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/stats"
)

func TestRecorder_ReportRoundTripsThroughJSON(t *testing.T) {
	t0 := time.Unix(100, 0).UTC()
	r := stats.NewRecorder("w1", "host", 42, t0)
	r.Key("key1", func(k *stats.KeyReport) { k.Held, k.Fingerprint = true, "abc123" })
	r.Sent("key1")
	r.Sent("key1")
	r.Count("key1", stats.ResultOK)
	r.Count("key1", stats.ResultRateLimited)
	r.Count("", stats.ResultMalformed)
	for _, ms := range []int{10, 20, 30, 40, 1000} {
		r.Latency(time.Duration(ms) * time.Millisecond)
	}
	r.InFlight(3)
	r.InFlight(-1)

	rep, err := r.Report(t0.Add(time.Second))
	require.NoError(t, err)
	b, err := json.Marshal(rep)
	require.NoError(t, err)
	var got stats.Report
	require.NoError(t, json.Unmarshal(b, &got))

	require.Equal(t, uint64(1), got.Seq)
	require.Equal(t, 2, got.InFlight)
	require.Equal(t, map[string]uint64{"ok": 1, "rate_limited": 1, "malformed": 1}, got.Results)
	require.Len(t, got.Keys, 1)
	require.Equal(t, stats.KeyReport{Name: "key1", Fingerprint: "abc123", Held: true, Sent: 2, OK: 1, RateLimited: 1,
		Results: map[string]uint64{"ok": 1, "rate_limited": 1}}, got.Keys[0], "each key counts its attempts by result")
	h, err := got.DecodeLatency()
	require.NoError(t, err)
	require.Equal(t, int64(5), h.TotalCount())
	require.Equal(t, int64(30), h.ValueAtQuantile(50))
	require.InDelta(t, 1000, h.Max(), 1)

	rep2, err := r.Report(t0.Add(2 * time.Second))
	require.NoError(t, err)
	require.Equal(t, uint64(2), rep2.Seq, "reports are numbered")
}
