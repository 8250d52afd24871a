package roles_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/graveyard"
	"github.com/ratefleet/ratefleet/internal/roles"
	"github.com/ratefleet/ratefleet/internal/settle"
	"github.com/ratefleet/ratefleet/wire"
)

// TestRoles_BuryingAndReplayingWorkUnderTheirRoles runs, each as its own role on
// the secured server, the paths a short clean run never takes: the worker buries a
// request with its attempts, the keeper reconciles, the monitor reads the
// graveyard, and the graveyard operator replays the entry as its owner's.
func TestRoles_BuryingAndReplayingWorkUnderTheirRoles(t *testing.T) {
	s, acc := secured(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	quiet := slog.New(slog.DiscardHandler)

	producer, refusedP := connect(t, s, acc, roles.Producer)
	req := wire.New(time.Now(), time.Minute, []byte(`{"order":1}`))
	data, err := req.Encode()
	require.NoError(t, err)
	owner, err := wire.ParseOwner(producer.User)
	require.NoError(t, err)
	_, err = producer.JS.Publish(ctx, owner.RequestSubject(producer.Streams.Requests.Subject()), data, jetstream.WithMsgID(owner.MsgID(req.ID)))
	require.NoError(t, err)

	worker, refusedW := connect(t, s, acc, roles.Worker)
	sc := worker.Streams
	cons, err := worker.JS.Consumer(ctx, sc.Requests.Stream.Name, sc.Requests.Consumer.Durable)
	require.NoError(t, err)
	msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
	require.NoError(t, err)
	md, err := msg.Metadata()
	require.NoError(t, err)
	attempts, err := graveyard.OpenAttempts(ctx, worker.JS, sc.KV.Attempts.Bucket)
	require.NoError(t, err)
	a := graveyard.Attempt{At: time.Now(), Delivery: 1, Worker: "w1", Key: "key1", Status: 503, Result: "server_error"}
	require.NoError(t, attempts.Record(ctx, req.ID, a))
	prev, err := attempts.List(ctx, req.ID)
	require.NoError(t, err)
	g, err := graveyard.New(worker.JS, sc.Graveyard.Stream.Name, sc.Graveyard.Stream.Subjects[0])
	require.NoError(t, err)
	require.NoError(t, g.Bury(ctx, graveyard.Entry{
		Reason: wire.ReasonMaxDeliveries, RequestID: req.ID, Owner: owner, Original: msg.Data(), Stream: md.Stream, StreamSeq: md.Sequence.Stream,
		Deliveries: 1, Attempts: prev, Error: "server_error", Worker: "w1", Key: "key1", BuriedAt: time.Now(),
	}))
	require.NoError(t, msg.DoubleAck(ctx))
	require.NoError(t, attempts.Forget(ctx, req.ID))
	keeperConn, refusedK := connect(t, s, acc, roles.Keeper)
	keeper, err := settle.NewKeeper(ctx, keeperConn.JS, sc, quiet)
	require.NoError(t, err)
	_, err = keeper.Reconcile(ctx)
	require.NoError(t, err)

	monitor, refusedM := connect(t, s, acc, roles.Monitor)
	mg, err := graveyard.New(monitor.JS, sc.Graveyard.Stream.Name, sc.Graveyard.Stream.Subjects[0])
	require.NoError(t, err)
	var stored []graveyard.Stored
	require.NoError(t, mg.Walk(ctx, graveyard.Filter{}, func(st graveyard.Stored) bool { stored = append(stored, st); return true }))
	require.Len(t, stored, 1)
	require.Equal(t, req.ID, stored[0].Entry.RequestID)

	operator, refusedG := connect(t, s, acc, roles.Graveyard)
	og, err := graveyard.New(operator.JS, sc.Graveyard.Stream.Name, sc.Graveyard.Stream.Subjects[0])
	require.NoError(t, err)
	replayed, err := graveyard.NewReplayer(og, sc.Requests.Subject(), time.Minute, time.Now).Replay(ctx, stored[0])
	require.NoError(t, err)
	require.Equal(t, req.ID, replayed.ReplayOf)
	require.Equal(t, owner, replayed.Owner, "the replay is the same user's request")
	// The replay was stored under the owner's subject, so its result goes back to them.
	st, err := keeperConn.JS.Stream(ctx, sc.Requests.Stream.Name)
	require.NoError(t, err)
	m, err := st.GetLastMsgForSubject(ctx, owner.RequestSubject(sc.Requests.Subject()))
	require.NoError(t, err)
	back, err := wire.DecodeFrom(sc.Requests.Subject(), m.Subject, m.Data)
	require.NoError(t, err)
	require.Equal(t, replayed.ID, back.ID)
	require.Equal(t, owner, back.Owner)
	var left int
	require.NoError(t, og.Walk(ctx, graveyard.Filter{}, func(graveyard.Stored) bool { left++; return true }))
	require.Zero(t, left, "the replayed entry left the graveyard")

	for role, ch := range map[string]chan error{roles.Producer: refusedP, roles.Worker: refusedW, roles.Keeper: refusedK, roles.Monitor: refusedM, roles.Graveyard: refusedG} {
		require.Empty(t, ch, "the server refused the %s something its job needs", role)
	}
}
