package exchange_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/exchange"
	"github.com/ratefleet/ratefleet/internal/keys"
)

func TestDefaultConfig_IsTheReferenceExchange(t *testing.T) {
	cfg := exchange.DefaultConfig()
	var secrets []string
	for _, k := range cfg.Keys {
		secrets = append(secrets, k.Secret())
	}
	assert.Equal(t, []string{
		"UT4NHL1J796WCHULA1750MXYF9F5JYA6",
		"8TY2F3KIL38T741G1UCBMCAQ75XU9F5O",
		"954IXKJN28CBDKHSKHURQIVLQHZIEEM9",
		"EUU46ID478HOO7GOXFASKPOZ9P91XGYS",
		"46V5EZ5K2DFAGW85J18L50SGO25WJ5JE",
	}, secrets)
	assert.Equal(t, "key1", cfg.Keys[0].Name())
	assert.Equal(t, 20, cfg.Limit)
	assert.Equal(t, time.Second, cfg.Window)
	assert.Equal(t, exchange.DelayRange{Min: 0, Max: 50 * time.Millisecond}, cfg.InDelay)
	assert.Equal(t, exchange.DelayRange{Min: 0, Max: 50 * time.Millisecond}, cfg.OutDelay)
	assert.Equal(t, 10, cfg.BlockAfter)
	assert.Equal(t, exchange.Faults{}, cfg.Faults)
}

func TestNew_RefusesAConfigThatCannotWorkAndSaysWhy(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*exchange.Config)
		want   string
	}{
		{"no keys", func(c *exchange.Config) { c.Keys = nil }, "no API keys"},
		{"empty secret", func(c *exchange.Config) { c.Keys = []keys.Key{keys.New("a", "")} }, `key 1 ("a") has an empty secret`},
		{"no name", func(c *exchange.Config) { c.Keys = []keys.Key{keys.New("", "S")} }, "key 1 has no name"},
		{"same secret twice", func(c *exchange.Config) { c.Keys = []keys.Key{keys.New("a", "S"), keys.New("b", "S")} }, "repeats the secret"},
		{"same name twice", func(c *exchange.Config) { c.Keys = []keys.Key{keys.New("a", "S"), keys.New("a", "T")} }, `name "a" is used twice`},
		{"zero limit", func(c *exchange.Config) { c.Limit = 0 }, "Limit 0 must be at least 1"},
		{"zero window", func(c *exchange.Config) { c.Window = 0 }, "Window 0s must be a positive whole number of milliseconds"},
		{"fractional window", func(c *exchange.Config) { c.Window = 1500 * time.Microsecond }, "Window 1.5ms"},
		{"negative delay", func(c *exchange.Config) { c.InDelay.Min = -time.Millisecond }, "InDelay -1ms..50ms: both ends must be whole milliseconds"},
		{"reversed delay", func(c *exchange.Config) {
			c.OutDelay = exchange.DelayRange{Min: 9 * time.Millisecond, Max: 2 * time.Millisecond}
		}, "OutDelay 9ms..2ms: Max must be at least Min"},
		{"negative block", func(c *exchange.Config) { c.BlockAfter = -1 }, "BlockAfter -1 must be at least 0"},
		{"negative ids", func(c *exchange.Config) { c.MaxIDs = -1 }, "MaxIDs -1"},
		{"bad fault rate", func(c *exchange.Config) { c.Faults.ErrorRate = 1.5 }, "error_rate 1.5 must be from 0 to 1"},
		{"bad fault status", func(c *exchange.Config) { c.Faults.ErrorStatus = 404 }, "error_status 404 must be a 5xx status"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := exchange.DefaultConfig()
			tc.change(&cfg)
			s, err := exchange.New(cfg, nil)
			require.Error(t, err)
			assert.Nil(t, s)
			assert.ErrorIs(t, err, exchange.ErrInvalidConfig)
			assert.Contains(t, err.Error(), tc.want)
			assert.NotContains(t, err.Error(), "UT4NHL1J", "errors never show a secret")
		})
	}
}

func TestNew_ReportsEveryProblemAtOnce(t *testing.T) {
	cfg := exchange.DefaultConfig()
	cfg.Limit, cfg.Window = 0, 0
	_, err := exchange.New(cfg, nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "Limit 0")
	assert.Contains(t, err.Error(), "Window 0s")
}

func TestOpen_FailsAtOnceOnABusyPort(t *testing.T) {
	s1, _ := start(t, fastConfig(newFakeClock()))
	s2, err := exchange.New(fastConfig(newFakeClock()), nil)
	require.NoError(t, err)
	err = s2.Open(s1.Addr())
	require.Error(t, err)
	assert.ErrorIs(t, err, syscall.EADDRINUSE)
	assert.Contains(t, err.Error(), "listen on "+s1.Addr())
	assert.Empty(t, s2.Addr())
	assert.NoError(t, s2.Close(context.Background()), "closing a server never opened")
}

func TestOpen_TellsTheRealAddressAfterPortZero(t *testing.T) {
	s, err := exchange.New(fastConfig(newFakeClock()), nil)
	require.NoError(t, err)
	assert.Empty(t, s.URL())
	require.NoError(t, s.Open("127.0.0.1:0"))
	defer s.Close(context.Background())
	host, port, err := net.SplitHostPort(s.Addr())
	require.NoError(t, err)
	assert.Equal(t, "127.0.0.1", host)
	assert.NotEqual(t, "0", port)
	assert.Equal(t, "http://"+s.Addr(), s.URL())
	assert.Error(t, s.Open("127.0.0.1:0"), "a server opens once")
}

func TestClose_LetsRequestsInFlightFinish(t *testing.T) {
	cfg := fastConfig(newFakeClock())
	h := &firstHeld{in: 10 * time.Millisecond, sleeping: make(chan struct{}), release: make(chan struct{})}
	cfg.Sleep = h.Sleep
	cfg.InDelay = exchange.DelayRange{Min: h.in, Max: h.in}
	s, err := exchange.New(cfg, nil)
	require.NoError(t, err)
	require.NoError(t, s.Open("127.0.0.1:0"))
	c := &client{t: t, base: s.URL(), http: &http.Client{}}

	got := make(chan answer)
	go func() { got <- c.Request(secret(0), 1, "in-flight") }()
	<-h.sleeping
	closed := make(chan error)
	go func() { closed <- s.Close(context.Background()) }()
	require.Eventually(t, func() bool {
		conn, err := net.Dial("tcp", s.Addr())
		if err == nil {
			conn.Close()
		}
		return err != nil
	}, 10*time.Second, 5*time.Millisecond, "Close stops accepting")
	close(h.release)
	assert.Equal(t, ansOK("in-flight"), <-got)
	assert.NoError(t, <-closed)
}

func TestClose_EndsDelaysWhenItsContextIsDone(t *testing.T) {
	cfg := fastConfig(newFakeClock())
	entered := make(chan struct{}, 1)
	cfg.Sleep = func(ctx context.Context, d time.Duration) error {
		entered <- struct{}{}
		<-ctx.Done() // a delay far longer than the test
		return ctx.Err()
	}
	s, err := exchange.New(cfg, nil)
	require.NoError(t, err)
	require.NoError(t, s.Open("127.0.0.1:0"))

	outcome := make(chan string)
	go func() {
		resp, err := http.Get(s.URL() + "/api/request?api_key=" + secret(0) + "&nonce=1")
		if err != nil {
			outcome <- "no answer"
			return
		}
		resp.Body.Close()
		outcome <- strconv.Itoa(resp.StatusCode)
	}()
	<-entered
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	err = s.Close(ctx)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	// The ended delay answers 503 "server closing", which the closing connection
	// may or may not carry.
	assert.Contains(t, []string{"no answer", "503"}, <-outcome)
}

func TestHandler_ServesWithoutOpen(t *testing.T) {
	s, err := exchange.New(fastConfig(newFakeClock()), nil)
	require.NoError(t, err)
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	c := &client{t: t, base: ts.URL, http: ts.Client()}
	assert.Equal(t, ansOK("h"), c.Request(secret(2), 1, "h"))
	assert.Equal(t, http.StatusNotFound, c.Do(http.MethodGet, "/nope", "", "").Status)
}

func TestClose_TwiceIsHarmless(t *testing.T) {
	s, err := exchange.New(fastConfig(newFakeClock()), nil)
	require.NoError(t, err)
	require.NoError(t, s.Open("127.0.0.1:0"))
	require.NoError(t, s.Close(context.Background()))
	require.NoError(t, s.Close(context.Background()))
}
