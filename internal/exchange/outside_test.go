package exchange_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/exchange"
)

func TestOutside_UsesPartOfAKeysBudgetSeenOnlyInTheUsageHeaders(t *testing.T) {
	const ok, no = http.StatusOK, http.StatusTooManyRequests
	for _, tc := range []struct {
		name  string
		setup func(*exchange.Config)
		// From t0+1999 ms key1 sends until refused: the outside client made 5 a
		// second on it since t0 (at 200, 400, ... ms).
		okKey1, okKey2 int
		header         string // X-MBX-USED-WEIGHT-1S on key1's first answer
		// At t0+2999 ms key1 sends again until refused.
		okLater, outsideLater int
	}{
		{"a fixed window of 10 a second per key, Binance's headers", func(c *exchange.Config) {
			c.Limit, c.BlockAfter, c.NoNonce = 0, 0, true
			c.Rules = []exchange.Rule{{Kind: exchange.Fixed, Limit: 10, Window: time.Second, Dimension: exchange.Weight, Scope: exchange.PerKey}}
			c.UsageHeaders = []exchange.HeaderStyle{exchange.BinanceHeaders}
		}, 5, 10, "6", 5, 14}, // the window [1000, 2000) holds the outside's 1000, 1200, ... 1800
		{"the reference's ring: another client on the key", func(c *exchange.Config) {
			c.Limit, c.BlockAfter, c.NoNonce = 10, 0, true
		}, 5, 10, "", 1, 13}, // the ring holds the outside's 1000 ... 1800 when key1 sends at 1999
		// and then key1's five at 1999: the outside's call at 2000 finds no room
		// and is dropped, those at 2200 ... 2800 fit, and key1 finds room for one.
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock()
			cfg := fastConfig(clock)
			tc.setup(&cfg)
			cfg.Outside = exchange.Outside{Rate: 5, Keys: []string{"key1"}}
			s, c := start(t, cfg)
			clock.Set(1999)
			send := func(key int) int {
				n := 0
				for i := 0; ; i++ {
					got := c.Send(http.MethodGet, "/api/request?api_key="+secret(key), nil, "")
					if i == 0 && key == 0 {
						assert.Equal(t, tc.header, got.Header.Get("X-MBX-USED-WEIGHT-1S"), "the outside's calls and this one")
					}
					if got.Status != ok {
						require.Equal(t, no, got.Status, got.Body)
						return n
					}
					n++
				}
			}
			assert.Equal(t, tc.okKey1, send(0))
			assert.Equal(t, tc.okKey2, send(1), "only key1 is shared")
			st := s.Stats()
			assert.Equal(t, uint64(9), st.Keys[0].Outside, "at 200, 400, ... 1800 ms")
			assert.Equal(t, uint64(1), st.Keys[0].RateLimited, "one rejection, the one that ended the burst: never the outside's")
			if len(st.Rules) > 0 {
				assert.Equal(t, int64(9), st.Rules[0].Outside)
				assert.Equal(t, int64(15), st.Rules[0].Charged)
			}

			// The outside's calls go on while no one else calls, and take only
			// the room left.
			clock.Set(2999)
			assert.Equal(t, tc.okLater, send(0))
			assert.Equal(t, uint64(tc.outsideLater), s.Stats().Keys[0].Outside)
		})
	}
}
