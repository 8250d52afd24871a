package profile_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/keys"
	"github.com/ratefleet/ratefleet/internal/limiter"
	"github.com/ratefleet/ratefleet/internal/profile"
	"github.com/ratefleet/ratefleet/wire"
)

// binanceLike counts weight per call across every key (one address), orders
// per account, and raw requests per key.
const binanceLike = `version: 1
name: binance-like
base_url: http://127.0.0.1:8080
default_call: {method: GET, path: /api/v3/ticker/price}
calls:
  - {method: GET, path: /api/v3/ticker/price, costs: {weight: 2}}
  - {method: GET, path: /api/v3/depth, costs: {weight: 5}}
  - {method: POST, path: /api/v3/order, costs: {weight: 1, orders: 1}}
  - {method: GET, path: /api/v3/account}
key: {in: header, name: X-MBX-APIKEY}
rate:
  rules:
    - {kind: fixed, limit: 6000, window: 1m, scope: upstream}
    - {kind: fixed, limit: 100, window: 10s, counts: orders, scope: account}
    - {limit: 50, window: 1s, counts: requests}
  max_weight: 20
answers:
  own_json: false
  rules:
    - {status: [200], class: done}
    - {status: [429], class: rate_limited}
  otherwise: retry_later
`

// llmLike counts requests and tokens for the organization, output tokens
// known only from the answer.
const llmLike = `version: 1
name: llm-like
base_url: http://127.0.0.1:8080
default_call: {method: POST, path: /v1/complete, body: '{"prompt":"hi"}', content_type: application/json}
key: {in: bearer}
rate:
  rules:
    - {kind: bucket, limit: 600, rate: 10, counts: requests, scope: upstream}
    - {kind: bucket, limit: 360000, rate: 6000, counts: input_tokens, scope: upstream}
    - {kind: bucket, limit: 96000, rate: 1600, counts: output_tokens, scope: upstream}
  costs:
    input_tokens: {from: request}
    output_tokens: {from: answer, json: usage.output_tokens}
  ban_after: 0
answers:
  own_json: false
  rules:
    - {status: [200], class: done}
    - {status: [429], class: rate_limited}
  otherwise: retry_later
`

func fleetKeys() []keys.Key {
	return []keys.Key{
		keys.New("a1", "s1").WithGroups("main", nil), keys.New("a2", "s2").WithGroups("main", nil),
		keys.New("a3", "s3").WithGroups("main", nil), keys.New("b1", "s4").WithGroups("sub", nil),
		keys.New("c1", "s5"),
	}
}

func TestLimits_SplitsRulesCountedAcrossKeys(t *testing.T) {
	p, err := profile.Parse("binance.yaml", []byte(binanceLike))
	require.NoError(t, err)
	all := fleetKeys()
	tests := []struct {
		key    keys.Key
		weight int // a fifth of 6000: five keys behind one address
		orders int // 100 over the keys of its account
	}{
		{all[0], 1200, 33},
		{all[3], 1200, 100},
		{all[4], 1200, 100},
	}
	for _, tt := range tests {
		t.Run(tt.key.Name(), func(t *testing.T) {
			dims, err := p.Limits(tt.key, all)
			require.NoError(t, err)
			require.Equal(t, []string{"weight", "requests", "orders"}, names(dims))
			require.Equal(t, tt.weight, dims[0].Rules[0].Limit)
			require.Equal(t, 50, dims[1].Rules[0].Limit, "a per-key rule is the key's own")
			require.Equal(t, tt.orders, dims[2].Rules[0].Limit)
		})
	}

	// Together the shares never exceed a rule: the sum over the keys.
	sum := 0
	for _, k := range all {
		dims, err := p.Limits(k, all)
		require.NoError(t, err)
		sum += dims[0].Rules[0].Limit
	}
	require.LessOrEqual(t, sum, 6000)

	many := make([]keys.Key, 0, 7000)
	for i := range 7000 {
		many = append(many, keys.New("k"+string(rune('a'+i%26))+string(rune('a'+i/26%26))+string(rune('a'+i/676)), "s"))
	}
	_, err = p.Limits(many[0], many)
	require.ErrorContains(t, err, "limit 6000 over the 7000 keys of its upstream scope leaves each less than 1")
}

func TestLimits_ScalesTokensAndSplitsBuckets(t *testing.T) {
	p, err := profile.Parse("llm.yaml", []byte(llmLike))
	require.NoError(t, err)
	all := fleetKeys()
	dims, err := p.Limits(all[0], all)
	require.NoError(t, err)
	require.Equal(t, []string{"requests", "input_tokens", "output_tokens"}, names(dims))
	require.Equal(t, limiter.Rule{Kind: limiter.Bucket, Limit: 120, Rate: 2}, dims[0].Rules[0])
	require.Equal(t, 72000, dims[1].Rules[0].Limit)
	require.EqualValues(t, 8, dims[1].Unit, "72,000 tokens in units of 8: within the limiter's 10,000")
	require.True(t, dims[2].Answered)
	require.False(t, dims[1].Answered)
	_, err = limiter.NewSet(limiter.SetConfig{Dims: dims})
	require.NoError(t, err)
}

func TestCost_FromTheCallsTheRequestAndTheAnswer(t *testing.T) {
	bin, err := profile.Parse("binance.yaml", []byte(binanceLike))
	require.NoError(t, err)
	llm, err := profile.Parse("llm.yaml", []byte(llmLike))
	require.NoError(t, err)
	call := func(m, path string) *wire.Call { return &wire.Call{Method: m, Path: path} }
	tests := []struct {
		name string
		p    *profile.Profile
		req  wire.Request
		want limiter.Cost
		err  string
	}{
		{name: "the default call", p: bin, req: wire.Request{}, want: limiter.Cost{"weight": 2, "requests": 1, "orders": 0}},
		{name: "a weighed call", p: bin, req: wire.Request{Call: call("GET", "/api/v3/depth")}, want: limiter.Cost{"weight": 5, "requests": 1, "orders": 0}},
		{name: "an order", p: bin, req: wire.Request{Call: call("POST", "/api/v3/order")}, want: limiter.Cost{"weight": 1, "requests": 1, "orders": 1}},
		{name: "the table over the request", p: bin, req: wire.Request{Call: call("POST", "/api/v3/order"), Costs: map[string]int64{"orders": 0}}, want: limiter.Cost{"weight": 1, "requests": 1, "orders": 1}},
		{name: "a call the table leaves to the request", p: bin, req: wire.Request{Call: call("GET", "/api/v3/account"), Weight: 20}, want: limiter.Cost{"weight": 20, "requests": 1, "orders": 0}},
		{name: "a weight above max_weight", p: bin, req: wire.Request{Call: call("GET", "/api/v3/account"), Weight: 21}, err: "max_weight"},
		{name: "tokens from the request", p: llm, req: wire.Request{Costs: map[string]int64{"input_tokens": 900, "output_tokens": 512}}, want: limiter.Cost{"requests": 1, "input_tokens": 900, "output_tokens": 512}},
		{name: "no input tokens", p: llm, req: wire.Request{Costs: map[string]int64{"output_tokens": 512}}, err: "give the request's costs.input_tokens"},
		{name: "no most output", p: llm, req: wire.Request{Costs: map[string]int64{"input_tokens": 9}}, err: "costs.output_tokens, the most it may cost"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := tt.p.Cost(tt.req)
			if tt.err != "" {
				require.ErrorIs(t, err, profile.ErrCall)
				require.ErrorContains(t, err, tt.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, c)
		})
	}

	require.True(t, llm.Answered())
	require.False(t, bin.Answered())
	require.Equal(t, limiter.Cost{"output_tokens": 37}, llm.Actual([]byte(`{"id":"x","usage":{"input_tokens":9,"output_tokens":37}}`)))
	require.Nil(t, llm.Actual([]byte(`{"usage":{"output_tokens":"many"}}`)))
	require.Nil(t, llm.Actual([]byte(`not json`)))
}

func TestParse_CostsSayWhatIsWrong(t *testing.T) {
	tests := []struct{ name, from, to, want string }{
		{"unknown scope", "scope: upstream}", "scope: planet}", `scope: is "planet"; use key`},
		{"a cost of nothing counted", "costs: {weight: 1, orders: 1}", "costs: {weight: 1, trades: 1}", "calls[2].costs.trades: no rule counts trades"},
		{"a weight of 0", "costs: {weight: 5}", "costs: {weight: 0}", "a weight is at least 1"},
		{"weight in the calls, no rule counting it", "    - {kind: fixed, limit: 6000, window: 1m, scope: upstream}\n", "", "calls[0].costs.weight: no rule counts weight"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := replaceOnce(t, binanceLike, tt.from, tt.to)
			_, err := profile.Parse("p.yaml", []byte(doc))
			require.ErrorIs(t, err, profile.ErrInvalid)
			require.ErrorContains(t, err, tt.want)
		})
	}
	doc := replaceOnce(t, llmLike, "output_tokens: {from: answer, json: usage.output_tokens}", "output_tokens: {from: answer}")
	_, err := profile.Parse("p.yaml", []byte(doc))
	require.ErrorContains(t, err, "rate.costs.output_tokens.json: give where the answer's JSON body says the cost")
	doc = replaceOnce(t, llmLike, "input_tokens: {from: request}", "input_tokens: {from: guess}")
	_, err = profile.Parse("p.yaml", []byte(doc))
	require.ErrorContains(t, err, `rate.costs.input_tokens.from: is "guess"`)
	doc = replaceOnce(t, llmLike, "    - {kind: bucket, limit: 600, rate: 10, counts: requests, scope: upstream}\n", "")
	_, err = profile.Parse("p.yaml", []byte(doc))
	require.ErrorContains(t, err, "no rule counts requests or weight")
}

func names(dims []limiter.Dimension) []string {
	out := make([]string, len(dims))
	for i, d := range dims {
		out[i] = d.Name
	}
	return out
}

func replaceOnce(t *testing.T, s, from, to string) string {
	t.Helper()
	require.Contains(t, s, from)
	return strings.Replace(s, from, to, 1)
}
