package keystate_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/keystate"
	"github.com/ratefleet/ratefleet/internal/testenv"
)

func open(t *testing.T) *keystate.Store {
	t.Helper()
	c := testenv.NATS(t, nil)
	st, err := keystate.Open(context.Background(), c.JS, c.Streams.KV.KeyState.Bucket)
	require.NoError(t, err)
	return st
}

func TestReserveNonces_BlocksNeverOverlapAcrossHoldersWhateverTheirClocks(t *testing.T) {
	st := open(t)
	ctx := context.Background()
	now := time.UnixMicro(5_000_000)
	tests := []struct {
		name  string
		clock time.Time
		want  int64
	}{
		{"first block starts at the clock in µs", now, 5_000_000},
		{"a holder whose clock is behind starts above the mark", now.Add(-time.Hour), 5_000_100},
		{"a holder whose clock is ahead jumps to it", now.Add(time.Second), 6_000_000},
	}
	for _, tt := range tests {
		first, err := st.ReserveNonces(ctx, "key1", 100, tt.clock)
		require.NoError(t, err)
		require.Equal(t, tt.want, first, tt.name)
	}
}

func TestReserveNonces_ConcurrentHoldersGetDisjointBlocks(t *testing.T) {
	st := open(t)
	ctx := context.Background()
	var (
		mu     sync.Mutex
		firsts []int64
		wg     sync.WaitGroup
	)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f, err := st.ReserveNonces(ctx, "key1", 10, time.UnixMicro(1))
			require.NoError(t, err)
			mu.Lock()
			firsts = append(firsts, f)
			mu.Unlock()
		}()
	}
	wg.Wait()
	seen := map[int64]bool{}
	for _, f := range firsts {
		for n := f; n < f+10; n++ {
			require.False(t, seen[n], "nonce %d handed out twice", n)
			seen[n] = true
		}
	}
}

func TestMarkUnusable_KeepsTheNonceMark(t *testing.T) {
	st := open(t)
	ctx := context.Background()
	_, err := st.ReserveNonces(ctx, "key2", 10, time.UnixMicro(100))
	require.NoError(t, err)
	require.NoError(t, st.MarkUnusable(ctx, "key2", "blocked", false, time.Now()))
	r, rev, err := st.Get(ctx, "key2")
	require.NoError(t, err)
	require.NotZero(t, rev)
	require.True(t, r.Unusable)
	require.Equal(t, "blocked", r.Reason)
	require.Equal(t, int64(109), r.NonceReserved)
}

func TestGet_RefusesARecordThatCannotBeTrusted(t *testing.T) {
	st := open(t)
	ctx := context.Background()
	tests := []struct {
		name, value string
	}{
		{"a nonce mark at the top of int64", `{"nonce":9223372036854775807}`},
		{"a negative nonce mark", `{"nonce":-5}`},
		{"a negative 429 count", `{"nonce":1,"count_429":-1}`},
		{"a handoff without its time", `{"nonce":1,"limiter":{"version":1}}`},
		{"not JSON", `nonce=1`},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := fmt.Sprintf("bad%d", i)
			_, err := st.KV().Put(ctx, key, []byte(tt.value))
			require.NoError(t, err)
			_, _, err = st.Get(ctx, key)
			require.ErrorIs(t, err, keystate.ErrInvalid)
			_, err = st.ReserveNonces(ctx, key, 10, time.Now())
			require.ErrorIs(t, err, keystate.ErrInvalid, "no nonce is reserved from a bad record")
		})
	}
}

func TestReserveNonces_NeverOverflows(t *testing.T) {
	st := open(t)
	ctx := context.Background()
	_, err := st.KV().Put(ctx, "full", fmt.Appendf(nil, `{"nonce":%d}`, keystate.MaxNonce-5))
	require.NoError(t, err)
	_, err = st.ReserveNonces(ctx, "full", 10, time.Now())
	require.ErrorIs(t, err, keystate.ErrInvalid)
	first, err := st.ReserveNonces(ctx, "full", 5, time.Now())
	require.NoError(t, err, "a block that fits below the ceiling")
	require.Equal(t, keystate.MaxNonce-4, first)
}

func TestRecord429_CountsTheKeysLifetimeAndKeepsTheWidestBound(t *testing.T) {
	st := open(t)
	ctx := context.Background()
	for i, l := range []time.Duration{100 * time.Millisecond, 50 * time.Millisecond, 200 * time.Millisecond} {
		n, err := st.Record429(ctx, "key1", l, time.Now())
		require.NoError(t, err)
		require.Equal(t, i+1, n)
	}
	r, _, err := st.Get(ctx, "key1")
	require.NoError(t, err)
	require.Equal(t, 3, r.Count429)
	require.Equal(t, 200*time.Millisecond, r.MaxDelay)
}
