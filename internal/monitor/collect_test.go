package monitor_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/embedded"
	"github.com/ratefleet/ratefleet/internal/monitor"
	"github.com/ratefleet/ratefleet/internal/natsconn"
	"github.com/ratefleet/ratefleet/internal/stats"
	"github.com/ratefleet/ratefleet/internal/testenv"
)

func connect(t *testing.T) *natsconn.Conn {
	t.Helper()
	s, err := embedded.Start(embedded.Options{})
	require.NoError(t, err)
	t.Cleanup(s.Shutdown)
	c, err := natsconn.Open(context.Background(), natsconn.Options{URL: s.ClientURL(), Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	t.Cleanup(c.NC.Close)
	return c
}

func publishReport(t *testing.T, c *natsconn.Conn, rec *stats.Recorder, at time.Time, stopped bool) stats.Report {
	t.Helper()
	rep, err := rec.Report(at)
	require.NoError(t, err)
	rep.Stopped = stopped
	data, err := json.Marshal(rep)
	require.NoError(t, err)
	_, err = c.JS.Publish(context.Background(), stats.Subject(rep.Worker), data)
	require.NoError(t, err)
	return rep
}

func TestCollector_StartedLateSeesEveryWorkersLastCounts(t *testing.T) {
	c := connect(t)
	t0 := time.Unix(1000, 0)
	all := stats.NewLatencyHistogram()
	recs := map[string]*stats.Recorder{}
	for i, id := range []string{"a", "b", "c"} {
		r := stats.NewRecorder(id, "h", i, t0)
		r.Key("key1", func(k *stats.KeyReport) { k.Held = id == "a" })
		for v := range 100 * (i + 1) {
			ms := int64(v*(i+3)%700 + 1)
			r.Latency(time.Duration(ms) * time.Millisecond)
			r.Count("key1", stats.ResultOK)
			require.NoError(t, all.RecordValue(ms))
		}
		recs[id] = r
		publishReport(t, c, r, t0, id == "c")
	}
	// A later report of b replaces its earlier one; c stops and keeps its counts.
	recs["b"].Count("key1", stats.ResultServerError)
	publishReport(t, c, recs["b"], t0.Add(time.Second), false)

	clk := testenv.NewClock(t0.Add(2 * time.Second))
	col := monitor.New(c.JS, c.Streams, slog.New(slog.DiscardHandler), clk.Now)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = col.Run(ctx) }()

	var s monitor.Snapshot
	require.Eventually(t, func() bool {
		s = col.Snapshot(ctx)
		return s.Successful == 600 && s.Results["server_error"] == 1
	}, 10*time.Second, 20*time.Millisecond)
	require.Equal(t, all.ValueAtQuantile(50), s.LatencyP50, "percentiles of the merged histograms")
	require.Equal(t, all.ValueAtQuantile(99), s.LatencyP99)
	require.Len(t, s.Workers, 3)
	require.Equal(t, uint64(600), s.Keys[0].OK)

	var text strings.Builder
	require.NoError(t, monitor.WriteText(&text, s))
	require.Regexp(t, `total successful: +600\n`, text.String())
	require.Regexp(t, `workers: +1 active +1 standing by +1 stopped or silent\n`, text.String())
}

func TestSampler_ThroughputWindowsFromTotalsWhateverTheReadersDo(t *testing.T) {
	for _, reads := range []int{0, 1, 7} {
		t.Run(fmt.Sprintf("%d snapshots read between samples", reads), func(t *testing.T) {
			c := connect(t)
			t0 := time.Unix(1000, 0)
			clk := testenv.NewClock(t0)
			col := monitor.New(c.JS, c.Streams, slog.New(slog.DiscardHandler), clk.Now)
			smp := monitor.NewSampler(col, time.Second)
			rec := stats.NewRecorder("w", "h", 1, t0)
			ctx := context.Background()
			// 100 a second for 10 s, then 50 a second for 10 s; a sample a second.
			for sec := 0; sec <= 20; sec++ {
				rep, err := rec.Report(clk.Now())
				require.NoError(t, err)
				col.Add(rep)
				for range reads {
					clk.Add(time.Millisecond)
					require.Zero(t, col.Snapshot(ctx).Rate5s, "a snapshot has no rates: the sampler's are its own")
				}
				s := smp.Sample(ctx)
				if sec == 20 {
					require.InDelta(t, 50, s.Rate5s, 0.1)
					require.InDelta(t, 75, s.Rate1m, 0.1)
					require.InDelta(t, 75, s.RateAll, 0.1)
					require.Len(t, smp.History(), 21)
					latest, ok := smp.Latest()
					require.True(t, ok)
					require.Equal(t, s.Successful, latest.Successful)
				}
				n := 100
				if sec >= 10 {
					n = 50
				}
				for range n {
					rec.Count("", stats.ResultOK)
				}
				clk.Add(time.Second - time.Duration(reads)*time.Millisecond)
			}
		})
	}
}

func TestCollector_GraveyardByReason(t *testing.T) {
	c := connect(t)
	ctx := context.Background()
	for _, reason := range []string{"expired", "expired", "malformed"} {
		_, err := c.JS.Publish(ctx, "ratefleet.graveyard."+reason, []byte(`{}`))
		require.NoError(t, err)
	}
	col := monitor.New(c.JS, c.Streams, slog.New(slog.DiscardHandler), nil)
	s := col.Snapshot(ctx)
	require.Equal(t, uint64(3), s.Failed)
	require.Equal(t, map[string]uint64{"expired": 2, "malformed": 1}, s.Queue.ByReason)
}

func TestCollector_ForgetsADepartedWorkerButKeepsItsCountsAndLatency(t *testing.T) {
	c := connect(t)
	t0 := time.Unix(1000, 0)
	clk := testenv.NewClock(t0)
	col := monitor.New(c.JS, c.Streams, slog.New(slog.DiscardHandler), clk.Now)
	col.ForgetAfter = time.Minute
	ctx := context.Background()
	all := stats.NewLatencyHistogram()
	gone := stats.NewRecorder("gone", "h", 1, t0)
	live := stats.NewRecorder("live", "h", 2, t0)
	gone.Key("key1", func(*stats.KeyReport) {})
	live.Key("key1", func(*stats.KeyReport) {})
	for i := range 50 {
		for _, r := range []*stats.Recorder{gone, live} {
			ms := int64(i*7%300 + 1)
			r.Count("key1", stats.ResultOK)
			r.Latency(time.Duration(ms) * time.Millisecond)
			require.NoError(t, all.RecordValue(ms))
		}
		// Every report replaces the worker's last: the merged histogram follows.
		for _, r := range []*stats.Recorder{gone, live} {
			rep, err := r.Report(clk.Now())
			require.NoError(t, err)
			col.Add(rep)
		}
		clk.Add(10 * time.Millisecond)
	}
	clk.Add(2 * time.Minute) // "gone" sends nothing more; "live" goes on
	rep, err := live.Report(clk.Now())
	require.NoError(t, err)
	col.Add(rep)

	s := col.Snapshot(ctx)
	require.Len(t, s.Workers, 1, "the departed worker is forgotten")
	require.Equal(t, "live", s.Workers[0].ID)
	require.Equal(t, uint64(100), s.Successful, "its counts stay in the totals")
	require.Equal(t, uint64(100), s.Keys[0].OK)
	require.Equal(t, all.TotalCount(), s.Latency.TotalCount())
	require.Equal(t, all.ValueAtQuantile(99), s.LatencyP99, "and its latencies in the percentiles")

	// Its last report, read again (a monitor's consumer restarting), is not counted twice.
	old, err := gone.Report(t0)
	require.NoError(t, err)
	col.Add(old)
	require.Equal(t, uint64(100), col.Snapshot(ctx).Successful)
}

func TestCollector_ReadsKeyStateFromItsWatch(t *testing.T) {
	c := connect(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	kv, err := c.JS.KeyValue(ctx, c.Streams.KV.KeyState.Bucket)
	require.NoError(t, err)
	_, err = kv.Put(ctx, "key1", []byte(`{"nonce":5,"count_429":3,"unusable":true,"quarantined":true,"reason":"ban guard"}`))
	require.NoError(t, err)
	_, err = kv.Put(ctx, "key2", []byte(`{"nonce":9223372036854775807}`))
	require.NoError(t, err)
	col := monitor.New(c.JS, c.Streams, slog.New(slog.DiscardHandler), nil)
	go func() { _ = col.Run(ctx) }()
	require.Eventually(t, func() bool { return len(col.Snapshot(ctx).Keys) == 2 }, 10*time.Second, 10*time.Millisecond)
	s := col.Snapshot(ctx)
	require.True(t, s.Keys[0].Quarantined)
	require.Equal(t, 3, s.Keys[0].Count429Lifetime)
	require.True(t, s.Keys[1].Unusable, "a record no worker trusts shows as unusable")
	require.Contains(t, s.Keys[1].Reason, "nonce mark")
}
