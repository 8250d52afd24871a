package exchange_test

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/exchange"
)

func TestRequest_OKEchoesReqIDAsSentInCompactJSON(t *testing.T) {
	_, c := start(t, fastConfig(newFakeClock()))
	for i, tc := range []struct{ reqID, body string }{
		{"abc-1", `{"status":"OK","req_id":"abc-1"}`},
		{"", `{"status":"OK","req_id":""}`},
		{`a "quoted" \ id`, `{"status":"OK","req_id":"a \"quoted\" \\ id"}`},
		{"<&>", `{"status":"OK","req_id":"<&>"}`},
		{"é", `{"status":"OK","req_id":"é"}`},
	} {
		t.Run(tc.reqID, func(t *testing.T) {
			got := c.Request(secret(0), int64(i+1), tc.reqID)
			assert.Equal(t, answer{200, tc.body, "application/json"}, got)
		})
	}
}

func TestRequest_UnknownKeyGets401AfterOnlyTheOutgoingDelay(t *testing.T) {
	cfg := fastConfig(newFakeClock())
	var log sleepLog
	cfg.Sleep = log.Sleep
	cfg.InDelay = exchange.DelayRange{Min: 300 * time.Millisecond, Max: 300 * time.Millisecond}
	cfg.OutDelay = exchange.DelayRange{Min: 7 * time.Millisecond, Max: 7 * time.Millisecond}
	s, c := start(t, cfg)

	for _, apiKey := range []string{"NOT-A-KEY", "", secret(0) + "X"} {
		assert.Equal(t, ansInvalidKey, c.Request(apiKey, 1, "r"))
		assert.Equal(t, []time.Duration{7 * time.Millisecond}, log.Take(), "only the outgoing delay")
	}
	assert.Equal(t, ansOK("r"), c.Request(secret(0), 1, "r"))
	assert.Equal(t, []time.Duration{300 * time.Millisecond, 7 * time.Millisecond}, log.Take())
	assert.Equal(t, uint64(3), s.Stats().UnknownKey)
}

// step is one request of a table: sent so that it arrives at t0+at ms.
type step struct {
	at    int64
	key   int
	nonce int64
	want  answer
}

func runSteps(t *testing.T, clock *fakeClock, c *client, steps []step) {
	t.Helper()
	for i, st := range steps {
		clock.Set(st.at)
		got := c.Request(secret(st.key), st.nonce, "id")
		if st.want.Status == http.StatusOK {
			st.want = ansOK("id")
		}
		require.Equal(t, st.want, got, "step %d: key %d nonce %d at %d ms", i, st.key, st.nonce, st.at)
	}
}

// burst returns n steps of one key at one time, with nonces from nonce on.
func burst(at int64, key int, nonce int64, n int, want answer) []step {
	var out []step
	for i := range n {
		out = append(out, step{at, key, nonce + int64(i), want})
	}
	return out
}

func TestRequest_RateLimitAcceptsOnlyMoreThanWindowAfterThe20thPrevious(t *testing.T) {
	ok := answer{Status: 200}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"the ring starts all zeros: 20 pass at once, the 21st is rejected", concat(
			burst(0, 0, 1, 20, ok),
			burst(0, 0, 21, 1, ansRateLimited),
		)},
		{"exactly Window after the 20th previous is not more than Window", concat(
			burst(0, 0, 1, 20, ok),
			burst(999, 0, 21, 1, ansRateLimited),
			burst(1000, 0, 21, 1, ansRateLimited),
			burst(1001, 0, 21, 20, ok),
			burst(1001, 0, 41, 1, ansRateLimited),
		)},
		{"the limit slides one accepted request at a time", concat(
			burst(0, 0, 1, 10, ok),
			burst(500, 0, 11, 10, ok),
			burst(1001, 0, 21, 10, ok),
			burst(1001, 0, 31, 1, ansRateLimited),
			burst(1501, 0, 31, 10, ok),
		)},
		{"keys are limited separately", concat(
			burst(0, 0, 1, 20, ok),
			burst(0, 1, 1, 20, ok),
			burst(0, 0, 21, 1, ansRateLimited),
			burst(0, 1, 21, 1, ansRateLimited),
		)},
		{"rejected requests do not enter the ring", concat(
			burst(0, 0, 1, 20, ok),
			burst(999, 0, 21, 1, ansRateLimited),
			// Had the rejection at 999 entered the ring, the 20th of these would be
			// within 1000 ms of it.
			burst(1001, 0, 21, 20, ok),
		)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock()
			_, c := start(t, fastConfig(clock))
			runSteps(t, clock, c, tc.steps)
		})
	}
}

func concat(parts ...[]step) []step {
	var out []step
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func TestRequest_TenthRejectionBlocksKeyForGood(t *testing.T) {
	clock := newFakeClock()
	s, c := start(t, fastConfig(clock))
	runSteps(t, clock, c, concat(
		burst(0, 0, 1, 20, answer{Status: 200}),
		burst(0, 0, 21, 10, ansRateLimited), // the 10th rejection is still "exceeded"
		burst(5000, 0, 21, 3, ansBlocked),   // then every request, valid or not
		burst(5000, 1, 1, 1, answer{Status: 200}),
		burst(100_000, 0, 24, 1, ansBlocked),
	))
	st := s.Stats().Keys[0]
	assert.True(t, st.Blocked)
	assert.Equal(t, 10, st.Rejections, "blocked answers are no rejections")
	assert.Equal(t, uint64(4), st.BlockedAnswers)
	assert.Equal(t, uint64(10), st.RateLimited)
	assert.Equal(t, int64(20), st.LastNonce, "a blocked request moves no nonce")
	assert.False(t, s.Stats().Keys[1].Blocked)
}

func TestRequest_BlockAfterZeroNeverBlocks(t *testing.T) {
	clock := newFakeClock()
	cfg := fastConfig(clock)
	cfg.BlockAfter = 0
	_, c := start(t, cfg)
	runSteps(t, clock, c, concat(
		burst(0, 0, 1, 20, answer{Status: 200}),
		burst(0, 0, 21, 50, ansRateLimited),
		burst(1001, 0, 21, 1, answer{Status: 200}),
	))
}

func TestRequest_BadNonceStillUsesARateSlot(t *testing.T) {
	clock := newFakeClock()
	cfg := fastConfig(clock)
	cfg.Limit = 2
	s, c := start(t, cfg)
	runSteps(t, clock, c, []step{
		{0, 0, 1, answer{Status: 200}},
		{0, 0, 1, ansBadNonce},    // accepted by the rate limit, then refused
		{0, 0, 2, ansRateLimited}, // the bad nonce took the second slot
		{1001, 0, 2, answer{Status: 200}},
	})
	st := s.Stats().Keys[0]
	assert.Equal(t, uint64(3), st.Accepted)
	assert.Equal(t, uint64(2), st.OK)
	assert.Equal(t, uint64(1), st.BadNonce)
	assert.Equal(t, uint64(1), st.RateLimited)
}

func TestRequest_NonceMustBeAnIntegerAboveTheLastAccepted(t *testing.T) {
	cfg := fastConfig(newFakeClock())
	cfg.Limit = 1000
	s, c := start(t, cfg)
	send := func(nonce string) answer {
		return c.RequestRaw(url.Values{"api_key": {secret(0)}, "nonce": {nonce}, "req_id": {"id"}})
	}
	for _, tc := range []struct {
		nonce string
		want  answer
	}{
		{"0", ansBadNonce}, // the last nonce starts at 0
		{"-1", ansBadNonce},
		{"5", ansOK("id")},
		{"5", ansBadNonce},
		{"4", ansBadNonce},
		{"abc", ansBadNonce},
		{"", ansBadNonce},
		{"6.0", ansBadNonce},
		{"0x10", ansBadNonce},
		{"99999999999999999999", ansBadNonce}, // beyond int64
		{"6", ansOK("id")},                    // bad nonces did not move the last one
		{"+7", ansOK("id")},
		{"1700000000000000", ansOK("id")},
	} {
		assert.Equal(t, tc.want, send(tc.nonce), "nonce %q", tc.nonce)
	}
	assert.Equal(t, int64(1700000000000000), s.Stats().Keys[0].LastNonce)

	q := url.Values{"api_key": {secret(1)}, "req_id": {"id"}}
	assert.Equal(t, ansBadNonce, c.RequestRaw(q), "a missing nonce is a bad one")
}

func TestRequest_ParametersFromAFormBodyOnAGet(t *testing.T) {
	_, c := start(t, fastConfig(newFakeClock()))
	form := url.Values{"api_key": {secret(0)}, "nonce": {"1"}, "req_id": {"from-body"}}.Encode()
	for _, tc := range []struct {
		name, query, contentType, body string
		want                           answer
	}{
		{"form body", "", "application/x-www-form-urlencoded", form, ansOK("from-body")},
		{"form body with charset", "", "application/x-www-form-urlencoded; charset=utf-8",
			url.Values{"api_key": {secret(0)}, "nonce": {"2"}, "req_id": {"cs"}}.Encode(), ansOK("cs")},
		{"body without a content type", "", "",
			url.Values{"api_key": {secret(0)}, "nonce": {"3"}, "req_id": {"bare"}}.Encode(), ansOK("bare")},
		{"query and body mixed", "?req_id=q&nonce=4", "application/x-www-form-urlencoded",
			url.Values{"api_key": {secret(0)}, "nonce": {"1"}}.Encode(), ansOK("q")},
		{"a JSON body is not a form", "", "application/json",
			`{"api_key":"` + secret(0) + `","nonce":5}`, ansInvalidKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, c.Do(http.MethodGet, "/api/request"+tc.query, tc.contentType, tc.body))
		})
	}
}

func TestRequest_OnlyGetIsServed(t *testing.T) {
	_, c := start(t, fastConfig(newFakeClock()))
	for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodDelete} {
		got := c.Do(m, "/api/request?api_key="+secret(0)+"&nonce=1", "", "")
		assert.Equal(t, http.StatusMethodNotAllowed, got.Status, m)
		assert.Equal(t, "application/json", got.ContentType)
	}
}

// barrier lets sleeps of one length return only once n of them are sleeping at once.
type barrier struct {
	d       time.Duration
	n       int
	mu      sync.Mutex
	waiting int
	most    int
	all     chan struct{}
}

func (b *barrier) Sleep(ctx context.Context, d time.Duration) error {
	if d != b.d {
		return nil
	}
	b.mu.Lock()
	b.waiting++
	b.most = max(b.most, b.waiting)
	if b.waiting == b.n {
		close(b.all)
	}
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		b.waiting--
		b.mu.Unlock()
	}()
	select {
	case <-b.all:
		return nil
	case <-time.After(10 * time.Second):
		return nil // not all came: the test fails on b.most
	case <-ctx.Done():
		return ctx.Err()
	}
}

func TestRequest_TwoRequestsOfOneKeyAreServedConcurrently(t *testing.T) {
	cfg := fastConfig(newFakeClock())
	b := &barrier{d: 200 * time.Millisecond, n: 2, all: make(chan struct{})}
	cfg.Sleep = b.Sleep
	cfg.InDelay = exchange.DelayRange{Min: b.d, Max: b.d}
	cfg.OutDelay = exchange.DelayRange{}
	_, c := start(t, cfg)

	var wg sync.WaitGroup
	got := make([]answer, 2)
	for i := range 2 {
		wg.Go(func() { got[i] = c.Request(secret(0), int64(i+1), strconv.Itoa(i)) })
	}
	wg.Wait()
	assert.Equal(t, 2, b.most, "both requests were in their delay at once")
	// Either may arrive first; the first checked passes, the other passes only if its
	// nonce is the greater.
	oks := 0
	for _, a := range got {
		assert.Contains(t, []int{200, 400}, a.Status)
		if a.Status == 200 {
			oks++
		}
	}
	assert.GreaterOrEqual(t, oks, 1)
}

// firstHeld holds the first incoming delay until released; the others return at once.
type firstHeld struct {
	in       time.Duration
	mu       sync.Mutex
	calls    int
	sleeping chan struct{}
	release  chan struct{}
}

func (f *firstHeld) Sleep(ctx context.Context, d time.Duration) error {
	if d != f.in {
		return nil
	}
	f.mu.Lock()
	f.calls++
	first := f.calls == 1
	f.mu.Unlock()
	if !first {
		return nil
	}
	close(f.sleeping)
	select {
	case <-f.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func TestRequest_TheRequestThatArrivesFirstIsCheckedFirst(t *testing.T) {
	cfg := fastConfig(newFakeClock())
	h := &firstHeld{in: 10 * time.Millisecond, sleeping: make(chan struct{}), release: make(chan struct{})}
	cfg.Sleep = h.Sleep
	cfg.InDelay = exchange.DelayRange{Min: h.in, Max: h.in}
	_, c := start(t, cfg)

	first := make(chan answer)
	go func() { first <- c.Request(secret(0), 1, "sent-first") }()
	<-h.sleeping
	// Sent second, nonce 2: it overtakes the first, which is still in its delay.
	assert.Equal(t, ansOK("sent-second"), c.Request(secret(0), 2, "sent-second"))
	close(h.release)
	assert.Equal(t, ansBadNonce, <-first, "nonce 1 arrives after nonce 2")
}

func TestRequest_DefaultDelaysAreWholeMillisecondsFrom0To50(t *testing.T) {
	cfg := exchange.DefaultConfig()
	var log sleepLog
	cfg.Sleep = log.Sleep
	cfg.Seed = 7
	_, c := start(t, cfg)

	const requests = 600
	for i := range requests {
		c.Request(secret(i%5), int64(i+1), "id") // statuses do not matter here
	}
	delays := log.Take()
	require.Len(t, delays, 2*requests, "an incoming and an outgoing delay each")
	seen := map[time.Duration]bool{}
	var sum time.Duration
	for _, d := range delays {
		require.Zero(t, d%time.Millisecond, "whole milliseconds: %v", d)
		require.True(t, d >= 0 && d <= 50*time.Millisecond, "in 0..50 ms: %v", d)
		seen[d] = true
		sum += d
	}
	assert.Len(t, seen, 51, "every value from 0 to 50 ms, both ends included")
	mean := sum / time.Duration(len(delays))
	assert.InDelta(t, 25*time.Millisecond, mean, float64(3*time.Millisecond), "uniform: mean %v", mean)
}

func TestRequest_RealDelaysServeManyKeysAtOnce(t *testing.T) {
	cfg := exchange.DefaultConfig()
	cfg.InDelay = exchange.DelayRange{Min: time.Millisecond, Max: 5 * time.Millisecond}
	cfg.OutDelay = cfg.InDelay
	_, c := start(t, cfg)

	var wg sync.WaitGroup
	got := make([]answer, 5)
	for i := range got {
		wg.Go(func() { got[i] = c.Request(secret(i), 1, strconv.Itoa(i)) })
	}
	wg.Wait()
	for i, a := range got {
		assert.Equal(t, ansOK(strconv.Itoa(i)), a)
	}
}
