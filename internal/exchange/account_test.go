package exchange

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/keys"
)

const testT0 = 1_700_000_000_000 // Unix ms, far from the ring's initial zeros

func TestAccount_MaxInWindowIsExactAndNeverAboveLimit(t *testing.T) {
	for _, tc := range []struct {
		limit  int
		window int64
		gapMax int64 // arrivals are 0..gapMax ms apart
	}{
		{20, 1000, 100},
		{20, 1000, 60},
		{3, 100, 50},
		{1, 10, 15},
		{5, 1000, 0},
		{5, 1000, 3000},
	} {
		t.Run(fmt.Sprintf("limit %d window %d gaps 0..%d", tc.limit, tc.window, tc.gapMax), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(tc.limit), uint64(tc.gapMax)))
			a := newAccount(keys.New("k", "s"), tc.limit, time.Duration(tc.window)*time.Millisecond, 0)
			var accepted []int64
			at := int64(testT0)
			for range 3000 {
				at += rng.Int64N(tc.gapMax + 1)
				v, _ := a.decide(at, "0") // nonce 0 is always bad: it tells acceptance apart
				if v == verdictRateLimited {
					continue
				}
				require.Equal(t, verdictBadNonce, v)
				accepted = append(accepted, at)
			}
			// Brute force: the most accepted arrivals in one span [t−window, t].
			most := 0
			for i, ti := range accepted {
				n := 0
				for _, tj := range accepted[:i+1] {
					if tj >= ti-tc.window {
						n++
					}
				}
				most = max(most, n)
			}
			assert.LessOrEqual(t, most, tc.limit)
			assert.Equal(t, most, a.counts.maxInWindow)
			assert.Equal(t, uint64(len(accepted)), a.counts.accepted)
		})
	}
}

func TestAccount_DecideFollowsTheRulesInOrder(t *testing.T) {
	a := newAccount(keys.New("k", "s"), 2, time.Second, 2)
	for i, tc := range []struct {
		at          int64
		nonce       string
		want        verdict
		wantBlocked bool
	}{
		{0, "1", verdictOK, false},
		{0, "x", verdictBadNonce, false},       // takes the second slot
		{1000, "2", verdictRateLimited, false}, // 1000 − 0 is not more than 1000
		{1000, "x", verdictRateLimited, true},  // the second rejection blocks
		{9000, "2", verdictBlocked, false},
	} {
		v, blocked := a.decide(testT0+tc.at, tc.nonce)
		assert.Equal(t, tc.want, v, "step %d", i)
		assert.Equal(t, tc.wantBlocked, blocked, "step %d", i)
	}
}
