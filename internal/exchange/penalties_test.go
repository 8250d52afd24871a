package exchange_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/ratefleet/ratefleet/internal/exchange"
)

func TestBan_RepeatedRejectionsBanEveryKeyWith418ForLongerEachTime(t *testing.T) {
	const ok, no, banned = http.StatusOK, http.StatusTooManyRequests, http.StatusTeapot
	clock := newFakeClock()
	cfg := modelConfig(clock, exchange.Rule{Kind: exchange.Fixed, Limit: 1, Window: time.Second, Dimension: exchange.Requests, Scope: exchange.PerKey})
	cfg.Ban = exchange.Ban{After: 3, Within: time.Second, For: 2 * time.Second, Max: 5 * time.Second}
	s, c := start(t, cfg)
	runCalls(t, clock, c, []call{
		{0, 0, ok, ""},
		{0, 0, no, "1"}, {500, 0, no, "1"}, // rejections 1 and 2
		{1000, 0, ok, ""},
		{1000, 0, no, "1"},     // the third within a second of the first: a ban of 2 s
		{1000, 1, banned, "2"}, // of every key: the ban is on the IP
		{2999, 2, banned, "1"}, // 1 ms left
		{3000, 1, ok, ""},      // over; the rejections before it count no more
		{3000, 1, no, "1"},     // 1
		{4500, 1, ok, ""},
		{4500, 1, no, "1"},     // 2
		{4501, 1, no, "1"},     // 3, but 1501 ms after the first: no ban
		{4600, 1, no, "1"},     // 4: the last three within a second: 2 s doubled, 4 s
		{4600, 3, banned, "4"}, //
		{8599, 3, banned, "1"}, //
		{8600, 3, ok, ""},
		{8600, 3, no, "1"}, {8601, 3, no, "1"},
		{8602, 3, no, "1"},      // a third ban: 8 s, but at most 5
		{13601, 4, banned, "1"}, //
		{13602, 4, ok, ""},
		{13602, 0, ok, ""},
		{100_000, 4, ok, ""}, {100_000, 4, no, "1"},
		{100_000, 3, ok, ""}, {100_000, 3, no, "1"}, // two rejections: no ban
		{100_001, 0, ok, ""},
	})
	st := s.Stats()
	assert.Equal(t, 3, st.Bans)
	assert.Equal(t, uint64(5), st.Banned, "the 418 answers")
}

func TestBan_CoversEveryEndpoint(t *testing.T) {
	clock := newFakeClock()
	cfg := modelConfig(clock, exchange.Rule{Kind: exchange.Fixed, Limit: 1, Window: time.Second, Dimension: exchange.Requests, Scope: exchange.PerIP})
	cfg.Ban = exchange.Ban{After: 1, Within: time.Second, For: 3 * time.Second}
	cfg.Costs = []exchange.PathCost{{Method: http.MethodGet, Path: "/api/v3/ping"}}
	_, c := start(t, cfg)
	runCalls(t, clock, c, []call{{0, 0, http.StatusOK, ""}, {0, 1, http.StatusTooManyRequests, "1"}})
	clock.Set(1000)
	for _, tc := range []struct {
		name, method, path string
		header             http.Header
	}{
		{"reference", http.MethodGet, "/api/request?api_key=" + secret(2), nil},
		{"cost table path", http.MethodGet, "/api/v3/ping", http.Header{"X-MBX-APIKEY": {secret(3)}}},
		{"per-minute", http.MethodPost, "/v1/complete", http.Header{"Authorization": {"Bearer " + secret(4)}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := c.Send(tc.method, tc.path, tc.header, "")
			assert.Equal(t, http.StatusTeapot, got.Status, got.Body)
			assert.Equal(t, "2", got.Header.Get("Retry-After"))
		})
	}
}
