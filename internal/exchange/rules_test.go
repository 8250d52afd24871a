package exchange_test

import (
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/exchange"
)

// reply is an answer with its headers.
type reply struct {
	answer
	Header http.Header
}

// Send makes one request with headers and reads the whole answer.
func (c *client) Send(method, path string, header http.Header, body string) reply {
	c.t.Helper()
	req, err := http.NewRequest(method, c.base+path, strings.NewReader(body))
	require.NoError(c.t, err)
	for name, vs := range header {
		req.Header[name] = vs
	}
	resp, err := c.http.Do(req)
	require.NoError(c.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(c.t, err)
	return reply{answer{resp.StatusCode, string(b), resp.Header.Get("Content-Type")}, resp.Header}
}

// modelConfig is the reference on a fake clock without delays, with no ring, no
// block and no nonce: only rules limit, as the models' are.
func modelConfig(clock *fakeClock, rules ...exchange.Rule) exchange.Config {
	cfg := fastConfig(clock)
	cfg.Limit, cfg.BlockAfter, cfg.NoNonce = 0, 0, true
	cfg.Rules = rules
	return cfg
}

// call is one step of a table: key k sends at t0+at ms; want is the status, and
// retry the Retry-After ("" for none).
type call struct {
	at    int64
	key   int
	want  int
	retry string
}

func runCalls(t *testing.T, clock *fakeClock, c *client, calls []call) {
	t.Helper()
	for i, st := range calls {
		clock.Set(st.at)
		got := c.Send(http.MethodGet, "/api/request?api_key="+secret(st.key)+"&req_id=r", nil, "")
		require.Equal(t, st.want, got.Status, "step %d: key %d at %d ms: %s", i, st.key, st.at, got.Body)
		assert.Equal(t, st.retry, got.Header.Get("Retry-After"), "step %d: Retry-After", i)
	}
}

func times(n int, c call) []call {
	out := make([]call, n)
	for i := range out {
		out[i] = c
	}
	return out
}

func TestRules_EachKindAdmitsByItsOwnCount(t *testing.T) {
	const ok, no = http.StatusOK, http.StatusTooManyRequests
	for _, tc := range []struct {
		name  string
		rule  exchange.Rule
		calls []call
	}{
		{"fixed: the count restarts when the calendar window starts: twice the limit in 3 ms",
			exchange.Rule{Kind: exchange.Fixed, Limit: 3, Window: time.Second, Dimension: exchange.Requests, Scope: exchange.PerKey},
			concatCalls(
				times(3, call{998, 0, ok, ""}),
				[]call{{999, 0, no, "1"}}, // the window [0, 1000) is full; it ends in 1 ms
				times(3, call{1000, 0, ok, ""}),
				[]call{{1001, 0, no, "1"}, {1999, 0, no, "1"}},
				times(3, call{2000, 0, ok, ""}),
			)},
		{"sliding: at most the limit in any span of the window plus one ms",
			exchange.Rule{Kind: exchange.Sliding, Limit: 3, Window: time.Second, Dimension: exchange.Requests, Scope: exchange.PerKey},
			concatCalls(
				times(3, call{998, 0, ok, ""}),
				[]call{{1000, 0, no, "1"}, {1998, 0, no, "1"}}, // 1998 − 998 is not more than 1000
				times(3, call{1999, 0, ok, ""}),
				[]call{{1999, 0, no, "2"}},
			)},
		{"bucket: each call raises the counter by 1, time lowers it by 2 a second",
			exchange.Rule{Kind: exchange.Bucket, Limit: 3, Rate: 2, Dimension: exchange.Requests, Scope: exchange.PerKey},
			concatCalls(
				times(3, call{0, 0, ok, ""}),
				[]call{
					{0, 0, no, "1"},   // 3 + 1 > 3: 500 ms until room
					{499, 0, no, "1"}, // 3 − 0.998 + 1 > 3
					{500, 0, ok, ""},  // 3 − 1 + 1 = 3
					{500, 0, no, "1"},
				},
				times(2, call{1500, 0, ok, ""}), // 3 − 2 + 1 + 1 = 3
				[]call{{1500, 0, no, "1"}},
			)},
		{"keys of a per-key rule are counted apart",
			exchange.Rule{Kind: exchange.Fixed, Limit: 1, Window: time.Second, Dimension: exchange.Requests, Scope: exchange.PerKey},
			[]call{{0, 0, ok, ""}, {0, 1, ok, ""}, {0, 0, no, "1"}, {0, 1, no, "1"}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock()
			_, c := start(t, modelConfig(clock, tc.rule))
			runCalls(t, clock, c, tc.calls)
		})
	}
}

func concatCalls(parts ...[]call) []call {
	var out []call
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func TestScopes_KeysShareTheCounterOfTheirAccountOrOfTheWholeUpstream(t *testing.T) {
	const ok, no = http.StatusOK, http.StatusTooManyRequests
	// key1 and key2 are account "a", key3 account "b"; key4 and key5 their own.
	keys := []int{0, 0, 1, 2, 3}
	for _, tc := range []struct {
		scope exchange.Scope
		want  []int // the answers to keys' calls, a limit of 2 a window
	}{
		{exchange.PerKey, []int{ok, ok, ok, ok, ok}},
		{exchange.PerAccount, []int{ok, ok, no, ok, ok}},
		{exchange.PerIP, []int{ok, ok, no, no, no}},
	} {
		t.Run(string(tc.scope), func(t *testing.T) {
			clock := newFakeClock()
			cfg := modelConfig(clock, exchange.Rule{Kind: exchange.Fixed, Limit: 2, Window: time.Second, Dimension: exchange.Requests, Scope: tc.scope})
			cfg.Accounts = map[string]string{"key1": "a", "key2": "a", "key3": "b"}
			s, c := start(t, cfg)
			var calls []call
			for i, k := range keys {
				retry := ""
				if tc.want[i] == no {
					retry = "1"
				}
				calls = append(calls, call{5, k, tc.want[i], retry})
			}
			runCalls(t, clock, c, calls)
			st := s.Stats()
			assert.Equal(t, "a", st.Keys[1].Account)
			assert.Equal(t, "key4", st.Keys[3].Account, "a key left out is an account of its own")
			assert.Equal(t, map[exchange.Scope]int{exchange.PerKey: 5, exchange.PerAccount: 4, exchange.PerIP: 1}[tc.scope], st.Rules[0].Instances)
		})
	}
}

func TestRules_ACallIsChargedToEveryRuleOnlyWhenAllAdmitIt(t *testing.T) {
	clock := newFakeClock()
	perKey := exchange.Rule{Name: "per key", Kind: exchange.Fixed, Limit: 2, Window: time.Second, Dimension: exchange.Requests, Scope: exchange.PerKey}
	perIP := exchange.Rule{Name: "per ip", Kind: exchange.Fixed, Limit: 3, Window: time.Second, Dimension: exchange.Requests, Scope: exchange.PerIP}
	cfg := modelConfig(clock, perKey, perIP)
	cfg.Limit = 2 // and the reference's ring, 2 per second per key
	s, c := start(t, cfg)
	const ok, no = http.StatusOK, http.StatusTooManyRequests
	runCalls(t, clock, c, []call{
		{0, 0, ok, ""}, {0, 0, ok, ""},
		{0, 0, no, "2"}, // the ring refuses (1001 ms to wait): no rule is asked or charged
		{0, 1, ok, ""},  // so key2 still has the third unit of the upstream
		{0, 1, no, "1"}, // the per-ip rule refuses alone
	})
	st := s.Stats()
	require.Len(t, st.Rules, 2)
	assert.Equal(t, exchange.RuleStats{Name: "per key", Kind: exchange.Fixed, Dimension: exchange.Requests, Scope: exchange.PerKey,
		Limit: 2, WindowMS: 1000, Instances: 5, Charged: 3, Rejections: 0, Peak: 2, Bound: 10}, st.Rules[0],
		"a call the ring refused never reaches the rules")
	assert.Equal(t, exchange.RuleStats{Name: "per ip", Kind: exchange.Fixed, Dimension: exchange.Requests, Scope: exchange.PerIP,
		Limit: 3, WindowMS: 1000, Instances: 1, Charged: 3, Rejections: 1, Peak: 3, Bound: 3}, st.Rules[1])
	assert.Equal(t, uint64(2), st.RateLimited)
	assert.Equal(t, uint64(2), st.Keys[0].Accepted)
}

func TestParseRule(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want exchange.Rule
		err  string
	}{
		{"kind=fixed,limit=6000,window=1m,cost=weight,scope=ip,name=W",
			exchange.Rule{Name: "W", Kind: exchange.Fixed, Limit: 6000, Window: time.Minute, Dimension: exchange.Weight, Scope: exchange.PerIP}, ""},
		{"kind=bucket,limit=20,rate=0.5",
			exchange.Rule{Kind: exchange.Bucket, Limit: 20, Rate: 0.5, Dimension: exchange.Requests, Scope: exchange.PerKey}, ""},
		{"kind=sliding,limit=3,window=1s,cost=output_tokens,scope=account",
			exchange.Rule{Kind: exchange.Sliding, Limit: 3, Window: time.Second, Dimension: exchange.OutputTokens, Scope: exchange.PerAccount}, ""},
		{"kind=fixed,limit=1", exchange.Rule{}, "window 0s must be a positive"},
		{"kind=bucket,limit=1", exchange.Rule{}, "rate 0 must be above 0"},
		{"kind=leaky,limit=1,window=1s", exchange.Rule{}, `kind "leaky"`},
		{"kind=fixed,limit=0,window=1s", exchange.Rule{}, "limit 0 must be at least 1"},
		{"kind=fixed,limit=1,window=1s,cost=bytes", exchange.Rule{}, `cost "bytes"`},
		{"kind=fixed,limit=1,window=1s,scope=user", exchange.Rule{}, `scope "user"`},
		{"kind=fixed,limit=x", exchange.Rule{}, "limit: strconv.ParseInt"},
		{"kind=fixed,size=1", exchange.Rule{}, `unknown field "size"`},
		{"fixed", exchange.Rule{}, "is not name=value"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := exchange.ParseRule(tc.in)
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

func TestNew_RefusesModelFieldsThatCannotWork(t *testing.T) {
	good := exchange.Rule{Kind: exchange.Fixed, Limit: 1, Window: time.Second, Dimension: exchange.Requests, Scope: exchange.PerKey}
	for _, tc := range []struct {
		name   string
		mutate func(*exchange.Config)
		msg    string
	}{
		{"no ring and no rule", func(c *exchange.Config) { c.Limit = 0 }, "Limit 0 must be at least 1"},
		{"bad rule", func(c *exchange.Config) { c.Rules = []exchange.Rule{{Kind: exchange.Fixed, Limit: 1}} }, "Rules[0]"},
		{"two rules of one name", func(c *exchange.Config) { c.Rules = []exchange.Rule{good, good} }, "used twice"},
		{"account of an unknown key", func(c *exchange.Config) { c.Accounts = map[string]string{"key9": "a"} }, `no key is named "key9"`},
		{"cost of a simulator's path", func(c *exchange.Config) {
			c.Costs = []exchange.PathCost{{Method: http.MethodGet, Path: "/stats"}}
		}, "the simulator's own endpoint"},
		{"a path twice", func(c *exchange.Config) {
			c.Costs = []exchange.PathCost{{Method: http.MethodGet, Path: "/x"}, {Method: http.MethodGet, Path: "/x"}}
		}, "listed twice"},
		{"ban without a length", func(c *exchange.Config) { c.Ban = exchange.Ban{After: 3} }, "Ban: within and for must be above 0"},
		{"outside on an unknown key", func(c *exchange.Config) { c.Outside = exchange.Outside{Rate: 1, Keys: []string{"nope"}} }, `Outside: keys: no key is named "nope"`},
		{"unknown format", func(c *exchange.Config) { c.Format = "xml" }, `Format: format "xml"`},
		{"unknown headers", func(c *exchange.Config) { c.UsageHeaders = []exchange.HeaderStyle{"github"} }, `UsageHeaders: "github"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := exchange.DefaultConfig()
			tc.mutate(&cfg)
			_, err := exchange.New(cfg, nil)
			require.ErrorIs(t, err, exchange.ErrInvalidConfig)
			assert.Contains(t, err.Error(), tc.msg)
		})
	}
}

func TestRules_ConcurrentCallsOfAllKeysNeverPassASharedLimit(t *testing.T) {
	clock := newFakeClock()
	cfg := modelConfig(clock,
		exchange.Rule{Name: "ip", Kind: exchange.Fixed, Limit: 50, Window: time.Second, Dimension: exchange.Requests, Scope: exchange.PerIP},
		exchange.Rule{Name: "key", Kind: exchange.Sliding, Limit: 12, Window: time.Second, Dimension: exchange.Requests, Scope: exchange.PerKey},
	)
	cfg.UsageHeaders = []exchange.HeaderStyle{exchange.OpenAIHeaders}
	s, c := start(t, cfg)
	var wg sync.WaitGroup
	var mu sync.Mutex
	oks := 0
	for g := range 8 {
		wg.Go(func() {
			for i := range 20 {
				got := c.Send(http.MethodGet, "/api/request?api_key="+secret((g+i)%5), nil, "")
				if got.Status == http.StatusOK {
					mu.Lock()
					oks++
					mu.Unlock()
				}
				_ = s.Stats() // read while others write
			}
		})
	}
	wg.Wait()
	st := s.Stats()
	assert.Equal(t, 50, oks, "160 calls, 60 room per key, 50 for the whole upstream")
	assert.Equal(t, int64(50), st.Rules[0].Charged)
	assert.Equal(t, float64(50), st.Rules[0].Peak)
	assert.LessOrEqual(t, st.Rules[1].Peak, float64(12))
	assert.Equal(t, uint64(110), st.RateLimited)
}
