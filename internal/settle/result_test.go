package settle_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/client"
	"github.com/ratefleet/ratefleet/internal/graveyard"
	"github.com/ratefleet/ratefleet/internal/natsconn"
	"github.com/ratefleet/ratefleet/internal/settle"
	"github.com/ratefleet/ratefleet/internal/testenv"
	"github.com/ratefleet/ratefleet/wire"
)

func resultsEnv(t *testing.T) (*natsconn.Conn, *settle.Results, *client.Client) {
	t.Helper()
	c := testenv.NATS(t, nil)
	nc, err := nats.Connect(c.NC.ConnectedUrl())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	cl, err := client.New(nc)
	require.NoError(t, err)
	return c, settle.NewResults(c.JS, c.Streams), cl
}

func countResults(t *testing.T, c *natsconn.Conn) uint64 {
	t.Helper()
	st, err := c.JS.Stream(context.Background(), c.Streams.Results.Stream.Name)
	require.NoError(t, err)
	return st.CachedInfo().State.Msgs
}

// A buried result is never written over a served one, whichever comes first,
// and a caller reads the served one.
func TestResults_AServedResultIsNeverReplacedByABuriedOne(t *testing.T) {
	entry := graveyard.Entry{RequestID: "order-1", StreamSeq: 7, Reason: wire.ReasonMaxDeliveries, Deliveries: 5, BuriedAt: time.Now()}
	served := wire.Result{ID: "order-1", Seq: 7, Outcome: wire.Served, Status: 200, Body: "done", Delivery: 5, At: time.Now()}
	tests := []struct {
		name        string
		servedFirst bool
		want        uint64 // results stored
	}{
		{"the served result first: the burial writes nothing", true, 1},
		{"the burial first (the server gave up while the send was in flight)", false, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, rs, cl := resultsEnv(t)
			ctx := context.Background()
			if tt.servedFirst {
				require.NoError(t, rs.Publish(ctx, wire.Anonymous, "", wire.ResultsKeep, served))
				require.NoError(t, rs.Bury(ctx, "", entry))
			} else {
				require.NoError(t, rs.Bury(ctx, "", entry))
				require.NoError(t, rs.Publish(ctx, wire.Anonymous, "", wire.ResultsKeep, served))
			}
			require.Equal(t, tt.want, countResults(t, c))
			got, ok, err := rs.Of(ctx, wire.Anonymous, "order-1", 7)
			require.NoError(t, err)
			require.True(t, ok)
			require.Equal(t, wire.Served, got.Outcome, "the worker's lookup finds the served result")

			actx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			res, err := cl.Await(actx, "order-1")
			require.NoError(t, err)
			require.Equal(t, wire.Served, res.Outcome, "the caller reads the served result")
			require.Equal(t, "done", res.Body)
		})
	}
}

// A request that reused an id is another request: a burial of it is written
// even though the earlier request's result is there.
func TestResults_ABurialOfARequestThatReusedAnIDIsWritten(t *testing.T) {
	c, rs, _ := resultsEnv(t)
	ctx := context.Background()
	require.NoError(t, rs.Publish(ctx, wire.Anonymous, "", wire.ResultsKeep, wire.Result{ID: "x", Seq: 1, Outcome: wire.Served, Delivery: 1, At: time.Now()}))
	require.NoError(t, rs.Bury(ctx, "", graveyard.Entry{RequestID: "x", StreamSeq: 9, Reason: wire.ReasonExpired, Deliveries: 1, BuriedAt: time.Now()}))
	require.Equal(t, uint64(2), countResults(t, c))
	got, ok, err := rs.Of(ctx, wire.Anonymous, "x", 9)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, wire.ReasonExpired, got.Reason)
	_, ok, err = rs.Of(ctx, wire.Anonymous, "x", 3)
	require.NoError(t, err)
	require.False(t, ok, "no result of a request stored at another sequence")
}

// A served result goes where the request's results setting says: kept and
// sent, sent only, or neither; one too large for a message is kept even when
// only sent, so its caller can read it.
func TestResults_GoWhereTheRequestSays(t *testing.T) {
	small := wire.Result{ID: "r-1", Seq: 3, Outcome: wire.Served, Status: 200, Body: "ok", Delivery: 1, At: time.Now()}
	tests := []struct {
		name       string
		mode       wire.Results
		body       int // bytes of body; 0 keeps small's
		wantStored uint64
		wantReply  bool
	}{
		{"default: kept and sent", "", 0, 1, true},
		{"keep", wire.ResultsKeep, 0, 1, true},
		{"reply: sent only", wire.ResultsReply, 0, 0, true},
		{"none: neither", wire.ResultsNone, 0, 0, false},
		{"reply, too large for a message: kept in parts and sent", wire.ResultsReply, 2 << 20, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, rs, _ := resultsEnv(t)
			ctx := context.Background()
			reply := c.Streams.Results.ReplyPrefix + "test"
			sub, err := c.NC.SubscribeSync(reply)
			require.NoError(t, err)
			require.NoError(t, c.NC.Flush())
			res := small
			if tt.body > 0 {
				res.SetBody(make([]byte, tt.body))
			}
			require.NoError(t, rs.Publish(ctx, wire.Anonymous, reply, tt.mode, res))
			stored := countResults(t, c)
			if tt.body > 0 {
				require.Greater(t, stored, uint64(1), "the body in parts, then the result naming them")
			} else {
				require.Equal(t, tt.wantStored, stored)
			}
			_, err = sub.NextMsg(time.Second)
			if tt.wantReply {
				require.NoError(t, err, "the result is sent to the reply subject")
			} else {
				require.ErrorIs(t, err, nats.ErrTimeout, "nothing is sent")
			}
		})
	}
}
