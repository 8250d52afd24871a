package worker_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/exchange"
	"github.com/ratefleet/ratefleet/internal/profile"
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
		FilterSubjects: []string{wire.ResultSubject(rs.Prefix(), wire.Anonymous, id)},
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
	}})
	startWorkers(t, env, 1, exchange.DefaultKeys()[:1])

	first := wire.New(time.Now(), time.Minute, []byte(`{"n":1}`))
	data, err := first.Encode()
	require.NoError(t, err)
	publish(t, env, data, first.ID)
	waitDrained(t, env, 10*time.Second)
	require.Eventually(t, func() bool { return len(resultsOf(t, env, first.ID)) == 1 }, 10*time.Second, 50*time.Millisecond)

	second := first
	second.Created, second.Payload = time.Now(), []byte(`{"n":2}`)
	data, err = second.Encode()
	require.NoError(t, err)
	// Its first delivery fails (the upstream errs before doing anything), so
	// its second looks for an earlier result, and finds only the old request's.
	require.NoError(t, env.Exchange.SetFaults(exchange.Faults{ErrorRate: 1}))
	// Stored once past the duplicate window: the server forgets an id on a
	// timer of its own, which a loaded machine runs late.
	require.Eventually(t, func() bool {
		msg := nats.NewMsg(env.Conn.Streams.Requests.Stream.Subjects[0])
		msg.Data = data
		ack, err := env.Conn.JS.PublishMsg(context.Background(), msg, jetstream.WithMsgID(second.ID))
		return err == nil && !ack.Duplicate
	}, 10*time.Second, 50*time.Millisecond, "the id is forgotten past the duplicate window")
	require.Eventually(t, func() bool { return env.Exchange.Stats().Faults >= 1 }, 10*time.Second, 10*time.Millisecond)
	require.NoError(t, env.Exchange.SetFaults(exchange.Faults{}))
	waitDrained(t, env, 10*time.Second)
	require.Eventually(t, func() bool { return len(resultsOf(t, env, first.ID)) == 2 }, 10*time.Second, 50*time.Millisecond)
	rs := resultsOf(t, env, first.ID)
	require.Len(t, rs, 2)
	require.NotEqual(t, rs[0].Seq, rs[1].Seq, "each result names its own stored request")
	require.Equal(t, wire.Served, rs[1].Outcome)
	require.Equal(t, uint64(2), env.Exchange.Stats().OK, "the second request was sent")
}

// An upstream down for a while (every request answered 503 at once) buries
// nothing whose time to live allows the wait: failed attempts are tried again,
// further and further apart, until it is back. Five deliveries a second apart,
// as before, buried everything queued.
func TestWorkers_AnOutageShorterThanTheTimeToLiveBuriesNothing(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Exchange: fastExchange()})
	require.NoError(t, env.Exchange.SetFaults(exchange.Faults{DownFor: 3 * time.Second}))
	ids := publishRequests(t, env, 30, time.Minute)
	// Scaled down: 50 deliveries at most 200 ms apart wait 8 s or more, as
	// the defaults' wait over five minutes (profile.TestRetry_TheDefaults...).
	startWorkersRetrying(t, env, 1, 1, &profile.Retry{First: 10 * time.Millisecond, MaxDelay: 200 * time.Millisecond}, exchange.DefaultKeys()[:1])
	waitDrained(t, env, 30*time.Second)

	require.Empty(t, graveyardEntries(t, env), "nothing buried")
	answered := answeredIDs(env)
	require.ElementsMatch(t, ids, answered, "every request served once it was back")
	require.Positive(t, env.Exchange.Stats().Faults, "the outage was seen")
	for _, k := range env.Exchange.Stats().Keys {
		require.Zero(t, k.RateLimited)
	}
}

// The profile's retry budget ends a request's retries: after max_attempts
// deliveries, or once the next try would fall past max_time, it is buried with
// every attempt and the budget it spent.
func TestWorkers_TheProfilesRetryBudgetBuries(t *testing.T) {
	tests := []struct {
		name  string
		retry profile.Retry
		sends uint64
		spent string
	}{
		{"max attempts", profile.Retry{First: 10 * time.Millisecond, MaxAttempts: 3}, 3, "retry.max_attempts 3"},
		{"max time", profile.Retry{First: 100 * time.Millisecond, Factor: 1, Jitter: -1, MaxTime: 250 * time.Millisecond}, 0, "retry.max_time"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := testenv.Start(t, testenv.Options{Exchange: fastExchange()})
			require.NoError(t, env.Exchange.SetFaults(exchange.Faults{ErrorRate: 1}))
			ids := publishRequests(t, env, 1, time.Minute)
			startWorkersRetrying(t, env, 1, 1, &tt.retry, exchange.DefaultKeys()[:1])
			waitDrained(t, env, 30*time.Second)
			es := graveyardEntries(t, env)
			require.Len(t, es, 1)
			require.Equal(t, ids[0], es[0].RequestID)
			require.Equal(t, wire.ReasonMaxDeliveries, es[0].Reason)
			require.Contains(t, es[0].Error, tt.spent)
			if tt.sends > 0 {
				require.Equal(t, tt.sends, env.Exchange.Stats().Faults)
				require.Len(t, es[0].Attempts, int(tt.sends))
			} else {
				require.Less(t, env.Exchange.Stats().Faults, uint64(5), "stopped at its time, not its deliveries")
			}
		})
	}
}

// A request's results setting decides where its served result goes: kept and
// sent (the default), only sent, or neither; each is served once all the same.
func TestWorkers_AServedResultGoesWhereTheRequestSays(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Exchange: fastExchange()})
	replies, err := env.Conn.NC.SubscribeSync(env.Conn.Streams.Results.ReplyPrefix + ">")
	require.NoError(t, err)
	require.NoError(t, env.Conn.NC.Flush())
	modes := map[string]wire.Results{"keep": "", "keep-named": wire.ResultsKeep, "reply": wire.ResultsReply, "none": wire.ResultsNone}
	ids := map[string]string{} // id → mode name
	for name, mode := range modes {
		r := wire.New(time.Now(), time.Minute, nil)
		r.Results = mode
		data, err := r.Encode()
		require.NoError(t, err)
		publish(t, env, data, r.ID)
		ids[r.ID] = name
	}
	startWorkers(t, env, 1, exchange.DefaultKeys()[:1])
	waitDrained(t, env, 10*time.Second)

	replied := map[string]bool{}
	for {
		m, err := replies.NextMsg(time.Second)
		if err != nil {
			break
		}
		res, err := wire.DecodeResult(m.Data)
		require.NoError(t, err)
		replied[ids[res.ID]] = true
	}
	require.Equal(t, map[string]bool{"keep": true, "keep-named": true, "reply": true}, replied, "sent unless none")
	for id, name := range ids {
		kept := len(resultsOf(t, env, id))
		if name == "keep" || name == "keep-named" {
			require.Equal(t, 1, kept, "%s: kept", name)
		} else {
			require.Zero(t, kept, "%s: not kept", name)
		}
	}
	require.Len(t, env.Exchange.IDCounts(), len(modes), "every request served once")
	require.Zero(t, env.Exchange.Stats().Duplicates)
}
