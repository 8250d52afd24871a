package exchange_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/exchange"
)

// t0 is where fake clocks start: far from the ring's initial zeros, as a real clock is.
var t0 = time.UnixMilli(1_700_000_000_000)

// fakeClock is a clock that moves only when told.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: t0} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Set puts the clock at t0 + ms.
func (c *fakeClock) Set(ms int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t0.Add(time.Duration(ms) * time.Millisecond)
}

// sleepLog records the delays asked for and returns at once.
type sleepLog struct {
	mu     sync.Mutex
	delays []time.Duration
}

func (l *sleepLog) Sleep(ctx context.Context, d time.Duration) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.delays = append(l.delays, d)
	return ctx.Err()
}

func (l *sleepLog) Take() []time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.delays
	l.delays = nil
	return out
}

// noSleep returns at once.
func noSleep(ctx context.Context, _ time.Duration) error { return ctx.Err() }

// fastConfig is the reference's rules on a fake clock, with delays that return at once.
func fastConfig(clock *fakeClock) exchange.Config {
	cfg := exchange.DefaultConfig()
	cfg.Now = clock.Now
	cfg.Sleep = noSleep
	cfg.Seed = 1
	return cfg
}

// secret returns the secret of default key i (0 to 4).
func secret(i int) string { return exchange.DefaultKeys()[i].Secret() }

// start opens a server on a free loopback port and closes it when the test ends.
func start(t *testing.T, cfg exchange.Config) (*exchange.Server, *client) {
	t.Helper()
	s, err := exchange.New(cfg, nil)
	require.NoError(t, err)
	require.NoError(t, s.Open("127.0.0.1:0"))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, s.Close(ctx))
	})
	c := &client{t: t, base: s.URL(), http: &http.Client{
		Timeout:   20 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: 64},
	}}
	t.Cleanup(c.http.CloseIdleConnections)
	return s, c
}

// client talks to a server under test.
type client struct {
	t    *testing.T
	base string
	http *http.Client
}

// answer is what an HTTP request got back.
type answer struct {
	Status      int
	Body        string
	ContentType string
}

// Request sends GET /api/request with the parameters in the query string.
func (c *client) Request(apiKey string, nonce int64, reqID string) answer {
	return c.RequestRaw(url.Values{"api_key": {apiKey}, "nonce": {strconv.FormatInt(nonce, 10)}, "req_id": {reqID}})
}

// RequestRaw sends GET /api/request with the parameters q.
func (c *client) RequestRaw(q url.Values) answer {
	return c.Do(http.MethodGet, "/api/request?"+q.Encode(), "", "")
}

// Do sends one request and reads the whole answer.
func (c *client) Do(method, path, contentType, body string) answer {
	c.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	require.NoError(c.t, err)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.http.Do(req)
	require.NoError(c.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(c.t, err)
	return answer{Status: resp.StatusCode, Body: string(b), ContentType: resp.Header.Get("Content-Type")}
}

// JSON sends one request and decodes a 200 answer into v.
func (c *client) JSON(method, path, body string, v any) {
	c.t.Helper()
	a := c.Do(method, path, "application/json", body)
	require.Equal(c.t, http.StatusOK, a.Status, a.Body)
	require.NoError(c.t, json.Unmarshal([]byte(a.Body), v), a.Body)
}

// The API's answers.
var (
	ansInvalidKey  = answer{401, `{"status":"error","error_msg":"invalid api key"}`, "application/json"}
	ansBlocked     = answer{429, `{"status":"error","error_msg":"too many rate limit errors: blocked"}`, "application/json"}
	ansRateLimited = answer{429, `{"status":"error","error_msg":"exceeded rate limit"}`, "application/json"}
	ansBadNonce    = answer{400, `{"status":"error","error_msg":"invalid nonce"}`, "application/json"}
	ansFault503    = answer{503, `{"status":"error","error_msg":"injected fault"}`, "application/json"}
)

func ansOK(reqID string) answer {
	b, _ := json.Marshal(reqID)
	return answer{200, `{"status":"OK","req_id":` + string(b) + `}`, "application/json"}
}
