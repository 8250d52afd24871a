package graveyard_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/graveyard"
	"github.com/ratefleet/ratefleet/internal/natsconn"
	"github.com/ratefleet/ratefleet/internal/testenv"
	"github.com/ratefleet/ratefleet/wire"
)

func setup(t *testing.T) (*natsconn.Conn, *graveyard.Graveyard) {
	t.Helper()
	c := testenv.NATS(t, nil)
	g, err := graveyard.New(c.JS, c.Streams.Graveyard.Stream.Name, c.Streams.Graveyard.Stream.Subjects[0])
	require.NoError(t, err)
	return c, g
}

// bury stores n entries as workers would and returns the original request ids.
func bury(t *testing.T, c *natsconn.Conn, g *graveyard.Graveyard, n int) []string {
	t.Helper()
	ctx := context.Background()
	var ids []string
	for i := range n {
		r := wire.New(time.Now().Add(-time.Hour), time.Second, []byte(`{"n":1}`))
		data, err := r.Encode()
		require.NoError(t, err)
		reason := wire.ReasonMaxDeliveries
		if i%2 == 1 {
			reason = wire.ReasonExpired
		}
		require.NoError(t, g.Bury(ctx, graveyard.Entry{
			Reason: reason, RequestID: r.ID, Original: data, Stream: c.Streams.Requests.Stream.Name,
			StreamSeq: uint64(i + 1), Deliveries: 5, Worker: "w1", Key: "key1", BuriedAt: time.Now(),
			Attempts: []graveyard.Attempt{{At: time.Now(), Delivery: 5, Key: "key1", Status: 503, Result: "server_error", Error: "Service Unavailable"}},
		}))
		ids = append(ids, r.ID)
	}
	return ids
}

func graveyardCount(t *testing.T, c *natsconn.Conn) uint64 {
	t.Helper()
	st, err := c.JS.Stream(context.Background(), c.Streams.Graveyard.Stream.Name)
	require.NoError(t, err)
	return st.CachedInfo().State.Msgs
}

// replayedIDs reads the requests stream: the ReplayOf of every stored request.
func replayedIDs(t *testing.T, c *natsconn.Conn) map[string]int {
	t.Helper()
	ctx := context.Background()
	st, err := c.JS.Stream(ctx, c.Streams.Requests.Stream.Name)
	require.NoError(t, err)
	state := st.CachedInfo().State
	out := map[string]int{}
	for seq := state.FirstSeq; state.Msgs > 0 && seq <= state.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		require.NoError(t, err)
		r, err := wire.Decode(m.Data)
		require.NoError(t, err)
		out[r.ReplayOf]++
	}
	return out
}

func TestBury_SameMessageTwiceIsStoredOnce(t *testing.T) {
	c, g := setup(t)
	e := graveyard.Entry{Reason: wire.ReasonExpired, RequestID: "r", Original: []byte("x"), Stream: "S", StreamSeq: 7}
	require.NoError(t, g.Bury(context.Background(), e))
	require.NoError(t, g.Bury(context.Background(), e))
	require.Equal(t, uint64(1), graveyardCount(t, c))
}

func TestReplay_ThousandEntriesEachOnceAndTheGraveyardEmpties(t *testing.T) {
	c, g := setup(t)
	ids := bury(t, c, g, 1000)
	ctx := context.Background()
	r := graveyard.NewReplayer(g, c.Streams.Requests.Stream.Subjects[0], 30*time.Second, nil)
	var all []graveyard.Stored
	require.NoError(t, g.Walk(ctx, graveyard.Filter{}, func(s graveyard.Stored) bool { all = append(all, s); return true }))
	require.Len(t, all, 1000)
	for _, s := range all {
		req, err := r.Replay(ctx, s)
		require.NoError(t, err)
		require.Equal(t, s.Entry.RequestID, req.ReplayOf)
		require.Equal(t, int64(30000), req.TTLms, "a fresh time to live")
	}
	require.Zero(t, graveyardCount(t, c))
	got := replayedIDs(t, c)
	require.Len(t, got, 1000)
	for _, id := range ids {
		require.Equal(t, 1, got[id], "request %s replayed once", id)
	}
}

func TestReplay_InterruptedAndRerunSendsNothingTwiceAndLosesNothing(t *testing.T) {
	c, g := setup(t)
	ids := bury(t, c, g, 50)
	ctx := context.Background()
	r := graveyard.NewReplayer(g, c.Streams.Requests.Stream.Subjects[0], 0, nil)
	var all []graveyard.Stored
	require.NoError(t, g.Walk(ctx, graveyard.Filter{}, func(s graveyard.Stored) bool { all = append(all, s); return true }))

	// The first run replays 20 and is interrupted; the 21st was published but the
	// run stopped before removing its entry.
	for _, s := range all[:20] {
		_, err := r.Replay(ctx, s)
		require.NoError(t, err)
	}
	req, err := r.Plan(all[20])
	require.NoError(t, err)
	data, err := req.Encode()
	require.NoError(t, err)
	_, err = c.JS.Publish(ctx, c.Streams.Requests.Stream.Subjects[0], data, jetstream.WithMsgID(req.ID))
	require.NoError(t, err)

	// The rerun walks what is left, and replaying everything twice changes nothing.
	for range 2 {
		require.NoError(t, g.Walk(ctx, graveyard.Filter{}, func(s graveyard.Stored) bool {
			_, err := r.Replay(ctx, s)
			require.NoError(t, err)
			return true
		}))
	}
	for _, s := range all {
		_, err := r.Replay(ctx, s) // entries already gone: published again, stored once
		require.NoError(t, err)
	}
	require.Zero(t, graveyardCount(t, c))
	got := replayedIDs(t, c)
	require.Len(t, got, 50)
	for _, id := range ids {
		require.Equal(t, 1, got[id], "request %s", id)
	}
}

func TestFilter_SelectsByReasonKeyStatusAndID(t *testing.T) {
	c, g := setup(t)
	ids := bury(t, c, g, 10)
	ctx := context.Background()
	count := func(f graveyard.Filter) int {
		n := 0
		require.NoError(t, g.Walk(ctx, f, func(graveyard.Stored) bool { n++; return true }))
		return n
	}
	tests := []struct {
		name string
		f    graveyard.Filter
		want int
	}{
		{"all", graveyard.Filter{}, 10},
		{"by reason", graveyard.Filter{Reason: wire.ReasonExpired}, 5},
		{"by key", graveyard.Filter{Key: "key1"}, 10},
		{"other key", graveyard.Filter{Key: "key9"}, 0},
		{"by status", graveyard.Filter{Status: 503}, 10},
		{"by id", graveyard.Filter{IDs: map[string]bool{ids[3]: true, "1": true}}, 2},
		{"by time", graveyard.Filter{Since: time.Now().Add(time.Hour)}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { require.Equal(t, tt.want, count(tt.f)) })
	}
}

// TestReplay_KeepsTheRequestsRouteAndPriority replays an urgent request routed
// to a label: the replay is stored on the same subject, so the same keys serve it.
func TestReplay_KeepsTheRequestsRouteAndPriority(t *testing.T) {
	c, g := setup(t)
	ctx := context.Background()
	orig := wire.New(time.Now().Add(-time.Hour), time.Second, nil)
	orig.Label, orig.Priority, orig.Owner = "spot", wire.Urgent, "alice"
	data, err := orig.Encode()
	require.NoError(t, err)
	require.NoError(t, g.Bury(ctx, graveyard.Entry{
		Reason: wire.ReasonExpired, RequestID: orig.ID, Owner: "alice", Original: data,
		Stream: c.Streams.Requests.Stream.Name, StreamSeq: 1, Deliveries: 1, BuriedAt: time.Now(),
	}))
	var all []graveyard.Stored
	require.NoError(t, g.Walk(ctx, graveyard.Filter{}, func(s graveyard.Stored) bool { all = append(all, s); return true }))
	require.Len(t, all, 1)
	r := graveyard.NewReplayer(g, c.Streams.Requests.Subject(), time.Minute, nil)
	rep, err := r.Replay(ctx, all[0])
	require.NoError(t, err)

	st, err := c.JS.Stream(ctx, c.Streams.Requests.Stream.Name)
	require.NoError(t, err)
	m, err := st.GetLastMsgForSubject(ctx, "ratefleet.requests.alice.urgent.label-spot")
	require.NoError(t, err, "stored on the original's route")
	got, err := wire.DecodeFrom(c.Streams.Requests.Subject(), m.Subject, m.Data)
	require.NoError(t, err)
	require.Equal(t, rep.ID, got.ID)
	require.Equal(t, orig.ID, got.ReplayOf)
	require.Equal(t, wire.Urgent, got.Prio())
	require.Equal(t, wire.Route{Kind: wire.RouteLabel, Name: "spot"}, got.Route())
}
