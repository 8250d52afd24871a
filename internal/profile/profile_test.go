package profile_test

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/limiter"
	"github.com/ratefleet/ratefleet/internal/profile"
	"github.com/ratefleet/ratefleet/wire"
)

func TestReference_IsValidAndMakesTheReferenceCall(t *testing.T) {
	p := profile.Reference()
	b, err := p.Build(nil, profile.Creds{APIKey: "SECRETKEY"}, profile.Send{Nonce: 7, RequestID: "r 1"})
	require.NoError(t, err)
	require.Equal(t, "GET", b.Method)
	require.Equal(t, "/api/request", b.URL.Path)
	q, err := url.ParseQuery(b.URL.RawQuery)
	require.NoError(t, err)
	require.Equal(t, url.Values{"api_key": {"SECRETKEY"}, "nonce": {"7"}, "req_id": {"r 1"}}, q)
	require.Empty(t, b.Body)

	cfg := p.LimiterConfig(limiter.Config{})
	require.Equal(t, []limiter.Rule{{Limit: 20, Window: time.Second}}, cfg.Rules)
	require.Equal(t, 10, cfg.BanThreshold)
	require.False(t, cfg.Unordered, "a nonce: the order rule holds")
}

func TestLimiterConfig_NoNonceNoOrderRule(t *testing.T) {
	p, err := profile.Parse("per-minute", []byte(profile.PerMinuteYAML))
	require.NoError(t, err)
	require.Nil(t, p.Nonce)
	require.True(t, p.LimiterConfig(limiter.Config{}).Unordered, "no nonce: requests may arrive in any order")
}

func TestLimiterConfig_CarriesEveryRuleKind(t *testing.T) {
	p, err := profile.Parse("kinds.yaml", []byte(override(profile.ReferenceYAML, `rate:
  rules:
    - {limit: 20, window: 1s}
    - {kind: fixed, limit: 6000, window: 1m}
    - {kind: bucket, limit: 15, rate: 0.33}
    - {kind: bucket, limit: 50, rate: 0.8333, window: 1s}
  clock_offset: 250ms
  ban_after: 10`)))
	require.NoError(t, err)
	cfg := p.LimiterConfig(limiter.Config{})
	require.Equal(t, []limiter.Rule{
		{Limit: 20, Window: time.Second},
		{Kind: limiter.Fixed, Limit: 6000, Window: time.Minute},
		{Kind: limiter.Bucket, Limit: 15, Rate: 0.33},
		{Kind: limiter.Bucket, Limit: 50, Rate: 0.8333, Window: time.Second},
	}, cfg.Rules)
	require.Equal(t, 250*time.Millisecond, cfg.ClockOffset)
	_, err = limiter.New(cfg)
	require.NoError(t, err)
}

func TestParse_RuleKindsSayWhatIsWrong(t *testing.T) {
	tests := []struct {
		name, rule string
		field      string // the problem's field, on the rule's line
		want       string
	}{
		{"unknown kind", "{kind: tumbling, limit: 5, window: 1s}", "rate.rules[1].kind", `is "tumbling"; use sliding (at most limit in any window, the default), fixed`},
		{"bucket without a rate", "{kind: bucket, limit: 15}", "rate.rules[1]", "a bucket needs rate, the units a second its counter falls by, such as 0.33 (limit is its capacity)"},
		{"bucket with a negative rate", "{kind: bucket, limit: 15, rate: -1}", "rate.rules[1].rate", "-1: a bucket's counter must fall by more than 0 units a second"},
		{"fixed window with a rate", "{kind: fixed, limit: 5, window: 1m, rate: 2}", "rate.rules[1].rate", "only a bucket has a rate; a fixed window counts limit per window: set kind: bucket, or leave rate out"},
		{"sliding window with a rate", "{limit: 5, window: 1m, rate: 2}", "rate.rules[1].rate", "only a bucket has a rate; a sliding window"},
		{"fixed window without a window", "{kind: fixed, limit: 5}", "rate", "window must be at least 1ms"},
		{"bucket draining for a year", "{kind: bucket, limit: 1000, rate: 0.00001}", "rate", "a full bucket would take 100000000 s to drain"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := override(profile.ReferenceYAML, "rate:\n  rules:\n    - {limit: 20, window: 1s}\n    - "+tt.rule+"\n  ban_after: 10")
			_, err := profile.Parse("p.yaml", []byte(doc))
			require.ErrorIs(t, err, profile.ErrInvalid)
			if tt.field != "rate" {
				line := 0
				for i, l := range strings.Split(doc, "\n") {
					if strings.Contains(l, tt.rule) {
						line = i + 1
					}
				}
				require.ErrorContains(t, err, fmt.Sprintf("line %d: %s: ", line, tt.field))
			}
			require.ErrorContains(t, err, tt.want)
			require.Equal(t, 1, strings.Count(err.Error(), "\n  "), "one problem, said once: %v", err)
		})
	}
	_, err := profile.Parse("p.yaml", []byte(override(profile.ReferenceYAML, "rate:\n  rules: [{limit: 20, window: 1s}]\n  clock_offset: -1s\n  ban_after: 10")))
	require.ErrorContains(t, err, "rate.clock_offset: -1s is negative")
}

// krakenProfile signs as Kraken's private REST API does.
const krakenProfile = `
version: 1
name: kraken
base_url: https://api.kraken.com
default_call: {method: POST, path: /0/private/Balance}
key: {in: header, name: API-Key}
nonce: {in: form, name: nonce}
sign:
  algorithm: hmac-sha512
  secret: base64
  message: [path, sha256(nonce body)]
  output: base64
  in: header
  name: API-Sign
rate:
  rules: [{limit: 15, window: 45s}]
  ban_after: 0
answers:
  own_json: true
  rules:
    - {status: [200], body: EAPI:Invalid nonce, class: bad_nonce}
    - {status: [200], body: EAPI:Rate limit, class: rate_limited}
    - {status: [200], body: EAPI:Invalid key, class: key_unusable}
    - {status: [200], class: done}
`

// binanceProfile signs as Binance's SIGNED endpoints do.
const binanceProfile = `
version: 1
name: binance
base_url: https://api.binance.com
default_call: {method: GET, path: /api/v3/account}
key: {in: header, name: X-MBX-APIKEY}
sign:
  algorithm: hmac-sha256
  message: [query, body]
  output: hex
  in: query
  name: signature
rate:
  rules: [{limit: 6000, window: 1m}]
  max_weight: 100
  ban_after: 0
answers:
  own_json: true
  rules:
    - {status: [200], class: done}
    - {status: [418], class: key_unusable}
`

// TestBuild_ReproducesPublishedSignatures checks two exchanges' published
// examples byte for byte: Kraken's API-Sign (docs.kraken.com, "Authentication")
// and Binance's HMAC signature (binance-spot-api-docs, "SIGNED endpoint
// examples for POST /api/v3/order").
func TestBuild_ReproducesPublishedSignatures(t *testing.T) {
	tests := []struct {
		name    string
		profile string
		call    wire.Call
		creds   profile.Creds
		nonce   int64
		where   func(profile.Built) string
		want    string
	}{
		{
			name:    "kraken API-Sign",
			profile: krakenProfile,
			call:    wire.Call{Method: "POST", Path: "/0/private/AddOrder", Body: "ordertype=limit&pair=XBTUSD&price=37500&type=buy&volume=1.25"},
			creds:   profile.Creds{APIKey: "PUBLIC", Secret: "kQH5HW/8p1uGOVjbgWA7FunAmGO8lsSUXNsu3eow76sz84Q18fWxnyRzBHCd3pd5nE9qa99HAZtuZuj6F1huXg=="},
			nonce:   1616492376594,
			where:   func(b profile.Built) string { return b.Header.Get("API-Sign") },
			want:    "4/dpxb3iT4tp/ZCVEwSnEsLxx0bqyhLpdfOpc6fn7OR8+UClSV5n9E6aSS8MPtnRfp32bAb0nmbRn6H8ndwLUQ==",
		},
		{
			name:    "binance signature",
			profile: binanceProfile,
			call: wire.Call{Method: "POST", Path: "/api/v3/order", Query: []wire.Param{
				{Name: "symbol", Value: "LTCBTC"}, {Name: "side", Value: "BUY"}, {Name: "type", Value: "LIMIT"},
				{Name: "timeInForce", Value: "GTC"}, {Name: "quantity", Value: "1"}, {Name: "price", Value: "0.1"},
				{Name: "recvWindow", Value: "5000"}, {Name: "timestamp", Value: "1499827319559"},
			}},
			creds: profile.Creds{APIKey: "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A", Secret: "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"},
			where: func(b profile.Built) string { return b.URL.Query().Get("signature") },
			want:  "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := profile.Parse(tt.name, []byte(tt.profile))
			require.NoError(t, err)
			b, err := p.Build(&tt.call, tt.creds, profile.Send{Nonce: tt.nonce})
			require.NoError(t, err)
			require.Equal(t, tt.want, tt.where(b))
			all := b.URL.String() + b.Body + strings.Join(b.Header.Values("API-Sign"), "")
			for _, v := range b.Header {
				all += strings.Join(v, "")
			}
			require.NotContains(t, all, tt.creds.Secret, "the secret never leaves: only the signature does")
		})
	}
}

func TestBuild_KrakenPutsTheNonceFirstInTheForm(t *testing.T) {
	p, err := profile.Parse("kraken", []byte(krakenProfile))
	require.NoError(t, err)
	b, err := p.Build(&wire.Call{Method: "POST", Path: "/0/private/AddOrder", Body: "pair=XBTUSD"},
		profile.Creds{APIKey: "PUB", Secret: "c2VjcmV0"}, profile.Send{Nonce: 42})
	require.NoError(t, err)
	require.Equal(t, "nonce=42&pair=XBTUSD", b.Body)
	require.Equal(t, "application/x-www-form-urlencoded", b.Header.Get("Content-Type"))
	require.Equal(t, "PUB", b.Header.Get("API-Key"))
}

func TestBuild_RefusesACallThatSetsWhatTheProfileSets(t *testing.T) {
	p, err := profile.Parse("kraken", []byte(krakenProfile))
	require.NoError(t, err)
	tests := []struct {
		name string
		call wire.Call
		want string
	}{
		{"key header", wire.Call{Method: "POST", Path: "/x", Header: []wire.Param{{Name: "api-key", Value: "x"}}}, `header "API-Key" is the profile's key`},
		{"signature", wire.Call{Method: "POST", Path: "/x", Header: []wire.Param{{Name: "API-Sign", Value: "x"}}}, "the profile's sign"},
		{"nonce in the form", wire.Call{Method: "POST", Path: "/x", Body: "nonce=1&a=b"}, `form field "nonce"`},
		{"form fields on a GET", wire.Call{Path: "/x"}, "a GET does not have"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := p.Build(&tt.call, profile.Creds{APIKey: "P", Secret: "c2VjcmV0"}, profile.Send{Nonce: 1})
			require.ErrorIs(t, err, profile.ErrCall)
			require.ErrorContains(t, err, tt.want)
		})
	}
}

func TestClassify(t *testing.T) {
	ref := profile.Reference()
	tests := []struct {
		status int
		body   string
		want   profile.Class
	}{
		{200, `{"status":"OK","req_id":"a"}`, profile.Done},
		{429, `{"status":"error","error_msg":"exceeded rate limit"}`, profile.RateLimited},
		{429, `{"status":"error","error_msg":"too many rate limit errors: blocked"}`, profile.KeyUnusable},
		{400, `{"status":"error","error_msg":"invalid nonce"}`, profile.BadNonce},
		{401, `{"status":"error","error_msg":"invalid api key"}`, profile.KeyUnusable},
		{503, `{"status":"error","error_msg":"injected fault"}`, profile.RetryLater},
		{502, `<html>bad gateway</html>`, profile.Gateway},
		{429, `<html>slow down</html>`, profile.RateLimited},
		{302, ``, profile.Gateway},
		{404, `<html>not found</html>`, profile.Done},          // refused in front of the upstream: final
		{403, `<html>forbidden</html>`, profile.Done},          // a firewall's refusal: final
		{408, `<html>request timeout</html>`, profile.Gateway}, // the request may not have been read whole
		{504, `<html>gateway timeout</html>`, profile.Gateway},
		// Only a top-level status makes an answer the upstream's own.
		{503, `{"error":{"status":"down"}}`, profile.Gateway},
		{503, `[{"status":"error"}]`, profile.Gateway},
		{503, `{"status":"error"`, profile.Gateway},
		{503, `{"req_id":"a","detail":[1,{"x":2}],"status":"error"}`, profile.RetryLater},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.status, " ", tt.body), func(t *testing.T) {
			got, msg := ref.Classify(tt.status, []byte(tt.body))
			require.Equal(t, tt.want, got)
			if got == profile.Done {
				require.Empty(t, msg, "a served answer has no error message")
			} else {
				require.NotEmpty(t, msg)
			}
		})
	}
}

func TestClassify_LogsTheUpstreamsMessage(t *testing.T) {
	got, msg := profile.Reference().Classify(429, []byte(`{"status":"error","error_msg":"exceeded rate limit"}`))
	require.Equal(t, profile.RateLimited, got)
	require.Equal(t, "exceeded rate limit", msg)
}

func TestParse_SaysWhatIsWrong(t *testing.T) {
	tests := []struct {
		name, edit, want string
	}{
		{"unknown field", "name: reference\nnmae: x", "unknown field"},
		{"bad key place", "key: {in: cookie, name: k}", `key.in: is "cookie"`},
		{"weight above a rule", "rate: {rules: [{limit: 5, window: 1s}], max_weight: 10, ban_after: 10}", "limit 5 is below max_weight 10"},
		{"ban after one", "rate: {rules: [{limit: 5, window: 1s}], ban_after: 1}", "ban_after: 1"},
		{"two values in one place", "nonce: {in: query, name: api_key}", "same place"},
		{"unknown class", "answers: {rules: [{status: [200], class: fine}]}", `class: is "fine"`},
		{"signs a nonce it does not place", "nonce: null\nsign: {algorithm: hmac-sha256, message: [nonce], output: hex, in: header, name: S}", "places none"},
		{"window not whole ms", "rate: {rules: [{limit: 5, window: 1500us}], ban_after: 10}", "whole number of milliseconds"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := profile.Parse("p.yaml", []byte(override(profile.ReferenceYAML, tt.edit)))
			require.True(t, errors.Is(err, profile.ErrInvalid), "%v", err)
			require.ErrorContains(t, err, tt.want)
		})
	}
}

// TestParse_RefusesHeaderNamesThatAreNoTokensAndNegativeDurations checks that
// every header name a profile gives is an RFC 7230 token (a CR or LF in one would
// forge headers) and that no duration is negative, each refused with its field
// and its line.
func TestParse_RefusesHeaderNamesThatAreNoTokensAndNegativeDurations(t *testing.T) {
	tests := []struct {
		name, edit string
		field, at  string // the problem's field, and text on the line it is on
		want       string
	}{
		{"key header with CR LF", `key: {in: header, name: "X-Key\r\nX-Evil: 1"}`, "key.name", "key:", "must be a header name, an RFC 7230 token"},
		{"key header with a space", `key: {in: header, name: "X Key"}`, "key.name", "key:", "RFC 7230 token"},
		{"key header with a colon", `key: {in: header, name: "X-Key:"}`, "key.name", "key:", "RFC 7230 token"},
		{"request id header with LF", `request_id: {in: header, name: "X-Id\n"}`, "request_id.name", "request_id:", "RFC 7230 token"},
		{"passphrase header with a control", `passphrase: {in: header, name: "X-Pass\u0000"}`, "passphrase.name", "passphrase:", "RFC 7230 token"},
		{"timestamp header that is not ASCII", `timestamp: {in: header, name: "X-Zeit-ä"}`, "timestamp.name", "timestamp:", "RFC 7230 token"},
		{"signature header with CR", "nonce: null\nsign:\n  algorithm: hmac-sha256\n  message: [path]\n  output: hex\n  in: header\n  name: \"Sig\\r\"", "sign.name", "name: \"Sig", "RFC 7230 token"},
		{"kept header with LF", "answers:\n  rules: [{status: [200], class: done}]\n  keep_headers: [Content-Type, \"X-A\\nB\"]", "answers.keep_headers[1]", "keep_headers", "RFC 7230 token"},
		{"negative max_delay", "rate:\n  rules: [{limit: 20, window: 1s}]\n  max_delay: -50ms\n  ban_after: 10", "rate.max_delay", "max_delay: -50ms", "-50ms is negative"},
		{"negative window", "rate:\n  rules:\n    - {limit: 20, window: 1s}\n    - {limit: 100, window: -1m}\n  ban_after: 10", "rate.rules[1].window", "window: -1m", "-1m0s is negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := override(profile.ReferenceYAML, tt.edit)
			line := 0
			for i, l := range strings.Split(doc, "\n") {
				if strings.Contains(l, tt.at) {
					line = i + 1
				}
			}
			require.Positive(t, line, "the test's text %q is in the profile", tt.at)
			_, err := profile.Parse("p.yaml", []byte(doc))
			require.ErrorIs(t, err, profile.ErrInvalid)
			require.ErrorContains(t, err, fmt.Sprintf("line %d: %s: ", line, tt.field))
			require.ErrorContains(t, err, tt.want)
		})
	}
	for _, ok := range []string{`key: {in: header, name: "X-MBX-APIKEY"}`, `key: {in: header, name: "x_key.v2~!#$%&'*+^|"}`} {
		_, err := profile.Parse("p.yaml", []byte(override(profile.ReferenceYAML, ok)))
		require.NoError(t, err, ok)
	}
}

// override replaces the top-level fields of base that edit sets.
func override(base, edit string) string {
	set := map[string]bool{}
	for _, l := range strings.Split(edit, "\n") {
		if k, _, ok := strings.Cut(l, ":"); ok && !strings.HasPrefix(l, " ") {
			set[k] = true
		}
	}
	var out []string
	skip := false
	for _, l := range strings.Split(base, "\n") {
		if !strings.HasPrefix(l, " ") && !strings.HasPrefix(l, "#") {
			k, _, _ := strings.Cut(l, ":")
			skip = set[k]
		}
		if !skip {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n") + "\n" + edit + "\n"
}

func TestExamples_AreValid(t *testing.T) {
	for name, doc := range map[string]string{"signed": profile.SignedYAML, "per-minute": profile.PerMinuteYAML} {
		t.Run(name, func(t *testing.T) {
			_, err := profile.Parse(name, []byte(doc))
			require.NoError(t, err)
		})
	}
}

func TestCallPattern_Match(t *testing.T) {
	tests := []struct {
		pattern, method, path string // the pattern's method is POST
		want                  bool
	}{
		{"/0/private/Balance", "POST", "/0/private/Balance", true},
		{"/0/private/Balance", "GET", "/0/private/Balance", false},
		{"/0/private/Balance", "POST", "/0/private/Balance/x", false},
		{"/0/private/Balance", "POST", "/0/private/balance", false},
		{"/0/private/Balance", "POST", "/0/private/%42alance", false},
		{"/0/private/*", "POST", "/0/private/AddOrder", true},
		{"/0/private/*", "POST", "/0/private/", false},
		{"/0/private/*", "POST", "/0/private", false},
		{"/0/private/*", "POST", "/0/private/a/b", false},
		{"/api/*/orders", "POST", "/api/v3/orders", true},
		{"/api/*/orders", "POST", "/api/v3/trades", false},
		{"/0/private/**", "POST", "/0/private", true},
		{"/0/private/**", "POST", "/0/private/", true},
		{"/0/private/**", "POST", "/0/private/a/b/c", true},
		{"/0/private/**", "POST", "/0/public/Time", false},
		{"/0/private/**", "POST", "/0/privateX", false},
		{"/**", "POST", "/anything/at/all", true},
		{"/", "POST", "/", true},
		{"/", "POST", "/x", false},
	}
	for _, tt := range tests {
		t.Run(tt.pattern+" "+tt.method+" "+tt.path, func(t *testing.T) {
			require.Equal(t, tt.want, profile.CallPattern{Method: "POST", Path: tt.pattern}.Match(tt.method, tt.path))
		})
	}
}

// krakenCalls is krakenProfile with the calls it permits.
const krakenCalls = krakenProfile + `
calls:
  - {method: POST, path: /0/private/Balance}
  - {method: POST, path: /0/private/AddOrder}
  - {method: POST, path: /0/private/Query*}
  - {method: GET, path: /0/public/**}
`

func TestCheckCall_RefusesACallTheProfileDoesNotList(t *testing.T) {
	listed, err := profile.Parse("kraken", []byte(strings.Replace(krakenCalls, "/0/private/Query*", "/0/private/QueryOrders", 1)))
	require.NoError(t, err)
	unlisted, err := profile.Parse("kraken", []byte(krakenProfile))
	require.NoError(t, err)
	tests := []struct {
		name string
		call wire.Call
		ok   bool // with the list; without it every call here is allowed
	}{
		{"listed", wire.Call{Method: "POST", Path: "/0/private/AddOrder", Body: "pair=XBTUSD"}, true},
		{"under a listed **", wire.Call{Method: "GET", Path: "/0/public/Ticker"}, true},
		{"not listed", wire.Call{Method: "POST", Path: "/0/private/Withdraw", Body: "asset=XBT"}, false},
		{"listed path, other method", wire.Call{Method: "DELETE", Path: "/0/private/AddOrder"}, false},
		{"a GET by default", wire.Call{Path: "/0/private/Balance"}, false},
		{"one segment more", wire.Call{Method: "POST", Path: "/0/private/AddOrder/x"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.NoError(t, unlisted.CheckCall(&tt.call), "no list: unchanged")
			err := listed.CheckCall(&tt.call)
			if tt.ok {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, profile.ErrNotAllowed)
			require.ErrorIs(t, err, profile.ErrCall, "no retry will change it")
			require.ErrorContains(t, err, fmt.Sprintf("%s %q", tt.call.GetMethod(), tt.call.Path))
			_, err = listed.Build(&tt.call, profile.Creds{APIKey: "P", Secret: "c2VjcmV0"}, profile.Send{Nonce: 1})
			require.ErrorIs(t, err, profile.ErrNotAllowed, "Build refuses it too")
		})
	}
}

func TestParse_CallsSayWhatIsWrong(t *testing.T) {
	const balance = "  - {method: POST, path: /0/private/Balance}\n"         // the default call
	second := fmt.Sprintf("line %d: ", strings.Count(krakenProfile, "\n")+3) // the second entry's
	tests := []struct{ name, calls, want string }{
		{"unknown method", balance + "  - {method: FETCH, path: /x}", second + `calls[1].method: is "FETCH"`},
		{"lower-case method", balance + "  - {method: post, path: /x}", `calls[1].method: is "post"`},
		{"no slash", balance + "  - {method: POST, path: x}", second + `calls[1].path: "x" must start with /`},
		{"going up", balance + "  - {method: POST, path: /a/../b}", "must not hold . or .. segments"},
		{"a query", balance + "  - {method: POST, path: /a?b=1}", "holds no query"},
		{"a partial glob", balance + "  - {method: POST, path: /a/b*}", "* stands alone"},
		{"** in the middle", balance + "  - {method: POST, path: /a/**/b}", "** only as the last segment"},
		{"an unknown field", balance + "  - {method: POST, path: /a, weight: 2}", "unknown field"},
		{"the default call not listed", "  - {method: POST, path: /0/private/AddOrder}", "default_call: POST /0/private/Balance is not among the calls listed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := profile.Parse("kraken.yaml", []byte(krakenProfile+"calls:\n"+tt.calls+"\n"))
			require.ErrorIs(t, err, profile.ErrInvalid)
			require.ErrorContains(t, err, tt.want)
		})
	}
}
