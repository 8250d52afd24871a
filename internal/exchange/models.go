package exchange

import (
	"errors"
	"fmt"
	"net/http"
	"time"
)

// ErrUnknownModel is wrapped by ModelConfig's error for a name it does not know.
var ErrUnknownModel = errors.New("unknown model")

// Models returns the names of the built-in models, the reference first.
func Models() []string { return []string{"reference", "binance", "kraken", "llm"} }

// ModelConfig returns the Config of a built-in model: DefaultConfig (the keys, the
// delays, the id set) with the model's rules. Each follows the shape of the
// provider's published rules (docs/simulator.md, and the facts they rest on):
//
//   - reference: DefaultConfig itself.
//   - binance: Binance spot's own numbers, unscaled. Request weight 6,000 per
//     calendar minute and raw requests 61,000 per 5 minutes for the whole upstream
//     (one IP); orders 100 per 10 s and 200,000 per day per account, the five keys
//     one account ("main"); the weight of each endpoint from Binance's table
//     (binanceCosts); no nonce and no key ring; 10 rejections within a minute ban
//     the IP (418) for 2 minutes, doubling for each repeat up to 3 days; the
//     X-MBX-USED-WEIGHT-1M and X-MBX-ORDER-COUNT-10S/-1D headers. 6,000 a minute is
//     100 weight a second: the reference's five keys' rate.
//   - kraken: Kraken's REST counter at the Pro tier (maximum 20, decay 1 a second)
//     with time 20 times faster: maximum 20, decay 20 a second, per key, so that a
//     key sustains the reference's 20 a second; ledger and trade history calls cost
//     2, others 1 (krakenCosts); nonces as the reference; the signing keys of
//     SignedKeys; Kraken's answer format (errors in a list, HTTP 200); no block.
//   - llm: an LLM API's organization limits, Anthropic's tier 1 shape (50 requests,
//     30,000 input and 8,000 output tokens a minute) scaled 12 times: 600 requests,
//     360,000 input and 96,000 output tokens a minute, each a bucket replenished
//     continuously (capacity a minute's worth), shared by every key (one account,
//     "org"); tokens read from POST /v1/complete's body, output drawn up to
//     max_tokens (512 when the body names none: about 256 a call on average, so
//     output tokens bind at about 375 calls a minute); no nonce, no block; OpenAI's
//     and Anthropic's usage headers.
func ModelConfig(name string) (Config, error) {
	c := DefaultConfig()
	switch name {
	case "", "reference":
		return c, nil
	case "binance":
		c.Model = name
		c.Limit, c.Window, c.BlockAfter, c.NoNonce = 0, 0, 0, true
		c.Accounts = map[string]string{AnyKey: "main"}
		c.Rules = []Rule{
			{Name: "REQUEST_WEIGHT 1m", Kind: Fixed, Limit: 6000, Window: time.Minute, Dimension: Weight, Scope: PerIP},
			{Name: "RAW_REQUESTS 5m", Kind: Fixed, Limit: 61000, Window: 5 * time.Minute, Dimension: Requests, Scope: PerIP},
			{Name: "ORDERS 10s", Kind: Fixed, Limit: 100, Window: 10 * time.Second, Dimension: Orders, Scope: PerAccount},
			{Name: "ORDERS 1d", Kind: Fixed, Limit: 200_000, Window: 24 * time.Hour, Dimension: Orders, Scope: PerAccount},
		}
		c.Costs = binanceCosts()
		c.Ban = Ban{After: 10, Within: time.Minute, For: 2 * time.Minute, Max: 72 * time.Hour}
		c.UsageHeaders = []HeaderStyle{BinanceHeaders}
	case "kraken":
		c.Model = name
		c.Keys = SignedKeys()
		c.Limit, c.Window, c.BlockAfter = 0, 0, 0
		c.Rules = []Rule{{Name: "API counter", Kind: Bucket, Limit: 20, Rate: 20, Dimension: Weight, Scope: PerKey}}
		c.Costs = krakenCosts()
		c.Format = FormatKraken
	case "llm":
		c.Model = name
		c.Limit, c.Window, c.BlockAfter, c.NoNonce = 0, 0, 0, true
		c.Accounts = map[string]string{AnyKey: "org"}
		c.Rules = []Rule{
			{Name: "requests per minute", Kind: Bucket, Limit: 600, Rate: 10, Dimension: Requests, Scope: PerAccount},
			{Name: "input tokens per minute", Kind: Bucket, Limit: 360_000, Rate: 6000, Dimension: InputTokens, Scope: PerAccount},
			{Name: "output tokens per minute", Kind: Bucket, Limit: 96_000, Rate: 1600, Dimension: OutputTokens, Scope: PerAccount},
		}
		c.Tokens = &TokenCounting{CharsPerToken: 4, MaxTokens: 512}
		c.UsageHeaders = []HeaderStyle{OpenAIHeaders, AnthropicHeaders}
	default:
		return Config{}, fmt.Errorf("%w %q: use reference, binance, kraken or llm", ErrUnknownModel, name)
	}
	return c, nil
}

// binanceCosts is Binance spot's weight of each endpoint the binance model serves
// (single-symbol forms; depth up to 100 levels), and the reference's endpoint at
// weight 1. Only POST /api/v3/order places an order.
func binanceCosts() []PathCost {
	get := func(path string, weight int64) PathCost {
		return PathCost{Method: http.MethodGet, Path: path, Cost: Cost{Weight: weight}}
	}
	return []PathCost{
		get("/api/request", 1),
		get("/api/v3/ping", 1),
		get("/api/v3/time", 1),
		get("/api/v3/exchangeInfo", 20),
		get("/api/v3/depth", 5),
		get("/api/v3/trades", 25),
		get("/api/v3/klines", 2),
		get("/api/v3/ticker/price", 2),
		get("/api/v3/ticker/24hr", 2),
		get("/api/v3/account", 20),
		get("/api/v3/openOrders", 6),
		get("/api/v3/order", 4),
		{Method: http.MethodPost, Path: "/api/v3/order", Cost: Cost{Weight: 1, Orders: 1}},
		{Method: http.MethodDelete, Path: "/api/v3/order", Cost: Cost{Weight: 1}},
		{Method: http.MethodPost, Path: "/api/v3/order/test", Cost: Cost{Weight: 1}},
	}
}

// krakenCosts is what Kraken's private calls add to its counter: 2 for ledger and
// trade history calls, 1 for the others (orders count on a separate counter the
// model leaves out). All are signed POSTs.
func krakenCosts() []PathCost {
	post := func(path string, weight int64) PathCost {
		return PathCost{Method: http.MethodPost, Path: path, Cost: Cost{Weight: weight}}
	}
	return []PathCost{
		post("/api/private", 1),
		post("/0/private/Balance", 1),
		post("/0/private/OpenOrders", 1),
		post("/0/private/ClosedOrders", 1),
		post("/0/private/QueryOrders", 1),
		post("/0/private/Ledgers", 2),
		post("/0/private/QueryLedgers", 2),
		post("/0/private/TradesHistory", 2),
		post("/0/private/QueryTrades", 2),
	}
}

// validateModel checks the fields that model other upstreams.
func (c Config) validateModel(bad func(string, ...any), names map[string]bool) {
	labels := map[string]bool{}
	for i, r := range c.Rules {
		if err := r.validate(); err != nil {
			bad("Rules[%d] (%s): %w", i, r.label(), err)
		}
		if labels[r.label()] {
			bad("Rules[%d]: name %q is used twice; give each rule its own", i, r.label())
		}
		labels[r.label()] = true
	}
	if err := validateAccounts(c.Accounts, names); err != nil {
		bad("Accounts: %w", err)
	}
	if err := validateCosts(c.Costs); err != nil {
		bad("%w", err)
	}
	if c.Tokens != nil {
		if err := c.Tokens.validate(); err != nil {
			bad("Tokens: %w", err)
		}
	}
	if err := c.Ban.validate(); err != nil {
		bad("Ban: %w", err)
	}
	if err := c.Outside.validate(names); err != nil {
		bad("Outside: %w", err)
	}
	if _, err := ParseFormat(string(c.Format)); err != nil {
		bad("Format: %w", err)
	}
	for _, st := range c.UsageHeaders {
		if _, err := ParseHeaderStyles(string(st)); err != nil || st == "" {
			bad("UsageHeaders: %q: use binance, openai or anthropic", st)
		}
	}
}
