package worker_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/client"
	"github.com/ratefleet/ratefleet/internal/exchange"
	"github.com/ratefleet/ratefleet/internal/keys"
	"github.com/ratefleet/ratefleet/internal/streams"
	"github.com/ratefleet/ratefleet/internal/testenv"
	"github.com/ratefleet/ratefleet/internal/upstream"
	"github.com/ratefleet/ratefleet/internal/worker"
	"github.com/ratefleet/ratefleet/wire"
)

// routedKeys are the simulator's five keys, key1 and key2 labelled spot, key3
// and key4 in the account main.
func routedKeys() []keys.Key {
	ks := exchange.DefaultKeys()
	ks[0] = ks[0].WithGroups("", []string{"spot"})
	ks[1] = ks[1].WithGroups("", []string{"spot", "gpt4"})
	ks[2] = ks[2].WithGroups("main", nil)
	ks[3] = ks[3].WithGroups("main", nil)
	ks[4] = ks[4].WithGroups("solo", nil) // named by its own name only
	return ks
}

// routedEnv starts NATS with the consumers of ks's routes declared, as
// `streams apply --keys-file` does, and the simulator.
func routedEnv(t *testing.T, ks []keys.Key) *testenv.Env {
	t.Helper()
	return testenv.Start(t, testenv.Options{Exchange: fastExchange(), Streams: func(c *streams.Config) {
		c.Routes = keys.RoutesOf(ks)
	}})
}

// startRouted runs one worker holding every key of ks, each with at most
// inFlight requests at once, until the test ends.
func startRouted(t *testing.T, env *testenv.Env, ks []keys.Key, inFlight int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	factory, err := worker.NewPacerFactory("adaptive", fastLimiter())
	require.NoError(t, err)
	up, err := upstream.New(env.ExchangeURL, 2*time.Second, 32, nil)
	require.NoError(t, err)
	t.Cleanup(up.Close)
	w, err := worker.New(ctx, env.Conn.JS, worker.Config{
		ID: "w1", Keys: ks, MaxKeys: len(ks), MaxInFlight: inFlight, Upstream: up, Streams: env.Conn.Streams,
		NewPacer: factory, ClaimRetry: 100 * time.Millisecond, StatsInterval: 200 * time.Millisecond, Retry: fastRetry(),
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	require.NoError(t, err)
	wg.Go(func() { _ = w.Run(ctx) })
}

// submitAll submits the requests through the client and returns their ids.
func submitAll(t *testing.T, c *client.Client, rs ...client.Request) []string {
	t.Helper()
	var ids []string
	for _, r := range rs {
		if r.TTL == 0 {
			r.TTL = time.Minute
		}
		id, err := c.Submit(context.Background(), r)
		require.NoError(t, err)
		ids = append(ids, id)
	}
	return ids
}

// awaitAll waits for the result of each id.
func awaitAll(t *testing.T, c *client.Client, ids []string) map[string]wire.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out := map[string]wire.Result{}
	for _, id := range ids {
		r, err := c.Await(ctx, id)
		require.NoError(t, err, id)
		out[id] = r
	}
	return out
}

func times(n int, r client.Request) []client.Request {
	out := make([]client.Request, n)
	for i := range out {
		out[i] = r
	}
	return out
}

func TestWorkers_ARoutedRequestIsSentOnlyByAKeyThatMayServeIt(t *testing.T) {
	ks := routedKeys()
	env := routedEnv(t, ks)
	c, err := client.New(env.Conn.NC)
	require.NoError(t, err)
	spot := submitAll(t, c, times(30, client.Request{Label: "spot"})...)
	gpt4 := submitAll(t, c, times(10, client.Request{Label: "gpt4", Priority: client.Urgent})...)
	main := submitAll(t, c, times(10, client.Request{Account: "main"})...)
	key5 := submitAll(t, c, times(10, client.Request{Key: "key5", Priority: client.Urgent})...)
	anyKey := submitAll(t, c, times(30, client.Request{})...)
	nobody := submitAll(t, c, client.Request{Label: "gpu"}) // no key carries it
	startRouted(t, env, ks, 4)

	all := slices.Concat(spot, gpt4, main, key5, anyKey)
	got := awaitAll(t, c, all)
	for _, tc := range []struct {
		name string
		ids  []string
		may  []string
	}{
		{"label spot", spot, []string{"key1", "key2"}},
		{"label gpt4", gpt4, []string{"key2"}},
		{"account main", main, []string{"key3", "key4"}},
		{"key key5", key5, []string{"key5"}},
		{"any key", anyKey, []string{"key1", "key2", "key3", "key4", "key5"}},
	} {
		for _, id := range tc.ids {
			r := got[id]
			require.Equal(t, wire.Served, r.Outcome, "%s: %+v", tc.name, r)
			require.Contains(t, tc.may, r.Key, "%s: request %s sent by %s", tc.name, id, r.Key)
		}
	}
	// The simulator agrees: the labelled requests reached it only under the
	// labelled keys, and every request was answered once.
	answered := answeredIDs(env)
	sort.Strings(all)
	sort.Strings(answered)
	require.Equal(t, all, answered)
	require.Zero(t, env.Exchange.Stats().Duplicates)
	// Nothing lost: the request no key may serve is still queued, unsent.
	// (The others leave the queue as their acknowledgements, which the server
	// does not confirm, are processed.)
	require.Eventually(t, func() bool {
		st, err := env.Conn.JS.Stream(context.Background(), env.Conn.Streams.Requests.Stream.Name)
		return err == nil && st.CachedInfo().State.Msgs == 1
	}, 10*time.Second, 20*time.Millisecond, "the request labelled gpu waits for a key with the label")
	require.NotContains(t, answered, nobody[0])
}

// TestWorker_UrgentRequestsGoFirstAndBatchOnesEveryFourth queues batch
// requests, then urgent ones, for one key that takes one at a time: the key
// takes three urgent requests, then a batch one, while both wait, then the
// batch ones left.
func TestWorker_UrgentRequestsGoFirstAndBatchOnesEveryFourth(t *testing.T) {
	ks := exchange.DefaultKeys()[:1]
	env := routedEnv(t, ks)
	c, err := client.New(env.Conn.NC)
	require.NoError(t, err)
	batch := submitAll(t, c, times(12, client.Request{})...)
	urgent := submitAll(t, c, times(30, client.Request{Priority: client.Urgent})...)
	startRouted(t, env, ks, 1)

	got := awaitAll(t, c, slices.Concat(batch, urgent))
	type sent struct {
		at     time.Time
		urgent bool
	}
	var order []sent
	for id, r := range got {
		require.Equal(t, wire.Served, r.Outcome, "%+v", r)
		require.Equal(t, uint64(1), r.Delivery, "sent at its first delivery: the order is the take order")
		order = append(order, sent{r.At, slices.Contains(urgent, id)})
	}
	sort.Slice(order, func(i, j int) bool { return order[i].at.Before(order[j].at) })
	var seq strings.Builder
	for _, s := range order {
		if s.urgent {
			seq.WriteString("U")
		} else {
			seq.WriteString("B")
		}
	}
	require.Equal(t, strings.Repeat("UUUB", 10)+"BB", seq.String(),
		"urgent first; while both wait, one batch request in every %d", wire.BatchEvery)
}

func TestWorkers_ACancelledRequestIsNeverSentAndOnlyItsOwnerCancelsIt(t *testing.T) {
	ks := exchange.DefaultKeys()[:2]
	env := routedEnv(t, ks)
	ctx := context.Background()
	alice, err := client.New(env.Conn.NC, client.WithOwner("alice"))
	require.NoError(t, err)
	bob, err := client.New(env.Conn.NC, client.WithOwner("bob"))
	require.NoError(t, err)
	ids := submitAll(t, alice, times(20, client.Request{})...)
	cancelled := ids[:5]
	for _, id := range cancelled {
		res, err := alice.Cancel(ctx, id)
		require.NoError(t, err)
		require.Zero(t, res.Outcome, "still queued: nothing to report yet")
	}
	// Bob names alice's ids: his marks are his own requests', never hers.
	for _, id := range ids[5:10] {
		_, err := bob.Cancel(ctx, id)
		require.NoError(t, err)
	}
	startRouted(t, env, ks, 4)

	got := awaitAll(t, alice, ids)
	for _, id := range ids {
		r := got[id]
		if slices.Contains(cancelled, id) {
			require.Equal(t, wire.Buried, r.Outcome, "%+v", r)
			require.Equal(t, wire.ReasonCancelled, r.Reason)
			continue
		}
		require.Equal(t, wire.Served, r.Outcome, "%+v", r)
	}
	answered := answeredIDs(env)
	require.Len(t, answered, 15, "every request served but the cancelled ones")
	for _, id := range cancelled {
		require.NotContains(t, answered, id, "a cancelled request never reaches the upstream")
	}
	graves := graveyardEntries(t, env)
	require.Len(t, graves, 5)
	for _, e := range graves {
		require.Equal(t, wire.ReasonCancelled, e.Reason)
	}

	// A request that has ended is reported as it ended, not cancelled.
	res, err := alice.Cancel(ctx, ids[12])
	require.True(t, errors.Is(err, client.ErrEnded), "%v", err)
	require.Equal(t, wire.Served, res.Outcome)
	require.Contains(t, err.Error(), "served with status 200")
	res, err = alice.Cancel(ctx, ids[0])
	require.ErrorIs(t, err, client.ErrEnded)
	require.Equal(t, wire.ReasonCancelled, res.Reason)
}

// TestWorker_AKeyTakesItsQueuesOfOnePriorityInTurn queues batch requests for
// the key's label, then batch requests any key may send: the key alternates,
// so neither queue waits behind the other.
func TestWorker_AKeyTakesItsQueuesOfOnePriorityInTurn(t *testing.T) {
	ks := []keys.Key{exchange.DefaultKeys()[0].WithGroups("", []string{"spot"})}
	env := routedEnv(t, ks)
	c, err := client.New(env.Conn.NC)
	require.NoError(t, err)
	spot := submitAll(t, c, times(10, client.Request{Label: "spot"})...)
	anyKey := submitAll(t, c, times(10, client.Request{})...)
	startRouted(t, env, ks, 1)

	got := awaitAll(t, c, slices.Concat(spot, anyKey))
	ids := slices.Concat(spot, anyKey)
	sort.Slice(ids, func(i, j int) bool { return got[ids[i]].At.Before(got[ids[j]].At) })
	var seq strings.Builder
	for _, id := range ids {
		require.Equal(t, uint64(1), got[id].Delivery)
		if slices.Contains(spot, id) {
			seq.WriteString("L")
		} else {
			seq.WriteString("A")
		}
	}
	require.Contains(t, []string{strings.Repeat("LA", 10), strings.Repeat("AL", 10)}, seq.String(), "the label's queue and any key's, in turn")
}
