package producer_test

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/producer"
	"github.com/ratefleet/ratefleet/internal/streams"
)

// Edge 5: a request whose ack was lost is stored; a retry after the stream's
// duplicate window would store it again. The producer stops retrying such a
// request before the window ends and reports it unconfirmed: stored once.
func TestRun_NoRetryOutlivesTheDuplicateWindowAfterALostAck(t *testing.T) {
	const window = time.Second
	c := startNATS(t, func(cfg *streams.Config) { cfg.Requests.Stream.DuplicateWindow = window })
	ctx := context.Background()
	// Between the producer and the stream: the first attempt is stored and its
	// ack lost; later ones reach the stream and their acks come back.
	var first atomic.Bool
	sub, err := c.NC.Subscribe("lossy", func(m *nats.Msg) {
		fwd := &nats.Msg{Subject: c.Streams.Requests.Stream.Subjects[0], Data: m.Data, Header: m.Header}
		if first.CompareAndSwap(false, true) {
			_, _ = c.JS.PublishMsg(ctx, fwd)
			return
		}
		if ack, err := c.NC.RequestMsg(fwd, 5*time.Second); err == nil {
			_ = m.Respond(ack.Data)
		}
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })

	var logs syncBuffer
	cfg := testConfig()
	cfg.AckTimeout = 1500 * time.Millisecond // the retry leaves after the window
	cfg.DuplicateWindow = window
	p, err := producer.New(c.NC, "lossy", cfg, slog.New(slog.NewTextHandler(&logs, nil)))
	require.NoError(t, err)
	sum, err := p.Run(ctx, burst(t, 1))
	require.ErrorIs(t, err, producer.ErrNotStored)
	require.Equal(t, int64(1), sum.Unconfirmed)
	require.Len(t, storedIDs(t, c), 1, "stored once")
	require.True(t, strings.Contains(logs.String(), producer.ErrDedupeWindowPassed.Error()), logs.String())
}
