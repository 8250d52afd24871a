package worker

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
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

	clock := testenv.NewClock(time.Now())
	m := newMarks(kv, time.Hour, clock.Now)
	_, known := m.lookup("u.alice.before")
	require.False(t, known, "nothing is known before the watch has run")

	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- m.run(wctx) }()
	marked := func(key string, want bool) func() bool {
		return func() bool { got, known := m.lookup(key); return known && got == want }
	}
	require.Eventually(t, marked("u.alice.before", true), 5*time.Second, time.Millisecond, "a mark written before the watch")
	require.True(t, marked("u.alice.other", false)())

	_, err = kv.Put(ctx, "u.alice.after", nil)
	require.NoError(t, err)
	require.Eventually(t, marked("u.alice.after", true), 5*time.Second, time.Millisecond, "a mark written while the watch runs")
	require.NoError(t, kv.Delete(ctx, "u.alice.after"))
	require.Eventually(t, marked("u.alice.after", false), 5*time.Second, time.Millisecond, "a deleted mark")

	// The bucket's max_age has removed every mark; the watcher's next read of
	// the bucket makes the copy fresh at the new time.
	clock.Add(time.Hour)
	require.Eventually(t, marked("u.alice.before", false), 5*time.Second, 10*time.Millisecond, "a mark older than max_age is gone from the bucket too")

	stop()
	require.NoError(t, <-done)
	_, known = m.lookup("u.alice.before")
	require.False(t, known, "once the watch has ended, callers read the bucket")
}

// entry is one update of a watch of the cancels bucket.
type entry struct {
	jetstream.KeyValueEntry
	key string
	rev uint64
}

func (e entry) Key() string                     { return e.key }
func (e entry) Revision() uint64                { return e.rev }
func (e entry) Created() time.Time              { return time.Time{} }
func (e entry) Operation() jetstream.KeyValueOp { return jetstream.KeyValuePut }

// TestMarks_AnswerOnlyWhileKnownFresh: the copy answers only within marksLag
// of an instant it is known to hold every mark written before: the watch's
// start once its content is in, then each read of the bucket's last sequence
// once the watch has delivered up to it. A watch that falls behind makes
// lookups say they do not know.
func TestMarks_AnswerOnlyWhileKnownFresh(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := testenv.NewClock(t0)
	m := newMarks(nil, 0, clock.Now)
	known := func() bool { _, k := m.lookup("u.a.x"); return k }

	m.apply(nil, t0) // the bucket's content as of t0 is in
	clock.Add(marksLag)
	require.True(t, known(), "within the lag of the watch's start")
	clock.Add(time.Millisecond)
	require.False(t, known(), "past it, with nothing newer known")

	m.apply(entry{key: "u.a.y", rev: 3}, t0)
	m.reached(clock.Now(), 3) // the watch has delivered up to the bucket's last
	require.True(t, known(), "fresh as of this read")

	clock.Add(time.Second)
	read := clock.Now()
	m.reached(read, 5) // the bucket holds more than the watch has delivered
	clock.Add(marksLag + time.Millisecond)
	require.False(t, known(), "the watch is behind the last read: the copy is not trusted")
	m.apply(entry{key: "u.a.z", rev: 5}, t0)
	require.False(t, known(), "caught up with a read made just over the lag ago: still past it")
	clock.Add(-time.Second)
	require.True(t, known(), "within the lag of the read the watch caught up with")
}
