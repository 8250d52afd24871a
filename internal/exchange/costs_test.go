package exchange_test

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/exchange"
)

func TestCosts_EachPathCostsItsWeightAndOrders(t *testing.T) {
	clock := newFakeClock()
	cfg := modelConfig(clock,
		exchange.Rule{Kind: exchange.Fixed, Limit: 12, Window: 10 * time.Second, Dimension: exchange.Weight, Scope: exchange.PerIP},
		exchange.Rule{Kind: exchange.Fixed, Limit: 2, Window: 10 * time.Second, Dimension: exchange.Orders, Scope: exchange.PerAccount},
	)
	cfg.Costs = []exchange.PathCost{
		{Method: http.MethodGet, Path: "/api/v3/depth", Cost: exchange.Cost{Weight: 5}},
		{Method: http.MethodPost, Path: "/api/v3/order", Cost: exchange.Cost{Weight: 1, Orders: 1}},
		{Method: http.MethodGet, Path: "/api/request", Cost: exchange.Cost{Weight: 2}},
	}
	cfg.UsageHeaders = []exchange.HeaderStyle{exchange.BinanceHeaders}
	s, c := start(t, cfg)
	for i, tc := range []struct {
		method, path string
		key          int
		status       int
		weight       string // X-MBX-USED-WEIGHT-10S
		orders       string // X-MBX-ORDER-COUNT-10S, only on order paths
	}{
		{http.MethodGet, "/api/v3/depth", 0, 200, "5", ""},
		{http.MethodPost, "/api/v3/order", 1, 200, "6", "1"}, // another key, the same IP
		{http.MethodPost, "/api/v3/order", 0, 200, "7", "1"}, // each key its own account
		{http.MethodPost, "/api/v3/order", 0, 200, "8", "2"},
		{http.MethodPost, "/api/v3/order", 0, 429, "8", "2"},                    // the account's orders are used up
		{http.MethodGet, "/api/request?api_key=" + secret(0), 0, 200, "10", ""}, // the table sets the reference path's weight too
		{http.MethodGet, "/api/v3/depth", 2, 429, "10", ""},                     // 10 + 5 > 12
		{http.MethodGet, "/api/v3/unlisted", 0, 404, "", ""},                    // only the table's paths are served
	} {
		h := http.Header{"X-MBX-APIKEY": {secret(tc.key)}}
		sep := "?"
		if strings.Contains(tc.path, "?") {
			sep = "&"
		}
		got := c.Send(tc.method, tc.path+sep+"req_id=r"+strconv.Itoa(i), h, "")
		require.Equal(t, tc.status, got.Status, "step %d: %s", i, got.Body)
		assert.Equal(t, tc.weight, got.Header.Get("X-MBX-USED-WEIGHT-10S"), "step %d", i)
		assert.Equal(t, tc.orders, got.Header.Get("X-MBX-ORDER-COUNT-10S"), "step %d", i)
	}
	st := s.Stats()
	assert.Equal(t, int64(10), st.Rules[0].Charged)
	assert.Equal(t, int64(3), st.Rules[1].Charged)
	assert.Equal(t, uint64(5), st.OK)
}

func TestCosts_ParsePathCost(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want exchange.PathCost
		err  string
	}{
		{"POST /api/v3/order weight=1,orders=1", exchange.PathCost{Method: "POST", Path: "/api/v3/order", Cost: exchange.Cost{Weight: 1, Orders: 1}}, ""},
		{"get /api/v3/depth weight=5", exchange.PathCost{Method: "GET", Path: "/api/v3/depth", Cost: exchange.Cost{Weight: 5}}, ""},
		{"GET /api/v3/time", exchange.PathCost{Method: "GET", Path: "/api/v3/time"}, ""},
		{"GET /x weight=-1", exchange.PathCost{}, "at least 0"},
		{"GET /x tokens=5", exchange.PathCost{}, "unknown cost"},
		{"GET x", exchange.PathCost{}, "path must start with /"},
		{"TRACE /x", exchange.PathCost{}, "method must be GET"},
		{"/x", exchange.PathCost{}, "want METHOD PATH"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := exchange.ParsePathCost(tc.in)
			if tc.err != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

// llmReply is the LLM endpoint's 200 body.
type llmReply struct {
	ID    string `json:"id"`
	Usage struct {
		InputTokens  int64 `json:"input_tokens"`
		OutputTokens int64 `json:"output_tokens"`
	} `json:"usage"`
}

func complete(t *testing.T, c *client, key int, reqID, body string) (reply, llmReply) {
	t.Helper()
	h := http.Header{"Authorization": {"Bearer " + secret(key)}, "X-Request-Id": {reqID}, "Content-Type": {"application/json"}}
	got := c.Send(http.MethodPost, "/v1/complete", h, body)
	var r llmReply
	if got.Status == http.StatusOK {
		require.NoError(t, json.Unmarshal([]byte(got.Body), &r), got.Body)
	}
	return got, r
}

func TestTokens_InputFromTheBodyOutputDrawnAndChargedOnceAnswered(t *testing.T) {
	clock := newFakeClock()
	cfg := modelConfig(clock,
		exchange.Rule{Name: "in", Kind: exchange.Fixed, Limit: 100, Window: 10 * time.Second, Dimension: exchange.InputTokens, Scope: exchange.PerIP},
		exchange.Rule{Name: "out", Kind: exchange.Fixed, Limit: 10, Window: 10 * time.Second, Dimension: exchange.OutputTokens, Scope: exchange.PerIP},
	)
	cfg.Tokens = &exchange.TokenCounting{MinOutput: 7}
	cfg.UsageHeaders = []exchange.HeaderStyle{exchange.OpenAIHeaders, exchange.AnthropicHeaders}
	s, c := start(t, cfg)

	// max_tokens 7 and at least 7: exactly 7 output tokens a call.
	got, r := complete(t, c, 0, "a", `{"prompt":"0123456789","max_tokens":7}`)
	require.Equal(t, http.StatusOK, got.Status, got.Body)
	assert.Equal(t, "a", r.ID)
	assert.Equal(t, int64(3), r.Usage.InputTokens, "10 characters, 4 a token, rounded up")
	assert.Equal(t, int64(7), r.Usage.OutputTokens)
	assert.Equal(t, "10", got.Header.Get("x-ratelimit-limit-tokens"), "the tokens rule with the least room: out")
	assert.Equal(t, "3", got.Header.Get("x-ratelimit-remaining-tokens"), "the output was charged before the answer")
	assert.Equal(t, "97", got.Header.Get("anthropic-ratelimit-input-tokens-remaining"))
	assert.Equal(t, "3", got.Header.Get("anthropic-ratelimit-output-tokens-remaining"))
	assert.Equal(t, t0.Add(10*time.Second).UTC().Format(time.RFC3339), got.Header.Get("anthropic-ratelimit-output-tokens-reset"))

	// 7 of 10 output tokens used: room for one more, so the call is admitted; its
	// 7 are charged once answered, past the limit, as an LLM API does.
	got, r = complete(t, c, 1, "b", `{"input_tokens":50,"max_tokens":7}`)
	require.Equal(t, http.StatusOK, got.Status, got.Body)
	assert.Equal(t, int64(50), r.Usage.InputTokens, "input_tokens given is taken as is")
	assert.Equal(t, "0", got.Header.Get("x-ratelimit-remaining-tokens"))

	got, _ = complete(t, c, 2, "c", `{"prompt":"x","max_tokens":7}`)
	assert.Equal(t, http.StatusTooManyRequests, got.Status, "no room left for output")
	got, _ = complete(t, c, 2, "d", `not json`)
	assert.Equal(t, http.StatusBadRequest, got.Status)
	assert.Contains(t, got.Body, "invalid_request_error")

	st := s.Stats()
	assert.Equal(t, int64(53), st.Rules[0].Charged)
	assert.Equal(t, int64(14), st.Rules[1].Charged)
	assert.Equal(t, float64(14), st.Rules[1].Peak, "output tokens may pass the limit")
	assert.Equal(t, uint64(1), st.Rules[1].Rejections)
}

func TestTokens_OutputIsDrawnFromTheSeedAndTheRequestID(t *testing.T) {
	draw := func(seed uint64, ids ...string) []int64 {
		clock := newFakeClock()
		cfg := modelConfig(clock, exchange.Rule{Kind: exchange.Fixed, Limit: 1 << 40, Window: time.Second, Dimension: exchange.Tokens, Scope: exchange.PerIP})
		cfg.Seed = seed
		cfg.Tokens = &exchange.TokenCounting{}
		_, c := start(t, cfg)
		var out []int64
		for _, id := range ids {
			got, r := complete(t, c, 0, id, `{"prompt":"hi","max_tokens":50}`)
			require.Equal(t, http.StatusOK, got.Status, got.Body)
			require.GreaterOrEqual(t, r.Usage.OutputTokens, int64(1))
			require.LessOrEqual(t, r.Usage.OutputTokens, int64(50))
			out = append(out, r.Usage.OutputTokens)
		}
		return out
	}
	ids := []string{"a", "b", "c", "d", "e", "f", "g", "h"}
	first := draw(7, ids...)
	assert.Equal(t, first, draw(7, ids...), "the same seed and ids draw the same")
	assert.Equal(t, first[:1], draw(7, "a"), "an id's draw does not depend on the calls before it")
	assert.NotEqual(t, first, draw(8, ids...), "another seed draws otherwise")
	assert.Greater(t, len(map[int64]bool{first[0]: true, first[1]: true, first[2]: true, first[3]: true}), 1, "ids draw apart")
}
