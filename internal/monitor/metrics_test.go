package monitor_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	dto "github.com/prometheus/client_model/go"

	"github.com/ratefleet/ratefleet/internal/monitor"
	"github.com/ratefleet/ratefleet/internal/stats"
)

// scrape serves m and parses one scrape of /metrics.
func scrape(t *testing.T, m *monitor.Metrics) map[string]*dto.MetricFamily {
	t.Helper()
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	require.NoError(t, err)
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	require.NoError(t, err)
	return fams
}

// value returns the value of the series of fam whose labels are all of want.
func value(t *testing.T, fams map[string]*dto.MetricFamily, fam string, want ...string) float64 {
	t.Helper()
	f, ok := fams[fam]
	require.True(t, ok, "no family %s", fam)
next:
	for _, m := range f.GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		for i := 0; i < len(want); i += 2 {
			if got[want[i]] != want[i+1] {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue()
		case m.Gauge != nil:
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no series %s%v", fam, want)
	return 0
}

func TestMetrics_ParseAndEqualTheReports(t *testing.T) {
	c := connect(t)
	t0 := time.Now()
	col := monitor.New(c.JS, c.Streams, slog.New(slog.DiscardHandler), nil)
	var want uint64
	for i, id := range []string{"a", "b"} {
		r := stats.NewRecorder(id, "h", i, t0)
		r.Key("key1", func(k *stats.KeyReport) { k.Held, k.Answers, k.BusyAnswers = true, 40, 10 })
		for v := range 50 * (i + 1) {
			r.Sent("key1")
			r.Count("key1", stats.ResultOK)
			r.Latency(time.Duration(v*7%400+1) * time.Millisecond)
			want++
		}
		r.Count("key1", stats.ResultRateLimited)
		r.Count("key1", stats.ResultMaxDeliveries)
		rep, err := r.Report(t0)
		require.NoError(t, err)
		col.Add(rep)
	}
	m := monitor.NewMetrics()
	m.Set(col.Snapshot(context.Background()))
	fams := scrape(t, m)

	require.Equal(t, float64(want), value(t, fams, "ratefleet_attempts_total", "key", "key1", "result", "ok"))
	require.Equal(t, float64(2), value(t, fams, "ratefleet_attempts_total", "key", "key1", "result", "rate_limited"))
	require.Equal(t, float64(0), value(t, fams, "ratefleet_attempts_total", "key", "key1", "result", "timeout"))
	require.Equal(t, 0.25, value(t, fams, "ratefleet_key_busy_ratio", "key", "key1"), "10 of its holder's 40 answers on a busy machine")
	require.Equal(t, float64(2), value(t, fams, "ratefleet_requests_buried_total", "reason", "max_deliveries"),
		"an outcome is its own counter, not an attempt result")
	for _, mt := range fams["ratefleet_attempts_total"].GetMetric() {
		for _, l := range mt.GetLabel() {
			require.NotEqual(t, "buried", l.GetValue())
		}
	}
	h := fams["ratefleet_request_latency_seconds"].GetMetric()[0].GetHistogram()
	require.Equal(t, want, h.GetSampleCount())
	last := h.GetBucket()[len(h.GetBucket())-1]
	require.Equal(t, want, last.GetCumulativeCount(), "every sample under the largest bucket")
}

// TestMetrics_EverySeriesFromTheStartAndTheLinterFindsNothing shows that the
// keys the fleet knows only from key state (no report yet) have every series
// at 0 (attempts by result, state, lifetime 429s), that a quarantined key shows
// as such, that the graveyard has a series per reason, that the build and
// process are exposed, and that the client library's linter finds no problem
// in the exposition. Before the first snapshot only the build information and
// the process are exposed.
func TestMetrics_EverySeriesFromTheStartAndTheLinterFindsNothing(t *testing.T) {
	c := connect(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	kv, err := c.JS.KeyValue(ctx, c.Streams.KV.KeyState.Bucket)
	require.NoError(t, err)
	_, err = kv.Put(ctx, "key1", []byte(`{"nonce":5,"count_429":3,"unusable":true,"quarantined":true,"reason":"ban guard"}`))
	require.NoError(t, err)
	_, err = kv.Put(ctx, "key2", []byte(`{"nonce":7}`))
	require.NoError(t, err)

	m := monitor.NewMetrics()
	fams := scrape(t, m)
	require.Equal(t, float64(1), value(t, fams, "ratefleet_build_info"))
	require.NotContains(t, fams, "ratefleet_attempts_total", "no counter before the first snapshot")
	require.Contains(t, fams, "process_cpu_seconds_total")
	require.Contains(t, fams, "go_goroutines")

	col := monitor.New(c.JS, c.Streams, slog.New(slog.DiscardHandler), nil)
	go func() { _ = col.Run(ctx) }()
	require.Eventually(t, func() bool { return len(col.Snapshot(ctx).Keys) == 2 }, 10*time.Second, 10*time.Millisecond)
	m.Set(col.Snapshot(ctx))

	problems, err := testutil.CollectAndLint(m)
	require.NoError(t, err)
	require.Empty(t, problems, "promlint")

	fams = scrape(t, m)
	for _, key := range []string{"key1", "key2"} {
		for _, r := range stats.AttemptResults() {
			require.Equal(t, float64(0), value(t, fams, "ratefleet_attempts_total", "key", key, "result", r))
		}
		require.Equal(t, float64(0), value(t, fams, "ratefleet_key_state", "key", key, "state", "held"))
		require.Equal(t, float64(0), value(t, fams, "ratefleet_key_busy_ratio", "key", key))
	}
	require.Equal(t, float64(1), value(t, fams, "ratefleet_key_state", "key", "key1", "state", "quarantined"))
	require.Equal(t, float64(1), value(t, fams, "ratefleet_key_state", "key", "key2", "state", "free"))
	require.Equal(t, float64(3), value(t, fams, "ratefleet_key_rate_limited_lifetime", "key", "key1"))
	require.Equal(t, float64(1), value(t, fams, "ratefleet_keys", "state", "quarantined"))
	require.Equal(t, float64(0), value(t, fams, "ratefleet_keys", "state", "unusable"))
	for _, reason := range []string{"max_deliveries", "expired", "malformed", "key_unusable"} {
		require.Equal(t, float64(0), value(t, fams, "ratefleet_graveyard_messages", "reason", reason))
		require.Contains(t, fams, "ratefleet_requests_buried_total")
	}
	for name := range fams {
		require.False(t, strings.Contains(name, "per_second"), "%s: a rate is rate()'s job", name)
	}
	for _, mt := range fams["ratefleet_key_state"].GetMetric() {
		for _, l := range mt.GetLabel() {
			require.NotEqual(t, "holder", l.GetName(), "no series per holder")
		}
	}
}
