package exchange_test

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/exchange"
	"github.com/ratefleet/ratefleet/internal/profile"
)

// startModel starts a built-in model on a fake clock, without delays.
func startModel(t *testing.T, name string, clock *fakeClock) (*exchange.Server, *client) {
	t.Helper()
	cfg, err := exchange.ModelConfig(name)
	require.NoError(t, err)
	cfg.Now, cfg.Sleep, cfg.Seed = clock.Now, noSleep, 1
	return start(t, cfg)
}

func TestModelConfig_ReferenceIsTheDefaultAndUnknownNamesFail(t *testing.T) {
	for _, name := range []string{"", "reference"} {
		cfg, err := exchange.ModelConfig(name)
		require.NoError(t, err)
		assert.Equal(t, exchange.DefaultConfig(), cfg)
	}
	_, err := exchange.ModelConfig("coinbase")
	require.ErrorIs(t, err, exchange.ErrUnknownModel)
	for _, name := range exchange.Models() {
		cfg, err := exchange.ModelConfig(name)
		require.NoError(t, err)
		_, err = exchange.New(cfg, nil)
		require.NoError(t, err, "model %s is valid", name)
	}
}

func TestModel_Binance(t *testing.T) {
	clock := newFakeClock()
	s, c := startModel(t, "binance", clock)
	h := http.Header{"X-MBX-APIKEY": {secret(0)}}
	for i, tc := range []struct {
		method, path          string
		status                int
		weight, orders10s, od string
	}{
		{http.MethodGet, "/api/v3/depth", 200, "5", "", ""},
		{http.MethodGet, "/api/v3/account", 200, "25", "", ""},
		{http.MethodPost, "/api/v3/order", 200, "26", "1", "1"},
		{http.MethodDelete, "/api/v3/order", 200, "27", "", ""},
		{http.MethodGet, "/api/request?api_key=" + secret(1), 200, "28", "", ""}, // no nonce
	} {
		got := c.Send(tc.method, tc.path, h, "")
		require.Equal(t, tc.status, got.Status, "step %d: %s", i, got.Body)
		assert.Equal(t, tc.weight, got.Header.Get("X-MBX-USED-WEIGHT-1M"), "step %d", i)
		assert.Equal(t, tc.orders10s, got.Header.Get("X-MBX-ORDER-COUNT-10S"), "step %d", i)
		assert.Equal(t, tc.od, got.Header.Get("X-MBX-ORDER-COUNT-1D"), "step %d", i)
	}
	// 6,000 a minute for every key: 238 calls of 25 (GET /api/v3/trades) reach
	// 28 + 5,950 = 5,978; the next is refused, and ten refusals ban the IP.
	for i := range 238 {
		got := c.Send(http.MethodGet, "/api/v3/trades", http.Header{"X-MBX-APIKEY": {secret(i % 5)}}, "")
		require.Equal(t, http.StatusOK, got.Status, "call %d", i)
	}
	for i := range 10 {
		got := c.Send(http.MethodGet, "/api/v3/trades", h, "")
		require.Equal(t, http.StatusTooManyRequests, got.Status, "call %d", i)
		assert.Equal(t, "40", got.Header.Get("Retry-After"), "the minute started 20 s before t0")
	}
	got := c.Send(http.MethodGet, "/api/v3/ping", http.Header{"X-MBX-APIKEY": {secret(4)}}, "")
	assert.Equal(t, http.StatusTeapot, got.Status)
	assert.Equal(t, "120", got.Header.Get("Retry-After"), "banned for 2 minutes")
	st := s.Stats()
	assert.Equal(t, "binance", st.Model)
	assert.Equal(t, 1, st.Bans)
	assert.Equal(t, uint64(10), st.RateLimited)
	assert.Equal(t, "REQUEST_WEIGHT 1m", st.Rules[0].Name)
	assert.Equal(t, int64(5978), st.Rules[0].Charged)
	assert.Equal(t, float64(5978), st.Rules[0].Peak)
	assert.Equal(t, "main", st.Keys[4].Account)
}

func TestModel_Kraken(t *testing.T) {
	clock := newFakeClock()
	s, c := startModel(t, "kraken", clock)
	p, err := profile.Parse("signed", []byte(profile.SignedYAML))
	require.NoError(t, err)
	k := exchange.SignedKeys()[0]
	nonce := int64(0)
	signed := func(path string, badSecret bool) reply {
		nonce++
		body := url.Values{"nonce": {strconv.FormatInt(nonce, 10)}, "req_id": {"r"}}.Encode()
		key := k.Secret()
		if badSecret {
			key = base64.StdEncoding.EncodeToString([]byte("guess"))
		}
		sig, err := p.Signature(key, http.MethodPost, path, "", body, strconv.FormatInt(nonce, 10), "")
		require.NoError(t, err)
		h := http.Header{"API-Key": {k.ID()}, "API-Sign": {sig}, "Content-Type": {"application/x-www-form-urlencoded"}}
		return c.Send(http.MethodPost, path, h, body)
	}
	ok := `{"error":[],"result":{"req_id":"r"}}`
	limited := `{"error":["EAPI:Rate limit exceeded"]}`
	// The counter: at most 20, each ledger call 2, others 1; it loses 20 a second.
	for i := range 10 {
		got := signed("/0/private/Ledgers", false)
		require.Equal(t, answer{200, ok, "application/json"}, got.answer, "call %d", i)
	}
	assert.Equal(t, answer{200, limited, "application/json"}, signed("/api/private", false).answer, "HTTP 200: Kraken's errors are in the body")
	clock.Set(50) // 1 unit gone
	assert.Equal(t, ok, signed("/0/private/Balance", false).Body)
	assert.Equal(t, limited, signed("/0/private/Balance", false).Body)
	assert.Equal(t, `{"error":["EAPI:Invalid signature"]}`, signed("/0/private/Balance", true).Body)

	clock.Set(10_000)
	nonce -= 5
	assert.Equal(t, `{"error":["EAPI:Invalid nonce"]}`, signed("/api/private", false).Body)
	got := c.Send(http.MethodGet, "/api/request?api_key=nope&nonce=1", nil, "")
	assert.Equal(t, answer{200, `{"error":["EAPI:Invalid key"]}`, "application/json"}, got.answer)
	var body map[string]any
	require.NoError(t, json.Unmarshal([]byte(ok), &body))
	assert.NotContains(t, body, "status")

	st := s.Stats()
	require.Len(t, st.Rules, 1)
	assert.Equal(t, exchange.Bucket, st.Rules[0].Kind)
	assert.Equal(t, int64(22), st.Rules[0].Charged, "20 + 1 + the bad nonce's 1")
	assert.Equal(t, uint64(2), st.RateLimited)
	// Over 10 s from an empty counter one key could count 20 + 20·10 = 220.
	assert.Equal(t, int64(5*220), st.Rules[0].Bound)
}

func TestModel_LLM(t *testing.T) {
	clock := newFakeClock()
	s, c := startModel(t, "llm", clock)
	got, r := complete(t, c, 0, "q1", `{"messages":[{"role":"user","content":"Summarize the rules of rate limits."}],"max_tokens":100}`)
	require.Equal(t, http.StatusOK, got.Status, got.Body)
	assert.Equal(t, int64(9), r.Usage.InputTokens, "35 characters")
	assert.LessOrEqual(t, r.Usage.OutputTokens, int64(100))
	assert.Equal(t, "600", got.Header.Get("x-ratelimit-limit-requests"))
	assert.Equal(t, "599", got.Header.Get("x-ratelimit-remaining-requests"))
	assert.Equal(t, "100ms", got.Header.Get("x-ratelimit-reset-requests"), "one request drains in 0.1 s")
	assert.Equal(t, strconv.FormatInt(96_000-r.Usage.OutputTokens, 10), got.Header.Get("anthropic-ratelimit-output-tokens-remaining"))
	assert.Equal(t, "359991", got.Header.Get("anthropic-ratelimit-input-tokens-remaining"))
	assert.Equal(t, "96000", got.Header.Get("x-ratelimit-limit-tokens"), "the token rule with the least room")

	// Every key shares the organization's limits: 599 more pass, then none.
	for i := range 599 {
		got, _ := complete(t, c, i%5, "x", `{"input_tokens":1,"max_tokens":1}`)
		require.Equal(t, http.StatusOK, got.Status, "call %d: %s", i, got.Body)
	}
	got, _ = complete(t, c, 3, "y", `{"input_tokens":1,"max_tokens":1}`)
	assert.Equal(t, http.StatusTooManyRequests, got.Status)
	assert.Equal(t, "1", got.Header.Get("Retry-After"), "a request's room comes back in 0.1 s")
	assert.Equal(t, "0", got.Header.Get("x-ratelimit-remaining-requests"))
	st := s.Stats()
	assert.Equal(t, "org", st.Keys[2].Account)
	assert.Equal(t, 1, st.Rules[0].Instances)
	assert.Equal(t, int64(600), st.Rules[0].Charged)
	assert.Equal(t, r.Usage.OutputTokens+599, st.Rules[2].Charged, "each call's output once answered")
}

func TestStats_RuleBoundsAreWhatAGreedyClientReaches(t *testing.T) {
	// Limit 2 and 10 ms windows (or 100 a second of decay) over a run of 35 ms,
	// from an empty counter:
	//   sliding: 2·⌈36/11⌉ = 8, at 0, 11, 22 and 33;
	//   fixed:   windows at 0, 10, 20, 30 touched: 2·4 = 8;
	//   bucket:  ⌊2 + 100·0.035⌋ = 5, at 0 (two), 10, 20 and 30.
	for _, tc := range []struct {
		rule  exchange.Rule
		bound int64
	}{
		{exchange.Rule{Kind: exchange.Sliding, Limit: 2, Window: 10 * time.Millisecond}, 8},
		{exchange.Rule{Kind: exchange.Fixed, Limit: 2, Window: 10 * time.Millisecond}, 8},
		{exchange.Rule{Kind: exchange.Bucket, Limit: 2, Rate: 100}, 5},
	} {
		t.Run(string(tc.rule.Kind), func(t *testing.T) {
			tc.rule.Dimension, tc.rule.Scope = exchange.Requests, exchange.PerIP
			clock := newFakeClock()
			s, c := start(t, modelConfig(clock, tc.rule))
			// At each millisecond, send until refused.
			var okCount int64
			for ms := int64(0); ms <= 35; ms++ {
				clock.Set(ms)
				for c.Send(http.MethodGet, "/api/request?api_key="+secret(int(ms)%5), nil, "").Status == http.StatusOK {
					okCount++
				}
			}
			st := s.Stats()
			assert.Equal(t, int64(35), st.RunMS)
			assert.Equal(t, tc.bound, st.Rules[0].Bound)
			assert.Equal(t, tc.bound, okCount, "the bound is reached, never passed")
			assert.Equal(t, okCount, st.Rules[0].Charged)
			assert.LessOrEqual(t, st.Rules[0].Peak, float64(2))

			s.ResetStats()
			st = s.Stats()
			assert.Equal(t, int64(0), st.RunMS)
			assert.Equal(t, int64(0), st.Rules[0].Charged)
		})
	}
}
