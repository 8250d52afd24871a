package worker_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/exchange"
	"github.com/ratefleet/ratefleet/internal/streams"
	"github.com/ratefleet/ratefleet/internal/testenv"
)

func TestWorker_ASendLongerThanTheAckWaitIsSentOnce(t *testing.T) {
	// The ack wait is 1 s and the upstream answers after 1.5 s: the message
	// stays in progress for the whole send, so the server does not deliver it
	// again meanwhile, and no second worker sends it again.
	ex := fastExchange()
	ex.OutDelay = exchange.DelayRange{Min: 1500 * time.Millisecond, Max: 1500 * time.Millisecond}
	env := testenv.Start(t, testenv.Options{Exchange: ex, Streams: func(c *streams.Config) {
		c.Requests.Consumer.AckWait = time.Second
	}})
	ids := publishRequests(t, env, 4, time.Minute)
	startWorkers(t, env, 2, exchange.DefaultKeys()[:2])
	waitDrained(t, env, 30*time.Second)

	st := env.Exchange.Stats()
	require.Equal(t, len(ids), st.DistinctIDs)
	require.Zero(t, st.Duplicates, "a request the upstream received twice: %v", st.DuplicateIDs)
	require.Equal(t, uint64(len(ids)), st.OK)
}
