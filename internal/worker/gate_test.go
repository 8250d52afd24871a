package worker

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/limiter"
)

// stallingNonces hands out nonces from 1, each after a delay: a key-state
// reservation stalled on NATS.
type stallingNonces struct {
	mu    sync.Mutex
	next  int64
	stall time.Duration
}

func (n *stallingNonces) take(ctx context.Context) (int64, error) {
	if err := sleep(ctx, n.stall, nil); err != nil {
		return 0, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.next++
	return n.next, nil
}

func TestGate_ALeaseThatLapsesDuringANonceStallSendsNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lim, err := weightSet(limiter.Config{})
		require.NoError(t, err)
		validUntil := time.Now().Add(2 * time.Second)
		g := newGate(lim, func(now time.Time) bool { return now.Before(validUntil) }, time.Now,
			&stallingNonces{stall: 5 * time.Second})

		_, err = g.acquire(t.Context())
		require.ErrorIs(t, err, errLeaseLost, "the lease is checked after the nonce, not before")
		require.Zero(t, lim.State().Sends, "nothing was sent")
		require.Equal(t, 5*time.Second, time.Since(validUntil.Add(-2*time.Second)))
	})
}

func TestGate_PipelinesSendsInNonceOrderWithinTheLimitersBounds(t *testing.T) {
	const (
		n   = 45
		l   = 50 * time.Millisecond
		rtt = 180 * time.Millisecond // longer than L: several sends of the key are in flight
	)
	synctest.Test(t, func(t *testing.T) {
		lim, err := weightSet(limiter.Config{MaxDelay: l})
		require.NoError(t, err)
		g := newGate(lim, func(time.Time) bool { return true }, time.Now, &stallingNonces{})

		type sent struct {
			at     time.Time
			nonce  int64
			answer time.Time
		}
		var (
			mu       sync.Mutex
			sends    []sent
			inFlight int
			most     int
			wg       sync.WaitGroup
		)
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s, err := g.acquire(t.Context())
				if !assertNoError(t, err) {
					return
				}
				now := time.Now()
				g.wrote(s, now)
				mu.Lock()
				inFlight++
				most = max(most, inFlight)
				mu.Unlock()
				time.Sleep(rtt)
				g.done(s, false, func(p Pacer) { p.Answered(s.ticket, time.Now()) })
				mu.Lock()
				inFlight--
				sends = append(sends, sent{at: s.at, nonce: s.nonce, answer: time.Now()})
				mu.Unlock()
			}()
		}
		wg.Wait()

		require.Len(t, sends, n)
		require.GreaterOrEqual(t, most, 3, "several requests of the key were in flight at once")
		byTime := make(map[int64]sent, n)
		for _, s := range sends {
			byTime[s.nonce] = s
		}
		for k := int64(2); k <= n; k++ {
			prev, cur := byTime[k-1], byTime[k]
			// Order: each send leaves after the previous one's latest arrival.
			require.GreaterOrEqual(t, cur.at.Sub(prev.at), l+time.Millisecond, "nonce %d left too soon after %d", k, k-1)
			if k > 20 {
				// Window: 20 sends per more than a second of arrivals.
				old := byTime[k-20]
				require.Greater(t, cur.at.Sub(old.at.Add(l)), time.Second, "nonce %d and %d fall in one window", k, k-20)
			}
		}
	})
}

func TestGate_NoSendLeavesWhileA429IsBeingWritten(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lim, err := weightSet(limiter.Config{})
		require.NoError(t, err)
		g := newGate(lim, func(time.Time) bool { return true }, time.Now, &stallingNonces{})
		s, err := g.acquire(t.Context())
		require.NoError(t, err)
		g.wrote(s, time.Now())
		release := g.done(s, true, func(p Pacer) { p.Rejected(s.ticket, time.Now(), 0) })

		granted := make(chan time.Time, 1)
		go func() {
			if _, err := g.acquire(t.Context()); assertNoError(t, err) {
				granted <- time.Now()
			}
		}()
		pause := lim.NextC(time.Now(), nil)
		time.Sleep(5 * time.Second) // far past the 429's pause
		synctest.Wait()
		require.Empty(t, granted, "a send left before the 429 was written")
		held := time.Now()
		release()
		synctest.Wait()
		require.Equal(t, held, <-granted, "the send leaves as soon as the 429 is written")
		require.True(t, held.After(pause))
	})
}

func TestGate_AQuarantinedKeyRefusesAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lim, err := limiter.RestoreSet(limiter.SetConfig{Dims: []limiter.Dimension{{Name: DimWeight, Rules: []limiter.Rule{limiter.DefaultRule}}}},
			limiter.State{Version: limiter.StateVersion, Rejections: 3})
		require.NoError(t, err)
		g := newGate(lim, func(time.Time) bool { return true }, time.Now, &stallingNonces{})
		_, err = g.acquire(t.Context())
		require.ErrorIs(t, err, errQuarantined)
	})
}

// assertNoError reports err to t from any goroutine, and whether it was nil.
func assertNoError(t *testing.T, err error) bool {
	if err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("unexpected error: %v", err)
		return false
	}
	return err == nil
}

// weightSet is the production pacer of an upstream counting weight by cfg's
// rules (the reference's when none).
func weightSet(cfg limiter.Config) (*limiter.Set, error) {
	rules := cfg.Rules
	if len(rules) == 0 {
		rules = []limiter.Rule{limiter.DefaultRule}
	}
	return limiter.NewSet(limiter.SetConfig{Config: cfg, Dims: []limiter.Dimension{{Name: DimWeight, Rules: rules}}})
}

func TestGate_OnlyTheRequestsOwnDeadlineMakesItStale(t *testing.T) {
	cases := []struct {
		name  string
		ttl   time.Duration // the request's time left when it reaches the gate
		stale bool
	}{
		// Key state does not answer: the nonce reservation times out (nonceTimeout,
		// as after a pause of the process) while the request is still fresh.
		{name: "nonce reservation timed out", ttl: time.Minute, stale: false},
		{name: "request's deadline passed first", ttl: nonceTimeout / 2, stale: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				lim, err := weightSet(limiter.Config{})
				require.NoError(t, err)
				stalled := func(ctx context.Context) (int64, error) { <-ctx.Done(); return 0, ctx.Err() }
				n := newNonces(t.Context(), 10, stalled)
				g := newGate(lim, func(time.Time) bool { return true }, time.Now, n)

				ctx := t.Context()
				wait, cancel := context.WithTimeout(ctx, tc.ttl)
				defer cancel()
				_, err = g.acquire(wait)
				require.ErrorIs(t, err, context.DeadlineExceeded)
				require.Equal(t, tc.stale, staleAtGate(ctx, wait, err))
				n.wait()
			})
		})
	}
}
