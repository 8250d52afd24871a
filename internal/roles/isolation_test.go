package roles_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/client"
	"github.com/ratefleet/ratefleet/internal/embedded"
	"github.com/ratefleet/ratefleet/internal/exchange"
	"github.com/ratefleet/ratefleet/internal/fleet"
	"github.com/ratefleet/ratefleet/internal/limiter"
	"github.com/ratefleet/ratefleet/internal/results"
	"github.com/ratefleet/ratefleet/internal/roles"
	"github.com/ratefleet/ratefleet/internal/upstream"
	"github.com/ratefleet/ratefleet/internal/worker"
	"github.com/ratefleet/ratefleet/wire"
)

// TestRoles_AProducerSeesNothingOfAnotherProducersWork has producer alice listen
// on everything her role lets her (and try the rest), and read what she may of the
// results stream, while producer bob submits, awaits and calls Do through the
// client package, served by a real worker under the worker role. Alice sees none
// of bob's requests, results or replies; bob gets every one of his.
func TestRoles_AProducerSeesNothingOfAnotherProducersWork(t *testing.T) {
	s, acc, pw := securedWith(t, "alice", "bob")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	refusedW := serve(t, ctx, s, acc)

	alice, refusedA := connectUser(t, s, acc, "alice", pw["alice"])
	var mu sync.Mutex
	var seen []*nats.Msg
	own := []string{"_INBOX_alice.>", "ratefleet.reply.alice.>"}
	others := []string{">", "_INBOX.>", "_INBOX_bob.>", "ratefleet.>", "ratefleet.reply.>", "ratefleet.reply.bob.>",
		"ratefleet.reply.*", "ratefleet.results.>", "ratefleet.requests.>", "$JS.>", "$KV.>"}
	for _, subject := range append(slices.Clone(own), others...) {
		_, err := alice.NC.Subscribe(subject, func(m *nats.Msg) {
			mu.Lock()
			seen = append(seen, m)
			mu.Unlock()
		})
		require.NoError(t, err)
	}
	require.NoError(t, alice.NC.Flush())
	refusedSubs := map[string]bool{}
	for range others {
		select {
		case err := <-refusedA:
			require.Contains(t, err.Error(), "Subscription to")
			refusedSubs[err.Error()[strings.Index(err.Error(), `"`):]] = true
		case <-ctx.Done():
			t.Fatalf("only %d of alice's %d subscriptions beyond her own were refused", len(refusedSubs), len(others))
		}
	}
	for _, subject := range others {
		require.True(t, refusedSubs[`"`+subject+`"`], "alice may not subscribe to %s", subject)
	}

	// Bob's work, through the client package, as his own user.
	bobConn, refusedB := connectUser(t, s, acc, "bob", pw["bob"])
	var bobSaw []string
	_, err := bobConn.NC.Subscribe("ratefleet.reply.bob.>", func(m *nats.Msg) {
		mu.Lock()
		bobSaw = append(bobSaw, string(m.Data))
		mu.Unlock()
	})
	require.NoError(t, err)
	bob, err := client.New(bobConn.NC)
	require.NoError(t, err)
	require.Equal(t, wire.Owner("bob"), bob.Owner())
	secret := func(n int) json.RawMessage {
		return json.RawMessage(`{"note":"bob-secret-` + string(rune('0'+n)) + `"}`)
	}
	id, err := bob.Submit(ctx, client.Request{ID: "bob-1", Payload: secret(1)})
	require.NoError(t, err)
	r1, err := bob.Await(ctx, id)
	require.NoError(t, err)
	require.True(t, r1.OK(), "%+v", r1)
	require.Equal(t, "bob-1", r1.ID)
	r2, err := bob.Do(ctx, client.Request{ID: "bob-2", Call: &client.Call{Path: "/api/request"}, Payload: secret(2)})
	require.NoError(t, err)
	require.True(t, r2.OK(), "%+v", r2)
	require.Contains(t, r2.Body, "bob-2")
	again, err := bob.Await(ctx, "bob-2")
	require.NoError(t, err)
	require.Equal(t, r2.Delivery, again.Delivery)

	// Alice reads what she may of the results stream: her own subjects.
	for _, id := range []string{"bob-1", "bob-2"} {
		_, found, err := results.Get(ctx, alice.NC, alice.Streams.Results, "alice", id)
		require.NoError(t, err)
		require.False(t, found, "alice's subject for %s holds nothing", id)
	}
	// Checking the declarations, she may list the results stream's subjects:
	// they name bob and how many results he has, never which ids.
	info, err := alice.NC.RequestWithContext(ctx, "$JS.API.STREAM.INFO.RATEFLEET_RESULTS", []byte(`{"subjects_filter":">"}`))
	require.NoError(t, err)
	require.Contains(t, string(info.Data), "ratefleet.results.bob."+digest("bob-1"))
	for _, leak := range []string{"bob-1", "bob-2", wire.Token("bob-1"), wire.Token("bob-2")} {
		require.NotContains(t, string(info.Data), leak)
	}
	// And is refused bob's.
	rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
	_, err = alice.NC.RequestWithContext(rctx, "$JS.API.DIRECT.GET.RATEFLEET_RESULTS."+wire.ResultSubject("ratefleet.results.", "bob", "bob-1"), nil)
	rcancel()
	require.Error(t, err)
	require.Contains(t, (<-refusedA).Error(), "ratefleet.results.bob.")

	require.NoError(t, alice.NC.Flush())
	require.NoError(t, bobConn.NC.Flush())
	mu.Lock()
	defer mu.Unlock()
	require.NotEmpty(t, bobSaw, "bob's replies travel where bob may listen")
	require.Contains(t, strings.Join(bobSaw, "\n"), "bob-2")
	require.NotEmpty(t, seen, "alice's own answers reach her")
	for _, m := range seen {
		require.True(t, strings.HasPrefix(m.Subject, "_INBOX_alice.") || strings.HasPrefix(m.Subject, "ratefleet.reply.alice."), "alice got a message on %s", m.Subject)
		all := m.Subject + " " + string(m.Data) + " " + m.Reply
		for k, v := range m.Header {
			all += " " + k + "=" + strings.Join(v, ",")
		}
		for _, bobs := range []string{"bob-1", "bob-2", "bob-secret", wire.Token("bob-1"), wire.Token("bob-2")} {
			require.NotContains(t, all, bobs, "alice saw bob's work")
		}
	}
	require.Empty(t, refusedA, "alice was refused nothing more")
	require.Empty(t, refusedB, "bob's client needs nothing his role lacks")
	require.Empty(t, refusedW, "the worker needs nothing its role lacks")
}

// digest is the token of a user's request id in its result subject.
func digest(id string) string {
	return strings.TrimPrefix(wire.ResultSubject("x.", "u", id), "x.u.")
}

// serve runs a worker under the worker role (no keeper), serving the
// simulated exchange's five keys without delays, until the test ends. The
// channel receives the server's refusals of its operations.
func serve(t *testing.T, ctx context.Context, s *embedded.Server, acc *fleet.Access) chan error {
	t.Helper()
	quiet := slog.New(slog.DiscardHandler)
	cfg := exchange.DefaultConfig()
	cfg.InDelay, cfg.OutDelay = exchange.DelayRange{}, exchange.DelayRange{}
	ex, err := exchange.New(cfg, quiet)
	require.NoError(t, err)
	require.NoError(t, ex.Open("127.0.0.1:0"))
	t.Cleanup(func() { _ = ex.Close(context.Background()) })
	up, err := upstream.New(ex.URL(), 2*time.Second, 8, nil)
	require.NoError(t, err)
	t.Cleanup(up.Close)
	c, refused := connect(t, s, acc, roles.Worker)
	factory, err := worker.NewPacerFactory(worker.Adaptive, limiter.Config{})
	require.NoError(t, err)
	w, err := worker.New(ctx, c.JS, worker.Config{
		ID: "w1", Keys: exchange.DefaultKeys(), MaxKeys: 5, Upstream: up, Streams: c.Streams, NewPacer: factory, Logger: quiet,
	})
	require.NoError(t, err)
	wctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { _ = w.Run(wctx) })
	t.Cleanup(func() { stop(); wg.Wait() })
	return refused
}
