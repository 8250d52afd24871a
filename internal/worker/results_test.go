package worker_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/exchange"
	"github.com/ratefleet/ratefleet/internal/streams"
	"github.com/ratefleet/ratefleet/internal/testenv"
	"github.com/ratefleet/ratefleet/wire"
)

// results returns every result written under id, in order.
func resultsOf(t *testing.T, env *testenv.Env, id string) []wire.Result {
	t.Helper()
	ctx := context.Background()
	rs := env.Conn.Streams.Results
	cons, err := env.Conn.JS.OrderedConsumer(ctx, rs.Stream.Name, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{wire.ResultSubject(rs.Prefix(), id)},
	})
	require.NoError(t, err)
	var out []wire.Result
	for {
		msg, err := cons.Next(jetstream.FetchMaxWait(500 * time.Millisecond))
		if err != nil {
			return out
		}
		r, err := wire.DecodeResult(msg.Data())
		require.NoError(t, err)
		out = append(out, r)
	}
}

// A request that reuses the id of one that ended long ago (after the requests
// stream's duplicate window) is a request of its own: it is sent, and gets its
// own result, tied to its own stream sequence. Looked up by id alone, it was
// acknowledged unsent and its caller read the old answer.
func TestWorkers_AReusedIDIsSentAndGetsItsOwnResult(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Exchange: fastExchange(), Streams: func(c *streams.Config) {
		c.Requests.Stream.DuplicateWindow = 200 * time.Millisecond
		c.Requests.Consumer.RetryDelays = []time.Duration{10 * time.Millisecond}
	}})
	startWorkers(t, env, 1, exchange.DefaultKeys()[:1])

	first := wire.New(time.Now(), time.Minute, []byte(`{"n":1}`))
	data, err := first.Encode()
	require.NoError(t, err)
	publish(t, env, data, first.ID)
	waitDrained(t, env, 10*time.Second)
	require.Eventually(t, func() bool { return len(resultsOf(t, env, first.ID)) == 1 }, 10*time.Second, 50*time.Millisecond)
	time.Sleep(300 * time.Millisecond) // past the duplicate window

	second := first
	second.Created, second.Payload = time.Now(), []byte(`{"n":2}`)
	data, err = second.Encode()
	require.NoError(t, err)
	// Its first delivery fails (the upstream errs before doing anything), so
	// its second looks for an earlier result, and finds only the old request's.
	require.NoError(t, env.Exchange.SetFaults(exchange.Faults{ErrorRate: 1}))
	publish(t, env, data, second.ID)
	require.Eventually(t, func() bool { return env.Exchange.Stats().Faults >= 1 }, 10*time.Second, 10*time.Millisecond)
	require.NoError(t, env.Exchange.SetFaults(exchange.Faults{}))
	waitDrained(t, env, 10*time.Second)
	require.Eventually(t, func() bool { return len(resultsOf(t, env, first.ID)) == 2 }, 10*time.Second, 50*time.Millisecond)
	rs := resultsOf(t, env, first.ID)
	require.NotEqual(t, rs[0].Seq, rs[1].Seq, "each result names its own stored request")
	require.Equal(t, wire.Served, rs[1].Outcome)
	require.Equal(t, uint64(2), env.Exchange.Stats().OK, "the second request was sent")
}
