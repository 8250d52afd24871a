package client

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/embedded"
	"github.com/ratefleet/ratefleet/internal/natsconn"
	"github.com/ratefleet/ratefleet/wire"
)

func TestAccept_OnlyTheAskedResultSentToTheSubjectItself(t *testing.T) {
	const subject = "ratefleet.reply.bob.b3JkZXItMQ"
	result := func(id string) []byte {
		b, err := wire.Result{ID: id, Outcome: wire.Served, Status: 200}.Encode()
		require.NoError(t, err)
		return b
	}
	tests := []struct {
		name string
		msg  *nats.Msg
		ok   bool
	}{
		{"its result", &nats.Msg{Subject: subject, Data: result("order-1")}, true},
		{"another request's result", &nats.Msg{Subject: subject, Data: result("order-2")}, false},
		{"not a result", &nats.Msg{Subject: subject, Data: []byte(`{"status":200}`)}, false},
		{"a consumer's delivery of a stored message", &nats.Msg{Subject: "ratefleet.results.alice.b3JkZXItMQ", Data: result("order-1")}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, ok := accept(tt.msg, subject, "order-1")
			require.Equal(t, tt.ok, ok)
			if ok {
				require.Equal(t, "order-1", res.ID)
			}
		})
	}
}

// A push consumer delivers to its deliver subject under the stored message's
// own subject: a result someone pointed at a caller's reply subject never
// passes for a reply, whatever id it carries.
func TestAccept_APushConsumersDeliveryIsNotAReply(t *testing.T) {
	ns, err := embedded.Start(embedded.Options{})
	require.NoError(t, err)
	t.Cleanup(ns.Shutdown)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := natsconn.Open(ctx, natsconn.Options{URL: ns.ClientURL(), Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	t.Cleanup(conn.NC.Close)
	rs := conn.Streams.Results
	reply := wire.ReplySubject(rs.ReplyPrefix, "bob", "order-1")
	sub, err := conn.NC.SubscribeSync(reply)
	require.NoError(t, err)
	stored := wire.ResultSubject(rs.Prefix(), "alice", "order-1")
	_, err = conn.JS.CreateOrUpdatePushConsumer(ctx, rs.Stream.Name, jetstream.ConsumerConfig{
		Name: "pointed", FilterSubject: stored, DeliverSubject: reply, AckPolicy: jetstream.AckNonePolicy,
	})
	require.NoError(t, err)
	data, err := wire.Result{ID: "order-1", Outcome: wire.Served, Status: 200, Body: "alice's"}.Encode()
	require.NoError(t, err)
	_, err = conn.JS.Publish(ctx, stored, data)
	require.NoError(t, err)
	m, err := sub.NextMsgWithContext(ctx)
	require.NoError(t, err)
	require.Equal(t, stored, m.Subject, "delivered under the stored subject")
	_, ok := accept(m, reply, "order-1")
	require.False(t, ok)
}
