package lease_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/lease"
)

func workerLease(t *testing.T, js jetstream.JetStream, bucket, id string, now func() time.Time) *lease.Lease {
	t.Helper()
	l, err := lease.New(context.Background(), js, lease.Config{Bucket: bucket, Key: lease.WorkerEntry(id), Holder: id, TTL: time.Second, Now: now})
	require.NoError(t, err)
	require.NoError(t, l.Claim(context.Background()))
	return l
}

func TestClaimKey_OneLiveWorkerHoldsAKey(t *testing.T) {
	js, bucket := setup(t)
	ctx := context.Background()
	a := workerLease(t, js, bucket, "a", nil)
	b := workerLease(t, js, bucket, "b", nil)

	owned, err := lease.ClaimKey(ctx, a, "key1", "fp")
	require.NoError(t, err)
	require.True(t, owned.Valid(time.Now()))
	_, err = lease.ClaimKey(ctx, b, "key1", "fp")
	require.ErrorIs(t, err, lease.ErrHeld, "a live worker's key is not taken")

	kv, err := js.KeyValue(ctx, bucket)
	require.NoError(t, err)
	rec, ok, err := lease.Holder(ctx, kv, "key1")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, "a", rec.Holder)

	// A release frees the key at once.
	require.NoError(t, owned.Release(ctx))
	require.False(t, owned.Valid(time.Now()))
	_, err = lease.ClaimKey(ctx, b, "key1", "fp")
	require.NoError(t, err)
}

func TestClaimKey_AKeyIsTakenOnlyOnceItsWorkersLeaseIsGoneAndItsHolderFenced(t *testing.T) {
	js, bucket := setup(t)
	ctx := context.Background()
	a := workerLease(t, js, bucket, "a", nil) // never renewed: a crash
	b := workerLease(t, js, bucket, "b", nil)
	owned, err := lease.ClaimKey(ctx, a, "key1", "fp")
	require.NoError(t, err)

	var took time.Time
	require.Eventually(t, func() bool {
		_ = b.Renew(ctx)
		if _, err := lease.ClaimKey(ctx, b, "key1", "fp"); err == nil {
			took = time.Now()
			return true
		}
		return false
	}, 5*time.Second, 20*time.Millisecond)
	require.False(t, owned.Covers(took), "the old holder stopped acting before the key was taken")
	require.False(t, a.Valid(took))
	require.False(t, owned.Valid(time.Now()))
}

func TestClaimKey_ARestartedWorkerDoesNotInheritItsOldSessionsKeys(t *testing.T) {
	js, bucket := setup(t)
	ctx := context.Background()
	kv, err := js.KeyValue(ctx, bucket)
	require.NoError(t, err)
	old := workerLease(t, js, bucket, "a", nil)
	_, err = lease.ClaimKey(ctx, old, "key1", "fp")
	require.NoError(t, err)
	// The same id comes back with a new session once the old lease is gone.
	require.NoError(t, old.Release(ctx))
	again := workerLease(t, js, bucket, "a", nil)
	_, ok, err := lease.Holder(ctx, kv, "key1")
	require.NoError(t, err)
	require.False(t, ok, "the key's entry names a session that is gone")
	_, err = lease.ClaimKey(ctx, again, "key1", "fp")
	require.NoError(t, err)
}

func TestTable_ShowsWorkersAndKeysAndWhenAKeyIsTaken(t *testing.T) {
	js, bucket := setup(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	kv, err := js.KeyValue(ctx, bucket)
	require.NoError(t, err)
	table := lease.NewTable()
	go func() { _ = table.Run(ctx, kv) }()

	a := workerLease(t, js, bucket, "a", nil)
	owned, err := lease.ClaimKey(ctx, a, "key1", "fp")
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		v := table.View()
		r, held := v.Held("key1")
		return table.Ready() && held && r.Holder == "a"
	}, 5*time.Second, 5*time.Millisecond)
	require.False(t, table.TakenFrom("key1", owned.Revision(), a.Session()))

	err = kv.Delete(ctx, lease.KeyEntry("key1"))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return table.TakenFrom("key1", owned.Revision(), a.Session()) }, 5*time.Second, 5*time.Millisecond,
		"an operator's delete is seen as the key taken")
}
