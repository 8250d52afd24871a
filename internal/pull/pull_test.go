package pull_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/pull"
	"github.com/ratefleet/ratefleet/internal/testenv"
)

// setup starts a server with a work-queue stream "Q" on q.> and a durable pull
// consumer "c" with an ack wait of ackWait.
func setup(t *testing.T, ackWait time.Duration) (jetstream.JetStream, jetstream.Stream) {
	t.Helper()
	js := testenv.NATS(t, nil).JS
	ctx := context.Background()
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "Q", Subjects: []string{"q.>"}, Retention: jetstream.WorkQueuePolicy})
	require.NoError(t, err)
	_, err = st.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "c", AckPolicy: jetstream.AckExplicitPolicy, AckWait: ackWait, MaxDeliver: 5})
	require.NoError(t, err)
	return js, st
}

func publish(t *testing.T, js jetstream.JetStream, n int) {
	t.Helper()
	for i := range n {
		_, err := js.Publish(context.Background(), "q.x", fmt.Appendf(nil, "m%d", i))
		require.NoError(t, err)
	}
}

// awaitConsumer waits until consumer c's info says ok.
func awaitConsumer(t *testing.T, js jetstream.JetStream, ok func(*jetstream.ConsumerInfo) bool, msgAndArgs ...any) {
	t.Helper()
	c, err := js.Consumer(context.Background(), "Q", "c")
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		info, err := c.Info(context.Background())
		return err == nil && ok(info)
	}, 5*time.Second, 5*time.Millisecond, msgAndArgs...)
}

// pulling waits until consumer c has a pull waiting for a message.
func pulling(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	awaitConsumer(t, js, func(i *jetstream.ConsumerInfo) bool { return i.NumWaiting == 1 }, "the pull never reached the server")
}

// seen waits until consumer c counts n messages not yet delivered: it learns
// of a stored message a moment after the publish is acknowledged, and a pull
// that does not wait sees only what it has counted.
func seen(t *testing.T, js jetstream.JetStream, n uint64) {
	t.Helper()
	awaitConsumer(t, js, func(i *jetstream.ConsumerInfo) bool { return i.NumPending == n }, "consumer c never counted %d pending", n)
}

func TestPuller_TakesMessagesOneAtATimeAndAcksThem(t *testing.T) {
	js, st := setup(t, 30*time.Second)
	p, err := pull.New(js)
	require.NoError(t, err)
	defer p.Close()
	ctx := context.Background()

	m, err := p.Next(ctx, "Q", "c", 0)
	require.NoError(t, err)
	require.Nil(t, m, "an empty queue answers at once with none")

	publish(t, js, 3)
	seen(t, js, 3)
	for i := range 3 {
		m, err := p.Next(ctx, "Q", "c", time.Duration(i)*100*time.Millisecond) // no wait, then waits
		require.NoError(t, err)
		require.NotNil(t, m)
		require.Equal(t, fmt.Sprintf("m%d", i), string(m.Data()))
		require.Equal(t, "q.x", m.Subject())
		md, err := m.Metadata()
		require.NoError(t, err)
		require.Equal(t, uint64(i+1), md.Sequence.Stream)
		require.Equal(t, uint64(1), md.NumDelivered)
		require.Equal(t, "c", md.Consumer)
		require.NoError(t, m.DoubleAck(ctx))
	}
	info, err := st.Info(ctx)
	require.NoError(t, err)
	require.Zero(t, info.State.Msgs, "each acknowledged message left the work queue")

	m, err = p.Next(ctx, "Q", "c", 200*time.Millisecond)
	require.NoError(t, err)
	require.Nil(t, m, "a wait that sees nothing ends with none at its expiry")
}

func TestPuller_KeepsAMessageDeliveredAfterItsCallerGaveUp(t *testing.T) {
	js, _ := setup(t, 30*time.Second)
	p, err := pull.New(js)
	require.NoError(t, err)
	defer p.Close()

	// The caller stops waiting while its pull is still outstanding on the server;
	// the message published next is delivered to it all the same.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := p.Next(ctx, "Q", "c", 5*time.Second)
		done <- err
	}()
	pulling(t, js) // the pull reaches the server
	cancel()
	require.ErrorIs(t, <-done, context.Canceled)
	publish(t, js, 1)

	// The next call returns it, delivered once, without a second delivery.
	var m jetstream.Msg
	require.Eventually(t, func() bool {
		m, err = p.Next(context.Background(), "Q", "c", 0)
		require.NoError(t, err)
		return m != nil
	}, 5*time.Second, 10*time.Millisecond)
	md, err := m.Metadata()
	require.NoError(t, err)
	require.Equal(t, uint64(1), md.NumDelivered)
	require.Equal(t, "m0", string(m.Data()))
}

func TestPuller_CloseGivesBackWhatWasNotTaken(t *testing.T) {
	js, st := setup(t, 30*time.Second)
	p, err := pull.New(js)
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := p.Next(ctx, "Q", "c", 5*time.Second)
		done <- err
	}()
	pulling(t, js)
	cancel()
	<-done
	publish(t, js, 1)
	// Delivered to the puller, not taken: the consumer holds it as pending.
	c, err := st.Consumer(context.Background(), "c")
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		info, err := c.Info(context.Background())
		return err == nil && info.NumAckPending == 1
	}, 5*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool { return pull.Waiting(p) == 1 }, 5*time.Second, time.Millisecond, "it reaches the puller")
	p.Close()

	// Given back at once: another puller gets it now, not after the 30 s ack wait.
	q, err := pull.New(js)
	require.NoError(t, err)
	defer q.Close()
	m, err := q.Next(context.Background(), "Q", "c", time.Second)
	require.NoError(t, err)
	require.NotNil(t, m, "the message was given back when the first puller closed")
	md, err := m.Metadata()
	require.NoError(t, err)
	require.Equal(t, uint64(2), md.NumDelivered)
}

func TestPuller_AcknowledgementsReachTheServer(t *testing.T) {
	js, st := setup(t, 30*time.Second)
	p, err := pull.New(js)
	require.NoError(t, err)
	defer p.Close()
	ctx := context.Background()
	publish(t, js, 2)
	seen(t, js, 2)

	m, err := p.Next(ctx, "Q", "c", 0)
	require.NoError(t, err)
	require.NoError(t, m.NakWithDelay(time.Hour)) // held back: not delivered again soon
	m, err = p.Next(ctx, "Q", "c", 0)
	require.NoError(t, err)
	require.Equal(t, "m1", string(m.Data()), "the first message was held back by its delay")
	require.NoError(t, m.TermWithReason("test"))
	m, err = p.Next(ctx, "Q", "c", 100*time.Millisecond)
	require.NoError(t, err)
	require.Nil(t, m, "neither a delayed nor a terminated message is delivered")
	// A termination is not confirmed: the server removes the message soon after.
	require.Eventually(t, func() bool {
		info, err := st.Info(ctx)
		return err == nil && info.State.Msgs == 1
	}, 5*time.Second, 5*time.Millisecond, "the terminated message left the work queue; the delayed one waits")
}

func TestPuller_ARefusedPullIsAnError(t *testing.T) {
	js, _ := setup(t, 30*time.Second)
	p, err := pull.New(js)
	require.NoError(t, err)
	defer p.Close()
	_, err = p.Next(context.Background(), "Q", "missing", 0)
	require.True(t, errors.Is(err, pull.ErrPull), "got %v", err)
}

func TestPuller_BatchTakesUpToNInOnePull(t *testing.T) {
	js, _ := setup(t, 30*time.Second)
	p, err := pull.New(js)
	require.NoError(t, err)
	defer p.Close()
	ctx := context.Background()
	publish(t, js, 5)
	seen(t, js, 5)

	tests := []struct {
		name string
		n    int
		want []string
	}{
		{"fewer than wait: n of them, in order", 3, []string{"m0", "m1", "m2"}},
		{"more than wait: those there are, and no error", 5, []string{"m3", "m4"}},
		{"none wait: none, and no error", 2, nil},
	}
	for _, tt := range tests {
		ms, err := p.Batch(ctx, "Q", "c", tt.n)
		require.NoError(t, err, tt.name)
		var got []string
		for _, m := range ms {
			got = append(got, string(m.Data()))
			require.NoError(t, m.Ack())
		}
		require.Equal(t, tt.want, got, tt.name)
	}
}
