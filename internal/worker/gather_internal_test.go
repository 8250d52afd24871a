package worker

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/testenv"
)

// gatherEnv starts a server with a work queue "Q" holding n messages and a pull
// consumer "c", and a gatherer of it with the given window.
func gatherEnv(t *testing.T, n int, window time.Duration) (*gatherer, jetstream.Consumer) {
	t.Helper()
	js := testenv.NATS(t, nil).JS
	ctx := context.Background()
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "Q", Subjects: []string{"q.>"}, Retention: jetstream.WorkQueuePolicy})
	require.NoError(t, err)
	cons, err := st.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "c", AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Minute})
	require.NoError(t, err)
	for i := range n {
		_, err := js.Publish(ctx, "q.x", fmt.Appendf(nil, "m%d", i))
		require.NoError(t, err)
	}
	g, err := newGatherer(js, "Q", "c", window)
	require.NoError(t, err)
	t.Cleanup(g.close)
	return g, cons
}

// takeAll makes looks concurrent looks and returns what each got.
func takeAll(t *testing.T, g *gatherer, looks int) []jetstream.Msg {
	t.Helper()
	got := make([]jetstream.Msg, looks)
	var wg sync.WaitGroup
	for i := range looks {
		wg.Go(func() {
			m, err := g.take(context.Background())
			require.NoError(t, err)
			got[i] = m
		})
	}
	wg.Wait()
	return got
}

// The looks of a worker's keys within the window go out as one pull, and each
// gets a request of its own, or none when the queue had fewer.
func TestGatherer_LooksWithinTheWindowShareOnePull(t *testing.T) {
	tests := []struct {
		name      string
		queued    int
		looks     int
		wantMsgs  int
		wantPulls int64
	}{
		{"as many queued as looks", 10, 10, 10, 1},
		{"fewer queued: the rest get none", 3, 6, 3, 1},
		{"none queued", 0, 4, 0, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, _ := gatherEnv(t, tt.queued, 300*time.Millisecond)
			seen := map[string]bool{}
			for _, m := range takeAll(t, g, tt.looks) {
				if m == nil {
					continue
				}
				require.False(t, seen[string(m.Data())], "a request goes to one look")
				seen[string(m.Data())] = true
				require.NoError(t, m.Ack())
			}
			require.Len(t, seen, tt.wantMsgs)
			require.Equal(t, tt.wantPulls, g.pulls.Load())
		})
	}
}

// A look goes with the others only while looks come less than a quarter of the
// window apart, or a pull is already being gathered; otherwise its session
// pulls its own. Its session looks the window earlier only while looks go
// together.
func TestGatherer_HoldsALookOnlyWhereOthersAreExpected(t *testing.T) {
	tests := []struct {
		name    string
		gap     time.Duration // between the looks so far
		running bool
		want    bool
	}{
		{"looks a millisecond apart", time.Millisecond, false, true},
		{"looks 10.5 ms apart: five keys", 10500 * time.Microsecond, false, false},
		{"looks 50 ms apart: one key", 50 * time.Millisecond, false, false},
		{"looks 50 ms apart, a pull being gathered", 50 * time.Millisecond, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, _ := gatherEnv(t, 0, gatherWindow)
			now := time.Now()
			g.mu.Lock()
			for i := range 8 {
				g.pace.Arrive(now.Add(time.Duration(i-8) * tt.gap))
			}
			g.running = tt.running
			g.mu.Unlock()
			q := &queues{batch: ring{srcs: []source{{g: g}}}}
			wantLead := pullLead
			if tt.want {
				wantLead += gatherWindow
			}
			require.Equal(t, wantLead, q.lead())
			require.Equal(t, tt.want, g.hold(now))
			g.mu.Lock()
			g.running = false
			g.mu.Unlock()
		})
	}
}

// A look that ends before its pull is answered takes nothing: the request goes
// to a look still waiting, delivered once.
func TestGatherer_ALookThatEndsTakesNothing(t *testing.T) {
	g, cons := gatherEnv(t, 1, 300*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	ended := make(chan error, 1)
	go func() {
		_, err := g.take(ctx)
		ended <- err
	}()
	time.Sleep(50 * time.Millisecond) // the first look waits in the window
	waiting := make(chan jetstream.Msg, 1)
	go func() {
		m, err := g.take(context.Background())
		require.NoError(t, err)
		waiting <- m
	}()
	cancel()
	require.ErrorIs(t, <-ended, context.Canceled)
	m := <-waiting
	require.NotNil(t, m, "the look still waiting gets the request")
	require.Equal(t, "m0", string(m.Data()))
	md, err := m.Metadata()
	require.NoError(t, err)
	require.Equal(t, uint64(1), md.NumDelivered, "delivered once: never given back")
	require.NoError(t, m.DoubleAck(context.Background()))
	info, err := cons.Info(context.Background())
	require.NoError(t, err)
	require.Zero(t, info.NumAckPending)
}
