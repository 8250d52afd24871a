package monitor_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/monitor"
	"github.com/ratefleet/ratefleet/internal/stats"
)

func TestMetrics_ParseAndEqualTheReports(t *testing.T) {
	c := connect(t)
	t0 := time.Now()
	col := monitor.New(c.JS, c.Streams, slog.New(slog.DiscardHandler), nil)
	var want uint64
	for i, id := range []string{"a", "b"} {
		r := stats.NewRecorder(id, "h", i, t0)
		r.Key("key1", func(k *stats.KeyReport) { k.Held = true })
		for v := range 50 * (i + 1) {
			r.Sent("key1")
			r.Count("key1", stats.ResultOK)
			r.Latency(time.Duration(v*7%400+1) * time.Millisecond)
			want++
		}
		r.Count("key1", stats.ResultRateLimited)
		rep, err := r.Report(t0)
		require.NoError(t, err)
		col.Add(rep)
	}
	m := monitor.NewMetrics()
	m.Set(col.Snapshot(context.Background()))
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()

	resp, err := http.Get(srv.URL)
	require.NoError(t, err)
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	require.NoError(t, err)

	byResult := map[string]float64{}
	for _, mt := range fams["ratefleet_requests_total"].GetMetric() {
		byResult[mt.GetLabel()[0].GetValue()] = mt.GetCounter().GetValue()
	}
	require.Equal(t, float64(want), byResult["ok"])
	require.Equal(t, float64(2), byResult["rate_limited"])
	h := fams["ratefleet_request_latency_seconds"].GetMetric()[0].GetHistogram()
	require.Equal(t, want, h.GetSampleCount())
	last := h.GetBucket()[len(h.GetBucket())-1]
	require.Equal(t, want, last.GetCumulativeCount(), "every sample under the largest bucket")
	require.Equal(t, float64(want), fams["ratefleet_key_sent_total"].GetMetric()[0].GetCounter().GetValue())
}
