package roles_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/natsconn"
	"github.com/ratefleet/ratefleet/internal/results"
	"github.com/ratefleet/ratefleet/internal/roles"
	"github.com/ratefleet/ratefleet/wire"
)

// TestRoles_EachRoleMayStillDoItsJob runs, as each role, the operations the
// refusals above sit next to, and shows the server refuses none of them.
func TestRoles_EachRoleMayStillDoItsJob(t *testing.T) {
	s, acc := secured(t)
	publishAs := func(t *testing.T, c *natsconn.Conn, owner wire.Owner) uint64 {
		req := wire.New(time.Now(), time.Minute, nil)
		data, err := req.Encode()
		require.NoError(t, err)
		ack, err := c.JS.Publish(context.Background(), owner.RequestSubject(c.Streams.Requests.Subject()), data, jetstream.WithMsgID(owner.MsgID(req.ID)))
		require.NoError(t, err)
		return ack.Sequence
	}
	noMessages := func(err error) error {
		if errors.Is(err, jetstream.ErrNoMessages) || errors.Is(err, nats.ErrTimeout) {
			return nil
		}
		return err
	}
	for _, tc := range []struct {
		role, what string
		do         func(t *testing.T, ctx context.Context, c *natsconn.Conn) error
	}{
		{roles.Producer, "publish its own request", func(t *testing.T, _ context.Context, c *natsconn.Conn) error {
			publishAs(t, c, wire.Owner(c.User))
			return nil
		}},
		{roles.Producer, "read its own result by direct get", func(_ *testing.T, ctx context.Context, c *natsconn.Conn) error {
			_, found, err := results.Get(ctx, c.NC, c.Streams.Results, wire.Owner(c.User), "order-1")
			if found {
				return errors.New("a result where none was published")
			}
			return err
		}},
		{roles.Producer, "wait on its own reply subjects", func(_ *testing.T, _ context.Context, c *natsconn.Conn) error {
			_, err := c.NC.SubscribeSync(wire.ReplySubject(c.Streams.Results.ReplyPrefix, wire.Owner(c.User), "order-1"))
			return err
		}},
		{roles.Worker, "pull from the workers' consumer", func(_ *testing.T, ctx context.Context, c *natsconn.Conn) error {
			cons, err := c.JS.Consumer(ctx, c.Streams.Requests.Stream.Name, c.Streams.Requests.Consumer.Durable)
			if err != nil {
				return err
			}
			b, err := cons.Fetch(1, jetstream.FetchMaxWait(200*time.Millisecond))
			if err != nil {
				return err
			}
			for m := range b.Messages() {
				_ = m.Nak()
			}
			return noMessages(b.Error())
		}},
		{roles.Worker, "watch the leases", func(_ *testing.T, ctx context.Context, c *natsconn.Conn) error {
			kv, err := c.JS.KeyValue(ctx, c.Streams.KV.Leases.Bucket)
			if err != nil {
				return err
			}
			w, err := kv.WatchAll(ctx)
			if err != nil {
				return err
			}
			defer func() { _ = w.Stop() }()
			<-w.Updates() // nil once the current values are in
			return nil
		}},
		{roles.Worker, "look for an earlier result of any user's request", func(_ *testing.T, ctx context.Context, c *natsconn.Conn) error {
			st, err := c.JS.Stream(ctx, c.Streams.Results.Stream.Name)
			if err != nil {
				return err
			}
			_, err = st.GetLastMsgForSubject(ctx, wire.ResultSubject(c.Streams.Results.Prefix(), "bob", "order-1"))
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				return nil
			}
			return err
		}},
		{roles.Keeper, "remove a request it buried", func(t *testing.T, ctx context.Context, c *natsconn.Conn) error {
			p, _ := connect(t, s, acc, roles.Producer)
			seq := publishAs(t, p, wire.Owner(p.User))
			st, err := c.JS.Stream(ctx, c.Streams.Requests.Stream.Name)
			if err != nil {
				return err
			}
			return st.DeleteMsg(ctx, seq)
		}},
		{roles.Monitor, "read the stats through an ordered consumer", func(_ *testing.T, ctx context.Context, c *natsconn.Conn) error {
			cons, err := c.JS.OrderedConsumer(ctx, c.Streams.Stats.Stream.Name, jetstream.OrderedConsumerConfig{
				FilterSubjects: []string{c.Streams.Stats.Stream.Subjects[0]}, DeliverPolicy: jetstream.DeliverLastPerSubjectPolicy,
			})
			if err != nil {
				return err
			}
			_, err = cons.Next(jetstream.FetchMaxWait(200 * time.Millisecond))
			return noMessages(err)
		}},
		{roles.Monitor, "watch key state", func(_ *testing.T, ctx context.Context, c *natsconn.Conn) error {
			kv, err := c.JS.KeyValue(ctx, c.Streams.KV.KeyState.Bucket)
			if err != nil {
				return err
			}
			w, err := kv.WatchAll(ctx)
			if err != nil {
				return err
			}
			defer func() { _ = w.Stop() }()
			<-w.Updates()
			return nil
		}},
		{roles.Graveyard, "replay a request as its owner's", func(t *testing.T, _ context.Context, c *natsconn.Conn) error {
			publishAs(t, c, "bob")
			return nil
		}},
	} {
		t.Run(tc.role+" may "+tc.what, func(t *testing.T) {
			c, refused := connect(t, s, acc, tc.role)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			require.NoError(t, tc.do(t, ctx, c))
			require.NoError(t, c.NC.Flush()) // any refusal is in by the pong
			for len(refused) > 0 {
				t.Errorf("refused: %v", <-refused)
			}
		})
	}
}
