package bench

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/streams"
	"github.com/ratefleet/ratefleet/internal/testenv"
	"github.com/ratefleet/ratefleet/wire"
)

func TestServeAlone_EndsEachRequestWithItsStoredResultAtTheRateGiven(t *testing.T) {
	c := testenv.NATS(t, func(cfg *streams.Config) { cfg.Requests.Consumer.Priorities = false })
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	const n = 60
	var ids []string
	for range n {
		r := wire.New(time.Now(), time.Minute, json.RawMessage(`{"pair":"XBTEUR"}`))
		data, err := r.Encode()
		require.NoError(t, err)
		_, err = c.JS.Publish(ctx, r.Subject(c.Streams.Requests.Subject()), data)
		require.NoError(t, err)
		ids = append(ids, r.ID)
	}

	const perSecond = 500 // 5 every 10 ms
	var served atomic.Uint64
	sctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- serveAlone(sctx, c, perSecond, &served) }()
	require.Eventually(t, func() bool { return served.Load() == n }, 30*time.Second, 5*time.Millisecond)
	elapsed := time.Since(start)
	stop()
	require.ErrorIs(t, <-done, context.Canceled)
	// A tick comes at most every 10 ms, each owing perSecond / 100 more.
	require.LessOrEqual(t, float64(n), elapsed.Seconds()*perSecond, "served faster than the rate given")

	results, err := c.JS.Stream(ctx, c.Streams.Results.Stream.Name)
	require.NoError(t, err)
	for _, id := range ids {
		m, err := results.GetLastMsgForSubject(ctx, wire.ResultSubject(c.Streams.Results.Prefix(), wire.Anonymous, id))
		require.NoError(t, err, "the result of %s", id)
		res, err := wire.DecodeResult(m.Data)
		require.NoError(t, err)
		require.Equal(t, id, res.ID)
		require.Equal(t, wire.Served, res.Outcome)
	}
	require.Eventually(t, func() bool {
		st, err := c.JS.Stream(ctx, c.Streams.Requests.Stream.Name)
		return err == nil && st.CachedInfo().State.Msgs == 0
	}, 10*time.Second, 20*time.Millisecond, "every request acknowledged")
}

func TestFormatCPU_NATSAloneAfterTheCells(t *testing.T) {
	alone := AloneRow{Keys: 100, Window: 10 * time.Second, Served: 19_000, NATS: 2500 * time.Millisecond,
		Producer: time.Second, Client: 1500 * time.Millisecond, BoxBusy: 0.25}
	out := FormatCPU(CPUResult{Alone: []AloneRow{alone}}, CPUConfig{Duration: 10 * time.Second})
	// 2.5 s of NATS's CPU over 19,000 requests = 0.132 ms.
	require.Contains(t, out, "| 100 | 1900.0 | 0.132 | 0.053 | 0.079 | 25% |")
	require.Zero(t, AloneRow{}.PerRequest(time.Second), "no request served")
}
