package worker

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/testenv"
)

// TestMarks_FollowTheBucket: the copy knows nothing until the watch has
// delivered the bucket's content, then has every mark written before and after,
// drops a deleted one and one older than the bucket's max_age, and stops
// answering once the watch ends, so callers read the bucket again.
func TestMarks_FollowTheBucket(t *testing.T) {
	c := testenv.NATS(t, nil)
	ctx := context.Background()
	kv, err := c.JS.KeyValue(ctx, c.Streams.KV.Cancels.Bucket)
	require.NoError(t, err)
	_, err = kv.Put(ctx, "u.alice.before", nil)
	require.NoError(t, err)

	now := time.Now()
	m := newMarks(kv, time.Hour, func() time.Time { return now })
	_, known := m.lookup("u.alice.before")
	require.False(t, known, "nothing is known before the watch has run")

	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- m.run(wctx) }()
	marked := func(key string) func() bool {
		return func() bool { got, known := m.lookup(key); return known && got }
	}
	require.Eventually(t, marked("u.alice.before"), 5*time.Second, time.Millisecond, "a mark written before the watch")
	got, known := m.lookup("u.alice.other")
	require.True(t, known)
	require.False(t, got)

	_, err = kv.Put(ctx, "u.alice.after", nil)
	require.NoError(t, err)
	require.Eventually(t, marked("u.alice.after"), 5*time.Second, time.Millisecond, "a mark written while the watch runs")
	require.NoError(t, kv.Delete(ctx, "u.alice.after"))
	require.Eventually(t, func() bool { got, known := m.lookup("u.alice.after"); return known && !got }, 5*time.Second, time.Millisecond, "a deleted mark")

	now = now.Add(time.Hour) // the bucket's max_age has removed every mark
	got, known = m.lookup("u.alice.before")
	require.True(t, known)
	require.False(t, got, "a mark older than max_age is gone from the bucket too")

	stop()
	require.NoError(t, <-done)
	_, known = m.lookup("u.alice.before")
	require.False(t, known, "once the watch has ended, callers read the bucket")
}
