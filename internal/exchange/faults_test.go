package exchange_test

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/exchange"
)

// faultsWire is the admin endpoint's JSON shape.
type faultsWire struct {
	ErrorRate      float64 `json:"error_rate"`
	ErrorStatus    int     `json:"error_status"`
	ErrorAfter     bool    `json:"error_after"`
	ExtraDelayMS   int64   `json:"extra_delay_ms"`
	ExtraInDelayMS int64   `json:"extra_in_delay_ms"`
	DownForMS      int64   `json:"down_for_ms"`
	DownDrop       bool    `json:"down_drop"`
}

func TestAdminFaults_ChangesOnlyTheFieldsSent(t *testing.T) {
	s, c := start(t, fastConfig(newFakeClock()))
	var got faultsWire
	c.JSON(http.MethodGet, "/admin/faults", "", &got)
	assert.Equal(t, faultsWire{ErrorStatus: 503}, got, "no faults at start")

	c.JSON(http.MethodPost, "/admin/faults", `{"error_rate":0.25,"extra_delay_ms":200}`, &got)
	assert.Equal(t, faultsWire{ErrorRate: 0.25, ErrorStatus: 503, ExtraDelayMS: 200}, got)
	c.JSON(http.MethodPost, "/admin/faults", `{"error_status":500,"error_after":true}`, &got)
	want := faultsWire{ErrorRate: 0.25, ErrorStatus: 500, ErrorAfter: true, ExtraDelayMS: 200}
	assert.Equal(t, want, got)
	assert.Equal(t, exchange.Faults{ErrorRate: 0.25, ErrorStatus: 500, ErrorAfter: true, ExtraDelay: 200 * time.Millisecond}, s.Faults())

	for _, tc := range []struct{ body, msg string }{
		{`{"error_rate":1.5}`, "error_rate 1.5 must be from 0 to 1"},
		{`{"error_status":404}`, "error_status 404 must be a 5xx status"},
		{`{"extra_delay_ms":-1}`, "must be at least 0"},
		{`{"eror_rate":0.1}`, `unknown field`},
		{`not json`, "invalid faults"},
	} {
		a := c.Do(http.MethodPost, "/admin/faults", "application/json", tc.body)
		assert.Equal(t, http.StatusBadRequest, a.Status, tc.body)
		assert.Equal(t, "application/json", a.ContentType)
		assert.Contains(t, a.Body, tc.msg)
	}
	c.JSON(http.MethodGet, "/admin/faults", "", &got)
	assert.Equal(t, want, got, "a refused change changes nothing")

	c.JSON(http.MethodDelete, "/admin/faults", "", &got)
	assert.Equal(t, faultsWire{ErrorStatus: 503}, got)
}

func TestFaults_ErrorBeforeTheChecksDoesNothing(t *testing.T) {
	cfg := fastConfig(newFakeClock())
	cfg.Faults = exchange.Faults{ErrorRate: 1}
	s, c := start(t, cfg)
	assert.Equal(t, ansFault503, c.Request(secret(0), 1, "a"))
	assert.Equal(t, ansInvalidKey, c.Request("nope", 1, "a"), "unknown keys get 401 first")

	st := s.Stats()
	assert.Equal(t, uint64(1), st.Faults)
	assert.Equal(t, exchange.KeyStats{Name: "key1", Fingerprint: st.Keys[0].Fingerprint}, st.Keys[0], "no slot, no nonce")
	assert.Zero(t, st.DistinctIDs)

	require.NoError(t, s.SetFaults(exchange.Faults{}))
	assert.Equal(t, ansOK("a"), c.Request(secret(0), 1, "a"), "nonce 1 was never used")
}

func TestFaults_ErrorAfterTheChecksLosesOnlyTheAnswer(t *testing.T) {
	cfg := fastConfig(newFakeClock())
	cfg.Faults = exchange.Faults{ErrorRate: 1, ErrorAfter: true, ErrorStatus: 502}
	s, c := start(t, cfg)
	want := answer{502, `{"status":"error","error_msg":"injected fault"}`, "application/json"}
	assert.Equal(t, want, c.Request(secret(0), 1, "a"))
	assert.Equal(t, want, c.Request(secret(0), 2, "a"), "a retry of the same request")
	assert.Equal(t, want, c.Request(secret(0), 2, "b"), "its bad nonce is hidden too")

	st := s.Stats()
	assert.Equal(t, uint64(3), st.Faults)
	assert.Equal(t, uint64(3), st.Keys[0].Accepted)
	assert.Equal(t, uint64(2), st.Keys[0].OK)
	assert.Equal(t, uint64(1), st.Keys[0].BadNonce)
	assert.Equal(t, int64(2), st.Keys[0].LastNonce)
	assert.Equal(t, 1, st.DistinctIDs)
	assert.Equal(t, 1, st.Duplicates, "request a was done twice")
}

func TestFaults_ErrorRateIsAShareOfRequests(t *testing.T) {
	cfg := fastConfig(newFakeClock())
	cfg.Limit = 1000
	cfg.Faults = exchange.Faults{ErrorRate: 0.3}
	s, c := start(t, cfg)
	const n = 400
	nonce := int64(0)
	for range n {
		nonce++
		a := c.Request(secret(0), nonce, "x")
		require.Contains(t, []int{200, 503}, a.Status)
	}
	faults := s.Stats().Faults
	assert.InDelta(t, 0.3*n, float64(faults), 0.1*n, "faults %d of %d", faults, n)
}

func TestFaults_DownPeriodAnswersAtOnceOnTheServersClock(t *testing.T) {
	clock := newFakeClock()
	cfg := fastConfig(clock)
	var log sleepLog
	cfg.Sleep = log.Sleep
	s, c := start(t, cfg)

	var got faultsWire
	c.JSON(http.MethodPost, "/admin/faults", `{"down_for_ms":2000}`, &got)
	assert.Equal(t, int64(2000), got.DownForMS)
	assert.Equal(t, ansFault503, c.Request(secret(0), 1, "a"))
	assert.Equal(t, ansFault503, c.Request("nope", 1, "a"), "down for every request")
	assert.Empty(t, log.Take(), "a down server answers at once")

	clock.Set(1500)
	c.JSON(http.MethodGet, "/admin/faults", "", &got)
	assert.Equal(t, int64(500), got.DownForMS, "what is left of the period")
	assert.Equal(t, ansFault503, c.Request(secret(0), 1, "a"))

	clock.Set(2000)
	assert.Equal(t, ansOK("a"), c.Request(secret(0), 1, "a"), "up again when the period ends")
	assert.Equal(t, uint64(3), s.Stats().Faults)
}

func TestFaults_DownDropClosesConnections(t *testing.T) {
	cfg := fastConfig(newFakeClock())
	cfg.Faults = exchange.Faults{DownFor: time.Hour, DownDrop: true}
	s, c := start(t, cfg)
	_, err := c.http.Get(c.base + "/api/request?api_key=" + secret(0) + "&nonce=1")
	require.Error(t, err, "no answer")
	assert.Equal(t, uint64(1), s.Stats().Faults)

	var got faultsWire
	c.JSON(http.MethodGet, "/admin/faults", "", &got)
	assert.True(t, got.DownDrop)
	assert.Equal(t, time.Hour.Milliseconds(), got.DownForMS)
}

func TestFaults_ExtraDelaysAddToTheDrawnDelays(t *testing.T) {
	cfg := fastConfig(newFakeClock())
	var log sleepLog
	cfg.Sleep = log.Sleep
	cfg.InDelay = exchange.DelayRange{Min: 3 * time.Millisecond, Max: 3 * time.Millisecond}
	cfg.OutDelay = exchange.DelayRange{Min: 5 * time.Millisecond, Max: 5 * time.Millisecond}
	cfg.Faults = exchange.Faults{ExtraDelay: 200 * time.Millisecond, ExtraInDelay: 70 * time.Millisecond}
	_, c := start(t, cfg)

	assert.Equal(t, ansOK("a"), c.Request(secret(0), 1, "a"))
	assert.Equal(t, []time.Duration{73 * time.Millisecond, 205 * time.Millisecond}, log.Take())
	assert.Equal(t, ansInvalidKey, c.Request("nope", 1, "a"))
	assert.Equal(t, []time.Duration{205 * time.Millisecond}, log.Take())
}

func TestFaults_SpikesLengthenTheIncomingDelayOfEveryRequestAtShareOne(t *testing.T) {
	log := &sleepLog{}
	cfg := exchange.DefaultConfig()
	cfg.Sleep = log.Sleep
	cfg.InDelay = exchange.DelayRange{Min: 3 * time.Millisecond, Max: 3 * time.Millisecond}
	cfg.OutDelay = exchange.DelayRange{Min: 5 * time.Millisecond, Max: 5 * time.Millisecond}
	cfg.Faults = exchange.Faults{SpikeShare: 1, SpikeDelay: 300 * time.Millisecond}
	ex, c := start(t, cfg)
	assert.Equal(t, ansOK("a"), c.Request(secret(0), 1, "a"))
	assert.Equal(t, []time.Duration{303 * time.Millisecond, 5 * time.Millisecond}, log.Take())
	assert.Equal(t, ansOK("b"), c.Request(secret(0), 2, "b"))
	assert.EqualValues(t, 2, ex.Stats().Spikes, "every spike is counted")
}

func TestFaults_JSONRoundTrip(t *testing.T) {
	f := exchange.Faults{ErrorRate: 0.5, ErrorStatus: 504, ErrorAfter: true, ExtraDelay: time.Second,
		ExtraInDelay: 3 * time.Millisecond, SpikeShare: 0.01, SpikeDelay: 300 * time.Millisecond,
		DownFor: 2 * time.Second, DownDrop: true}
	b, err := json.Marshal(f)
	require.NoError(t, err)
	assert.JSONEq(t, `{"error_rate":0.5,"error_status":504,"error_after":true,"extra_delay_ms":1000,
		"extra_in_delay_ms":3,"spike_share":0.01,"spike_delay_ms":300,"down_for_ms":2000,"down_drop":true}`, string(b))
	var back exchange.Faults
	require.NoError(t, json.Unmarshal(b, &back))
	assert.Equal(t, f, back)
}
