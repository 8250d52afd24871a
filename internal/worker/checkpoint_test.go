package worker_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/exchange"
	"github.com/ratefleet/ratefleet/internal/keystate"
	"github.com/ratefleet/ratefleet/internal/limiter"
	"github.com/ratefleet/ratefleet/internal/testenv"
	"github.com/ratefleet/ratefleet/internal/worker"
)

// TestWorkers_ACrashResumesFromTheLastCheckpoint crashes a key's holder under
// an hour's rule: with checkpoints the next holder resumes from the hour's
// count (the crashed one's sends, plus what it may have sent since its last
// checkpoint), without them it waits for the hour.
func TestWorkers_ACrashResumesFromTheLastCheckpoint(t *testing.T) {
	lc := limiter.Config{
		Rules:    []limiter.Rule{{Limit: 5, Window: time.Second}, {Limit: 30, Window: time.Hour}},
		MaxDelay: 50 * time.Millisecond,
	}
	tests := []struct {
		name       string
		checkpoint time.Duration
		// second is what the next holder sends within the hour: 30, less the
		// first holder's 20, less what it may have sent in a checkpoint's span
		// of 400 ms (the 1 s rule's 5).
		second int64
	}{
		{name: "with checkpoints", checkpoint: 200 * time.Millisecond, second: 30 - 20 - 5},
		{name: "without", checkpoint: -1, second: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := testenv.Start(t, testenv.Options{})
			srv, answered := countingUpstream(t)
			store, err := keystate.Open(context.Background(), env.Conn.JS, env.Conn.Streams.KV.KeyState.Bucket)
			require.NoError(t, err)
			ks := exchange.DefaultKeys()[:1]

			publishRequests(t, env, 20, 5*time.Minute)
			first := startCheckpointing(t, env, "first", srv.URL, lc, tt.checkpoint)
			require.Eventually(t, func() bool { return answered.Load() == 20 }, 30*time.Second, 10*time.Millisecond)
			served := time.Now()
			if tt.checkpoint > 0 {
				// A checkpoint taken after the 20th answer.
				require.Eventually(t, func() bool {
					r, _, err := store.Get(context.Background(), ks[0].Name())
					return err == nil && r.CheckpointAt.After(served)
				}, 10*time.Second, 10*time.Millisecond)
			}
			first.crash()

			publishRequests(t, env, 20, 5*time.Minute)
			startCheckpointing(t, env, "second", srv.URL, lc, tt.checkpoint)
			if tt.second > 0 {
				require.Eventually(t, func() bool { return answered.Load() == 20+tt.second }, 30*time.Second, 10*time.Millisecond)
			}
			// Then nothing more within the hour, whatever the wait.
			require.Never(t, func() bool { return answered.Load() > 20+tt.second }, 6*time.Second, 50*time.Millisecond)
		})
	}
}

// startCheckpointing runs a worker on its own connection writing checkpoints
// every interval (none when negative).
func startCheckpointing(t *testing.T, env *testenv.Env, id, upstreamURL string, lc limiter.Config, interval time.Duration) *soloWorker {
	t.Helper()
	return startSoloWith(t, env, id, upstreamURL, 0, lc, exchange.DefaultKeys()[:1], 1, func(c *worker.Config) { c.Checkpoint = interval })
}

// countingUpstream answers every request 200 in the reference's format and
// counts them.
func countingUpstream(t *testing.T) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	answered := new(atomic.Int64)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		answered.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"OK"}`))
	}))
	t.Cleanup(srv.Close)
	return srv, answered
}

// TestWorker_StopsSendingWhenItsCheckpointsCannotBeWritten shows the span of a
// checkpoint fences the holder: once it cannot write a newer one, it sends
// nothing after the last one's span, lease or not, so that a crash then loses
// no more than the span to the next holder.
func TestWorker_StopsSendingWhenItsCheckpointsCannotBeWritten(t *testing.T) {
	env := testenv.Start(t, testenv.Options{})
	srv, answered := countingUpstream(t)
	store, err := keystate.Open(context.Background(), env.Conn.JS, env.Conn.Streams.KV.KeyState.Bucket)
	require.NoError(t, err)
	ks := exchange.DefaultKeys()[:1]

	publishRequests(t, env, 5, 5*time.Minute)
	startCheckpointing(t, env, "holder", srv.URL, limiter.Config{MaxDelay: 50 * time.Millisecond}, 200*time.Millisecond)
	require.Eventually(t, func() bool { return answered.Load() == 5 }, 30*time.Second, 10*time.Millisecond)

	// Key state now names another holder: the holder's checkpoints fail.
	_, err = store.Update(context.Background(), ks[0].Name(), func(r *keystate.Record) error {
		r.Holder = "someone-else"
		return nil
	})
	require.NoError(t, err)
	time.Sleep(time.Second) // past the last checkpoint's span of 400 ms
	publishRequests(t, env, 5, 5*time.Minute)
	require.Never(t, func() bool { return answered.Load() > 5 }, 3*time.Second, 50*time.Millisecond,
		"no send leaves after the last checkpoint's span")
}
