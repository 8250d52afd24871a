package exchange_test

import (
	"bytes"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/exchange"
)

func TestStats_CountsEachAnswerOnce(t *testing.T) {
	clock := newFakeClock()
	s, c := start(t, fastConfig(clock))
	ok := answer{Status: 200}
	runSteps(t, clock, c, concat(
		burst(0, 0, 1, 18, ok),
		[]step{{0, 0, 18, ansBadNonce}, {0, 0, 19, ok}},
		burst(10, 0, 20, 10, ansRateLimited),
		burst(20, 0, 20, 2, ansBlocked),
		burst(30, 1, 1, 3, ok),
	))
	c.Request("nope", 1, "x")
	c.Request("", 1, "x")

	var got exchange.Stats
	c.JSON(http.MethodGet, "/stats", "", &got)
	assert.Equal(t, s.Stats(), got, "GET /stats is Stats")
	k := got.Keys[0]
	assert.Equal(t, exchange.KeyStats{
		Name: "key1", Fingerprint: k.Fingerprint,
		Accepted: 20, OK: 19, RateLimited: 10, BadNonce: 1, BlockedAnswers: 2,
		Rejections: 10, Blocked: true, MaxInWindow: 20, LastNonce: 19,
	}, k)
	assert.Len(t, k.Fingerprint, 8)
	assert.Equal(t, exchange.KeyStats{
		Name: "key2", Fingerprint: got.Keys[1].Fingerprint, Accepted: 3, OK: 3, MaxInWindow: 3, LastNonce: 3,
	}, got.Keys[1])
	assert.Len(t, got.Keys, 5)
	assert.Equal(t, uint64(22), got.OK)
	assert.Equal(t, uint64(2), got.UnknownKey)
	assert.Equal(t, 1, got.DistinctIDs, "every request here had req_id id")
	assert.Equal(t, 1, got.Duplicates)
	assert.Equal(t, 20, got.Limit)
	assert.Equal(t, int64(1000), got.WindowMS)
	assert.Equal(t, 10, got.BlockAfter)
}

func TestStats_MaxInWindowCountsAcceptedArrivalsInWindowPlusOneMs(t *testing.T) {
	clock := newFakeClock()
	cfg := fastConfig(clock)
	cfg.Limit = 5
	s, c := start(t, cfg)
	ok := answer{Status: 200}
	runSteps(t, clock, c, []step{
		{0, 0, 1, ok},
		{1000, 0, 2, ok}, // 0 and 1000 both lie in [0, 1000]
		{2001, 0, 3, ok}, // 1000 does not lie in [1001, 2001]
		{3001, 0, 4, ok},
	})
	assert.Equal(t, 2, s.Stats().Keys[0].MaxInWindow)

	runSteps(t, clock, c, concat(
		burst(5000, 0, 5, 5, ok),
		burst(5000, 0, 10, 1, ansRateLimited),
	))
	assert.Equal(t, 5, s.Stats().Keys[0].MaxInWindow, "the limit")
}

func TestStats_ExactlyOnceCountsByReqID(t *testing.T) {
	cfg := fastConfig(newFakeClock())
	cfg.Limit = 100
	s, c := start(t, cfg)
	c.Request(secret(0), 1, "a")
	c.Request(secret(0), 2, "b")
	c.Request(secret(1), 1, "b") // b done twice, through another key
	c.Request(secret(0), 3, "c")
	c.Request(secret(0), 3, "d") // bad nonce: d not done
	c.Request(secret(0), 4, "c") // c done twice
	c.Request(secret(0), 5, "c") // and thrice: still one duplicate id

	st := s.Stats()
	assert.Equal(t, 3, st.DistinctIDs)
	assert.Equal(t, 2, st.Duplicates)
	assert.Nil(t, st.IDs, "Stats leaves the lists out")
	assert.Equal(t, map[string]int{"a": 1, "b": 2, "c": 3}, s.IDCounts())

	var got exchange.Stats
	c.JSON(http.MethodGet, "/stats?ids=1", "", &got)
	assert.Equal(t, []string{"a", "b", "c"}, got.IDs)
	assert.Equal(t, []string{"b", "c"}, got.DuplicateIDs)
	var plain exchange.Stats
	c.JSON(http.MethodGet, "/stats", "", &plain)
	assert.Nil(t, plain.IDs)
}

func TestStats_IDSetIsBounded(t *testing.T) {
	cfg := fastConfig(newFakeClock())
	cfg.MaxIDs = 2
	s, c := start(t, cfg)
	for i, id := range []string{"a", "b", "c", "a", "d"} {
		c.Request(secret(0), int64(i+1), id)
	}
	st := s.Stats()
	assert.Equal(t, 2, st.DistinctIDs)
	assert.Equal(t, 1, st.Duplicates, "ids already held are still counted")
	assert.Equal(t, uint64(2), st.UntrackedIDs)
}

// The ledger keeps canonical UUIDs as bytes and every other id as text; ids
// are still compared as the strings sent, whatever form they take.
func TestStats_ExactlyOnceComparesIDsAsSentInEveryForm(t *testing.T) {
	const id = "0b4f6c52-3c1e-4d7a-9a2b-5e8f00c1d2e3"
	forms := []struct{ name, id string }{
		{"canonical", id},
		{"upper case", strings.ToUpper(id)},
		{"braces", "{" + id + "}"},
		{"urn", "urn:uuid:" + id},
		{"no hyphens", strings.ReplaceAll(id, "-", "")},
		{"not hex", "0b4f6c52-3c1e-4d7a-9a2b-5e8f00c1d2eg"},
		{"plain", "order-17"},
	}
	for _, c := range "abcdef" {
		i := strings.IndexRune(id, c)
		forms = append(forms, struct{ name, id string }{"one " + string(c) + " in upper case", id[:i] + strings.ToUpper(string(c)) + id[i+1:]})
	}
	cfg := fastConfig(newFakeClock())
	cfg.Limit = 100
	s, c := start(t, cfg)
	nonce := int64(0)
	want := map[string]int{}
	for _, f := range forms {
		for range 2 {
			nonce++
			require.Equal(t, 200, c.Request(secret(0), nonce, f.id).Status, f.name)
		}
		want[f.id] = 2
	}
	nonce++
	require.Equal(t, 200, c.Request(secret(0), nonce, "1b4f6c52-3c1e-4d7a-9a2b-5e8f00c1d2e3").Status)
	want["1b4f6c52-3c1e-4d7a-9a2b-5e8f00c1d2e3"] = 1

	assert.Equal(t, want, s.IDCounts())
	st := s.Stats()
	assert.Equal(t, len(forms)+1, st.DistinctIDs)
	assert.Equal(t, len(forms), st.Duplicates)
	var got exchange.Stats
	c.JSON(http.MethodGet, "/stats?ids=1", "", &got)
	var dups []string
	for _, f := range forms {
		dups = append(dups, f.id)
		assert.Len(t, got.DuplicateTimes[f.id], 2, f.name)
	}
	slices.Sort(dups)
	assert.Equal(t, dups, got.DuplicateIDs)
	assert.Equal(t, slices.Sorted(maps.Keys(want)), got.IDs)
}

func TestStats_ResetZeroesCountersButNotTheRules(t *testing.T) {
	clock := newFakeClock()
	s, c := start(t, fastConfig(clock))
	runSteps(t, clock, c, concat(
		burst(0, 0, 1, 20, answer{Status: 200}),
		burst(0, 0, 21, 10, ansRateLimited),
	))
	c.Request("nope", 1, "x")

	var got map[string]string
	c.JSON(http.MethodPost, "/admin/reset-stats", "", &got)
	assert.Equal(t, map[string]string{"status": "OK"}, got)
	st := s.Stats()
	k := st.Keys[0]
	assert.Equal(t, exchange.KeyStats{
		Name: "key1", Fingerprint: k.Fingerprint, Rejections: 10, Blocked: true, LastNonce: 20,
	}, k)
	assert.Zero(t, st.UnknownKey)
	assert.Zero(t, st.DistinctIDs)
	assert.Equal(t, ansBlocked, c.Request(secret(0), 21, "x"), "still blocked")
}

// syncBuffer is a bytes.Buffer safe for the server's concurrent log writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func TestStats_AndLogsNeverShowASecret(t *testing.T) {
	clock := newFakeClock()
	var logs syncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv, err := exchange.New(fastConfig(clock), logger)
	require.NoError(t, err)
	require.NoError(t, srv.Open("127.0.0.1:0"))
	t.Cleanup(func() { srv.Close(t.Context()) })
	c := &client{t: t, base: srv.URL(), http: &http.Client{}}

	runSteps(t, clock, c, concat(
		burst(0, 0, 1, 20, answer{Status: 200}),
		burst(0, 0, 21, 10, ansRateLimited), // logs the block
	))
	c.Request("SOMEONE-ELSES-SECRET", 1, "x")
	c.JSON(http.MethodPost, "/admin/faults", `{"error_rate":0.1}`, new(map[string]any))

	stats := c.Do(http.MethodGet, "/stats?ids=1", "", "").Body
	faults := c.Do(http.MethodGet, "/admin/faults", "", "").Body
	require.Contains(t, stats, `"name":"key1"`)
	require.Contains(t, logs.String(), "blocked")
	for _, k := range exchange.DefaultKeys() {
		for where, text := range map[string]string{"stats": stats, "faults": faults, "logs": logs.String()} {
			assert.NotContains(t, text, k.Secret(), "%s shows %s's secret", where, k.Name())
			assert.NotContains(t, text, k.Secret()[:12], "%s shows part of %s's secret", where, k.Name())
		}
	}
	assert.NotContains(t, logs.String(), "SOMEONE-ELSES-SECRET", "nor a key it does not know")
	assert.True(t, strings.Contains(logs.String(), exchange.DefaultKeys()[0].Fingerprint()), "keys are logged by fingerprint")
}
