package embedded_test

import (
	"context"
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
	}, 30*time.Second, 200*time.Millisecond)
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
