package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/cli"
	"github.com/ratefleet/ratefleet/internal/exchange"
)

func TestParseFlags_ModelAndTheFlagsThatChangeIt(t *testing.T) {
	binance, err := exchange.ModelConfig("binance")
	require.NoError(t, err)
	for _, tc := range []struct {
		name  string
		args  []string
		check func(t *testing.T, c exchange.Config)
	}{
		{"the reference by default: no model fields", nil, func(t *testing.T, c exchange.Config) {
			assert.Empty(t, c.Model)
			assert.Empty(t, c.Rules)
			assert.Empty(t, c.Costs)
			assert.Zero(t, c.Ban)
			assert.Zero(t, c.Outside)
			assert.False(t, c.NoNonce)
		}},
		{"a model", []string{"--model", "binance"}, func(t *testing.T, c exchange.Config) {
			assert.Equal(t, binance.Rules, c.Rules)
			assert.Equal(t, binance.Costs, c.Costs)
			assert.Equal(t, binance.Ban, c.Ban)
			assert.Equal(t, 0, c.Limit)
			assert.True(t, c.NoNonce)
			assert.Equal(t, []exchange.HeaderStyle{exchange.BinanceHeaders}, c.UsageHeaders)
		}},
		{"the reference's flags keep their value", []string{"--model", "kraken", "--limit", "5", "--block-after", "3"}, func(t *testing.T, c exchange.Config) {
			assert.Equal(t, 5, c.Limit)
			assert.Equal(t, time.Duration(0), c.Window, "the model's")
			assert.Equal(t, 3, c.BlockAfter)
			assert.Equal(t, exchange.FormatKraken, c.Format)
			assert.Equal(t, "pub-key1", c.Keys[0].ID(), "the model's signing keys")
		}},
		{"--keys replace the model's keys", []string{"--model", "kraken", "--keys", "a=S1"}, func(t *testing.T, c exchange.Config) {
			require.Len(t, c.Keys, 1)
			assert.Equal(t, "a", c.Keys[0].Name())
		}},
		{"rules add, costs replace or add", []string{"--model", "binance",
			"--rule", "kind=sliding,limit=5,window=1s,name=extra",
			"--cost", "GET /api/v3/depth weight=50", "--cost", "GET /api/v3/new weight=3"}, func(t *testing.T, c exchange.Config) {
			require.Len(t, c.Rules, len(binance.Rules)+1)
			assert.Equal(t, "extra", c.Rules[len(c.Rules)-1].Name)
			assert.Len(t, c.Costs, len(binance.Costs)+1)
			assert.Contains(t, c.Costs, exchange.PathCost{Method: "GET", Path: "/api/v3/depth", Cost: exchange.Cost{Weight: 50}})
			assert.Contains(t, c.Costs, exchange.PathCost{Method: "GET", Path: "/api/v3/new", Cost: exchange.Cost{Weight: 3}})
		}},
		{"accounts, format, headers, nonce", []string{"--accounts", "key1=a,*=b", "--format", "kraken",
			"--usage-headers", "openai,anthropic", "--no-nonce"}, func(t *testing.T, c exchange.Config) {
			assert.Equal(t, map[string]string{"key1": "a", "*": "b"}, c.Accounts)
			assert.Equal(t, exchange.FormatKraken, c.Format)
			assert.Equal(t, []exchange.HeaderStyle{exchange.OpenAIHeaders, exchange.AnthropicHeaders}, c.UsageHeaders)
			assert.True(t, c.NoNonce)
		}},
		{"a ban from --ban-after alone takes the other flags' defaults", []string{"--ban-after", "4"}, func(t *testing.T, c exchange.Config) {
			assert.Equal(t, exchange.Ban{After: 4, Within: time.Minute, For: 2 * time.Minute, Max: 72 * time.Hour}, c.Ban)
		}},
		{"a model's ban, shortened", []string{"--model", "binance", "--ban-for", "1s"}, func(t *testing.T, c exchange.Config) {
			assert.Equal(t, exchange.Ban{After: 10, Within: time.Minute, For: time.Second, Max: 72 * time.Hour}, c.Ban)
		}},
		{"an outside client", []string{"--outside-rate", "2.5", "--outside-keys", "key1,key2", "--outside-cost", "weight=3"}, func(t *testing.T, c exchange.Config) {
			assert.Equal(t, exchange.Outside{Rate: 2.5, Keys: []string{"key1", "key2"}, Cost: exchange.Cost{Weight: 3}}, c.Outside)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := parseFlags(tc.args, io.Discard, io.Discard)
			require.NoError(t, err)
			tc.check(t, o.cfg)
		})
	}
}

func TestRun_ModelFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"unknown model", []string{"--model", "coinbase"}, 2, `--model: unknown model "coinbase"`},
		{"bad rule", []string{"--rule", "kind=fixed,limit=1"}, 2, "window 0s must be a positive"},
		{"bad cost", []string{"--cost", "GET /x weight=z"}, 2, "want weight=N or orders=N"},
		{"bad accounts", []string{"--accounts", "key1"}, 2, `--accounts: "key1" is not keyname=account`},
		{"bad format", []string{"--format", "xml"}, 2, "--format: format \"xml\""},
		{"bad headers", []string{"--usage-headers", "github"}, 2, "--usage-headers"},
		{"an outside client on an unknown key", []string{"--outside-rate", "1", "--outside-keys", "key9"}, 1, `Outside: keys: no key is named "key9"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr strings.Builder
			err := run(context.Background(), tc.args, &stderr, &stderr)
			assert.Equal(t, tc.code, cli.ExitCode("exchange", err, &stderr))
			assert.Contains(t, stderr.String(), tc.stderr)
		})
	}
}

func TestRun_ServesTheModelChosen(t *testing.T) {
	base := started(t, "--model", "binance", "--max-delay", "0ms")
	req, err := http.NewRequest(http.MethodGet, base+"/api/v3/depth?symbol=BTCUSDT", nil)
	require.NoError(t, err)
	req.Header.Set("X-MBX-APIKEY", exchange.DefaultKeys()[0].Secret())
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "5", resp.Header.Get("X-MBX-USED-WEIGHT-1M"))

	var st exchange.Stats
	_, body := get(t, base+"/stats")
	require.NoError(t, json.Unmarshal([]byte(body), &st))
	assert.Equal(t, "binance", st.Model)
	require.Len(t, st.Rules, 4)
	assert.Equal(t, int64(5), st.Rules[0].Charged)
	assert.Positive(t, st.Rules[0].Bound)
}
