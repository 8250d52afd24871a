package lease_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/embedded"
	"github.com/ratefleet/ratefleet/internal/lease"
	"github.com/ratefleet/ratefleet/internal/natsconn"
	"github.com/ratefleet/ratefleet/internal/testenv"
)

func setup(t *testing.T) (jetstream.JetStream, string) {
	t.Helper()
	s, err := embedded.Start(embedded.Options{})
	require.NoError(t, err)
	t.Cleanup(s.Shutdown)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := natsconn.Open(ctx, natsconn.Options{URL: s.ClientURL(), Name: "lease-test", Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	t.Cleanup(c.NC.Close)
	return c.JS, c.Streams.KV.Leases.Bucket
}

func newLease(t *testing.T, js jetstream.JetStream, bucket, holder string, now func() time.Time) *lease.Lease {
	t.Helper()
	l, err := lease.New(context.Background(), js, lease.Config{Bucket: bucket, Key: "key1", Holder: holder, TTL: time.Second, Now: now})
	require.NoError(t, err)
	return l
}

func TestLease_OneHolderAtATime(t *testing.T) {
	js, bucket := setup(t)
	ctx := context.Background()
	var ls []*lease.Lease
	for _, h := range []string{"a", "b", "c", "d"} {
		ls = append(ls, newLease(t, js, bucket, h, nil))
	}
	var wg sync.WaitGroup
	errs := make([]error, len(ls))
	for i, l := range ls {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = l.Claim(ctx) }()
	}
	wg.Wait()
	held := 0
	for i, err := range errs {
		if err == nil {
			held++
			require.Equal(t, lease.Held, ls[i].State())
		} else {
			require.ErrorIs(t, err, lease.ErrHeld)
			require.Equal(t, lease.Standby, ls[i].State())
		}
	}
	require.Equal(t, 1, held, "exactly one concurrent claim wins")
}

func TestLease_RenewKeepsItAlivePastTheTTL(t *testing.T) {
	js, bucket := setup(t)
	ctx := context.Background()
	a := newLease(t, js, bucket, "a", nil)
	b := newLease(t, js, bucket, "b", nil)
	require.NoError(t, a.Claim(ctx))
	deadline := time.Now().Add(2500 * time.Millisecond)
	for time.Now().Before(deadline) {
		require.NoError(t, a.Renew(ctx))
		require.ErrorIs(t, b.Claim(ctx), lease.ErrHeld)
		time.Sleep(100 * time.Millisecond) // renewal cadence, well inside the 1 s TTL and its margin
	}
	kv, err := js.KeyValue(ctx, bucket)
	require.NoError(t, err)
	e, err := kv.Get(ctx, "key1")
	require.NoError(t, err)
	var rec lease.Record
	require.NoError(t, json.Unmarshal(e.Value(), &rec))
	require.Equal(t, "a", rec.Holder)
	require.Equal(t, a.Session(), rec.Session)
}

func TestLease_LapsesWhenNotRenewedAndTheOldHolderIsFenced(t *testing.T) {
	js, bucket := setup(t)
	ctx := context.Background()
	a := newLease(t, js, bucket, "a", nil)
	b := newLease(t, js, bucket, "b", nil)
	require.NoError(t, a.Claim(ctx))
	validUntil := a.ValidUntil()

	// b can claim only after the server expired a's entry, and by then a is no
	// longer valid on its own clock.
	require.Eventually(t, func() bool { return b.Claim(ctx) == nil }, 5*time.Second, 20*time.Millisecond)
	require.True(t, time.Now().After(validUntil), "the entry outlives the holder's validity")
	require.False(t, a.Valid(time.Now()))
	require.Equal(t, lease.Lost, a.State())
	require.ErrorIs(t, a.Renew(ctx), lease.ErrLost, "a lost lease is never renewed")
	require.True(t, b.Valid(time.Now()))
}

func TestLease_FencedByItsOwnClock(t *testing.T) {
	js, bucket := setup(t)
	ctx := context.Background()
	c := testenv.NewClock(time.Unix(1000, 0))
	a := newLease(t, js, bucket, "a", c.Now)
	require.NoError(t, a.Claim(ctx))
	tests := []struct {
		advance time.Duration
		valid   bool
	}{
		{0, true},
		{600 * time.Millisecond, true},
		{67 * time.Millisecond, false},   // 1 s TTL − 1/3 s margin = 666.67 ms
		{-500 * time.Millisecond, false}, // once lost, lost for good
	}
	for _, tt := range tests {
		c.Add(tt.advance)
		require.Equal(t, tt.valid, a.Valid(c.Now()), "at %s", c.Now())
	}
	require.ErrorIs(t, a.Renew(ctx), lease.ErrLost)
}

func TestLease_RenewAfterTakeoverIsLost(t *testing.T) {
	js, bucket := setup(t)
	ctx := context.Background()
	c := testenv.NewClock(time.Now())
	a := newLease(t, js, bucket, "a", c.Now)
	b := newLease(t, js, bucket, "b", nil)
	require.NoError(t, a.Claim(ctx))
	// a is paused (its clock does not move) while the entry expires and b claims.
	require.Eventually(t, func() bool { return b.Claim(ctx) == nil }, 5*time.Second, 20*time.Millisecond)
	require.ErrorIs(t, a.Renew(ctx), lease.ErrLost, "the compare-and-set sees b's revision")
	require.False(t, a.Valid(c.Now()))
}

func TestLease_ReleaseLetsAStandbyClaimAtOnce(t *testing.T) {
	js, bucket := setup(t)
	ctx := context.Background()
	a := newLease(t, js, bucket, "a", nil)
	b := newLease(t, js, bucket, "b", nil)
	require.NoError(t, a.Claim(ctx))
	require.ErrorIs(t, b.Claim(ctx), lease.ErrHeld)
	require.NoError(t, a.Release(ctx))
	require.Equal(t, lease.Standby, a.State())
	require.NoError(t, b.Claim(ctx), "no wait for the TTL")
	require.NoError(t, a.Release(ctx), "releasing a lease not held is a no-op")
	require.True(t, b.Valid(time.Now()))
}
