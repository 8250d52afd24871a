package embedded_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/embedded"
)

func TestServer_StoresAcrossRestart(t *testing.T) {
	s, err := embedded.Start(embedded.Options{})
	require.NoError(t, err)
	t.Cleanup(s.Shutdown)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	nc, err := nats.Connect(s.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t"}})
	require.NoError(t, err)
	_, err = js.Publish(ctx, "t", []byte("kept"))
	require.NoError(t, err)

	url := s.ClientURL()
	require.NoError(t, s.Restart())
	require.Equal(t, url, s.ClientURL(), "a restarted server keeps its address")

	require.Eventually(t, nc.IsConnected, 10*time.Second, 20*time.Millisecond)
	var msg *jetstream.RawStreamMsg
	require.Eventually(t, func() bool {
		st, err := js.Stream(ctx, "T")
		if err != nil {
			return false
		}
		msg, err = st.GetMsg(ctx, 1)
		return err == nil
	}, 10*time.Second, 50*time.Millisecond)
	require.Equal(t, "kept", string(msg.Data))
}

func TestCluster_SurvivesLossOfOneNode(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three servers")
	}
	c, err := embedded.StartCluster("rf")
	require.NoError(t, err)
	t.Cleanup(c.Shutdown)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	nc, err := nats.Connect(c.ClientURLs(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "R3", Subjects: []string{"r3"}, Replicas: 3})
		return err == nil
	}, 90*time.Second, 200*time.Millisecond, "three servers on a loaded machine (the race detector, other packages' tests) can take more than 30 s to form a cluster that takes a replicated stream")
	// A new replicated stream answers once its replicas have elected a leader.
	publish := func(data string) bool {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := js.Publish(pctx, "r3", []byte(data))
		return err == nil
	}
	require.Eventually(t, func() bool { return publish("one") }, 30*time.Second, 200*time.Millisecond)

	c.StopNode(0)
	require.NoError(t, c.WaitForLeader(30*time.Second))
	require.Eventually(t, func() bool { return publish("two") }, 45*time.Second, 200*time.Millisecond,
		"a replicated stream takes writes with one node down")

	require.NoError(t, c.StartNode(0))
	require.Eventually(t, func() bool {
		st, err := js.Stream(ctx, "R3")
		return err == nil && st.CachedInfo().State.Msgs >= 2
	}, 30*time.Second, 200*time.Millisecond, "both messages kept after the node rejoined")
}

func TestCluster_IsolatedLeaderLosesNoAcknowledgedWrite(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three servers")
	}
	c, err := embedded.StartClusterWith("rp", embedded.ClusterOptions{ProxyRoutes: true})
	require.NoError(t, err)
	t.Cleanup(c.Shutdown)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	connect := func(url string) jetstream.JetStream {
		nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
		require.NoError(t, err)
		t.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		require.NoError(t, err)
		return js
	}
	// Every call that waits on the cluster has a bound of its own: a request lost
	// while routes form or break is retried rather than waited on.
	short := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, 3*time.Second) }
	js := connect(c.ClientURLs())
	require.Eventually(t, func() bool {
		cctx, cancel := short()
		defer cancel()
		_, err := js.CreateStream(cctx, jetstream.StreamConfig{Name: "P", Subjects: []string{"p"}, Replicas: 3})
		return err == nil
	}, 60*time.Second, 200*time.Millisecond)
	nodeNamed := func(name string) int {
		for i, n := range c.Nodes {
			if n.NATS().Name() == name {
				return i
			}
		}
		return -1
	}
	streamLeader := func(js jetstream.JetStream) int {
		sctx, cancel := short()
		defer cancel()
		st, err := js.Stream(sctx, "P")
		if err != nil || st.CachedInfo().Cluster == nil {
			return -1
		}
		return nodeNamed(st.CachedInfo().Cluster.Leader)
	}
	// The stream's leader is moved to the meta leader, so that isolating one node
	// takes both leaders away from the majority.
	require.Eventually(t, func() bool {
		meta, lead := c.MetaLeader(), streamLeader(js)
		if meta < 0 || lead < 0 {
			return false
		}
		if meta == lead {
			return true
		}
		req := fmt.Sprintf(`{"placement":{"preferred":%q}}`, c.Nodes[meta].NATS().Name())
		_, _ = js.Conn().Request("$JS.API.STREAM.LEADER.STEPDOWN.P", []byte(req), 2*time.Second)
		return false
	}, 60*time.Second, 500*time.Millisecond, "the stream's leader moves to the meta leader")
	leader := c.MetaLeader()
	majority := (leader + 1) % len(c.Nodes)

	var acked ackedSet
	publish := func(js jetstream.JetStream, id string) bool {
		pctx, cancel := short()
		defer cancel()
		if _, err := js.Publish(pctx, "p", []byte(id), jetstream.WithMsgID(id)); err != nil {
			return false
		}
		acked.add(id)
		return true
	}
	for i := range 20 {
		require.Eventually(t, func() bool { return publish(js, fmt.Sprintf("before-%d", i)) }, 30*time.Second, 100*time.Millisecond)
	}

	require.NoError(t, c.Isolate(leader))
	require.Eventually(t, func() bool { return c.Nodes[leader].NATS().NumRoutes() == 0 }, 10*time.Second, 20*time.Millisecond,
		"the isolated node keeps no route: none goes around its proxies")
	// Both sides keep publishing, each from a client connected to a node of its own
	// side; only what is acknowledged counts.
	sides := map[string]jetstream.JetStream{"minority": connect(c.Nodes[leader].ClientURL()), "majority": connect(c.Nodes[majority].ClientURL())}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for side, sideJS := range sides {
		wg.Go(func() {
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				publish(sideJS, fmt.Sprintf("%s-%d", side, n))
			}
		})
	}
	require.Eventually(t, func() bool {
		l := streamLeader(sides["majority"])
		return l >= 0 && l != leader
	}, 60*time.Second, 100*time.Millisecond, "the majority elects a new stream leader")
	require.Eventually(t, func() bool { return acked.count("majority-") >= 10 }, 60*time.Second, 100*time.Millisecond,
		"the new leader takes writes from a client connected to a majority node")
	require.Eventually(t, func() bool {
		for i, n := range c.Nodes {
			if i != leader && n.NATS().JetStreamIsLeader() {
				return true
			}
		}
		return false
	}, 60*time.Second, 100*time.Millisecond, "the majority elects a new meta leader")
	close(stop)
	wg.Wait()

	require.NoError(t, c.HealAll())
	require.Eventually(t, func() bool { return publish(sides["minority"], "after-heal") }, 60*time.Second, 200*time.Millisecond,
		"the node cut off takes writes again once healed")
	var last uint64
	var cons jetstream.Consumer
	require.Eventually(t, func() bool {
		cctx, cancel := short()
		defer cancel()
		st, err := js.Stream(cctx, "P")
		if err != nil {
			return false
		}
		last = st.CachedInfo().State.LastSeq
		cons, err = st.OrderedConsumer(cctx, jetstream.OrderedConsumerConfig{})
		return err == nil
	}, 30*time.Second, 200*time.Millisecond)
	stored := map[string]bool{}
	for seq := uint64(0); seq < last; {
		require.NoError(t, ctx.Err())
		batch, err := cons.Fetch(500, jetstream.FetchMaxWait(2*time.Second))
		require.NoError(t, err)
		for m := range batch.Messages() {
			stored[string(m.Data())] = true
			md, err := m.Metadata()
			require.NoError(t, err)
			seq = md.Sequence.Stream
		}
	}
	ids := acked.all()
	t.Logf("%d messages acknowledged (%d by the minority while cut off), %d stored", len(ids), acked.count("minority-"), len(stored))
	for _, id := range ids {
		require.True(t, stored[id], "acknowledged message %s is missing after the heal", id)
	}
	require.Zero(t, acked.count("minority-"), "a node cut off from the others acknowledged a write")
}

// ackedSet is the ids the stream acknowledged, safe for concurrent use.
type ackedSet struct {
	mu  sync.Mutex
	ids []string
}

func (a *ackedSet) add(id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.ids = append(a.ids, id)
}

func (a *ackedSet) all() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.ids)
}

func (a *ackedSet) count(prefix string) int {
	n := 0
	for _, id := range a.all() {
		if strings.HasPrefix(id, prefix) {
			n++
		}
	}
	return n
}
