package streams_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/wire"
)

// TestApply_NarrowsTheOldConsumerAndGivesEachRouteItsOwn starts from the
// declarations of before routes (one unfiltered consumer) with a request
// queued, applies routes, and checks that each subject reaches exactly the
// consumer of its priority and route.
func TestApply_NarrowsTheOldConsumerAndGivesEachRouteItsOwn(t *testing.T) {
	js := connect(t)
	ctx := context.Background()
	c := defaultConfig(t)
	c.Requests.Consumer.Priorities = true
	_, err := c.Apply(ctx, js)
	require.NoError(t, err)
	// The consumer as it was before routes: unfiltered, the only one.
	for _, name := range []string{"workers", "workers_urgent_any"} {
		require.NoError(t, js.DeleteConsumer(ctx, "RATEFLEET_REQUESTS", name))
	}
	_, err = js.CreateConsumer(ctx, "RATEFLEET_REQUESTS", jetstream.ConsumerConfig{Durable: "workers", AckPolicy: jetstream.AckExplicitPolicy})
	require.NoError(t, err)
	_, err = js.Publish(ctx, "ratefleet.requests.alice", []byte("old"))
	require.NoError(t, err)

	c.Routes = []wire.Route{{Kind: wire.RouteLabel, Name: "spot"}, {Kind: wire.RouteKey, Name: "k1"}, {Kind: wire.RouteLabel, Name: "spot"}}
	res, err := c.Apply(ctx, js)
	require.NoError(t, err)
	var names []string
	for _, ch := range res {
		if ch.Kind == "consumer" {
			names = append(names, ch.Name)
		}
	}
	require.ElementsMatch(t, []string{
		"RATEFLEET_REQUESTS/workers", "RATEFLEET_REQUESTS/workers_urgent_any",
		"RATEFLEET_REQUESTS/workers_urgent_key-k1", "RATEFLEET_REQUESTS/workers_urgent_label-spot",
		"RATEFLEET_REQUESTS/workers_batch_key-k1", "RATEFLEET_REQUESTS/workers_batch_label-spot",
	}, names)
	again, err := c.Check(ctx, js)
	require.NoError(t, err, "%+v", again)

	for subject, consumer := range map[string]string{
		"ratefleet.requests.alice.urgent.label-spot": "workers_urgent_label-spot",
		"ratefleet.requests.batch.key-k1":            "workers_batch_key-k1",
		"ratefleet.requests.bob.urgent.any":          "workers_urgent_any",
		"ratefleet.requests.bob.batch.any":           "workers",
		"ratefleet.requests":                         "workers",
	} {
		_, err := js.Publish(ctx, subject, []byte(subject))
		require.NoError(t, err, subject)
		_ = consumer
	}
	want := map[string][]string{
		"workers":                   {"old", "ratefleet.requests.bob.batch.any", "ratefleet.requests"},
		"workers_urgent_any":        {"ratefleet.requests.bob.urgent.any"},
		"workers_urgent_label-spot": {"ratefleet.requests.alice.urgent.label-spot"},
		"workers_batch_key-k1":      {"ratefleet.requests.batch.key-k1"},
		"workers_batch_label-spot":  nil,
		"workers_urgent_key-k1":     nil,
	}
	for name, bodies := range want {
		cons, err := js.Consumer(ctx, "RATEFLEET_REQUESTS", name)
		require.NoError(t, err)
		// A consumer learns of a stored message a moment after the publish
		// is acknowledged: wait for those it must have, then ask, without
		// waiting, for any more.
		var got []string
		take := func(batch jetstream.MessageBatch, err error) {
			require.NoError(t, err, name)
			for m := range batch.Messages() {
				got = append(got, string(m.Data()))
				require.NoError(t, m.Ack())
			}
		}
		if len(bodies) > 0 {
			take(cons.Fetch(len(bodies), jetstream.FetchMaxWait(5*time.Second)))
		}
		take(cons.FetchNoWait(10))
		require.ElementsMatch(t, bodies, got, name)
	}
}

// TestApply_OneConsumerIsUnfilteredUnlessRoutesWereApplied: with neither
// priorities nor routes the one consumer takes every request, unfiltered (the
// least work for the server); an apply without the keys file after one with it
// keeps it filtered, as it must not overlap the routes' consumers.
func TestApply_OneConsumerIsUnfilteredUnlessRoutesWereApplied(t *testing.T) {
	js := connect(t)
	ctx := context.Background()
	c := defaultConfig(t)
	_, err := c.Apply(ctx, js)
	require.NoError(t, err)
	filters := func() []string {
		cons, err := js.Consumer(ctx, "RATEFLEET_REQUESTS", "workers")
		require.NoError(t, err)
		cfg := cons.CachedInfo().Config
		if cfg.FilterSubject != "" {
			return []string{cfg.FilterSubject}
		}
		return cfg.FilterSubjects
	}
	require.Empty(t, filters())

	c.Routes = []wire.Route{{Kind: wire.RouteLabel, Name: "spot"}}
	_, err = c.Apply(ctx, js)
	require.NoError(t, err)
	require.NotEmpty(t, filters())

	c.Routes = nil
	_, err = c.Apply(ctx, js)
	require.NoError(t, err)
	require.NotEmpty(t, filters(), "the label's consumer is still there")
	_, err = c.Check(ctx, js)
	require.NoError(t, err, "a check without the routes takes the consumer as it is")
}
