package exchange_test

import (
	"context"
	"encoding/base64"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/exchange"
	"github.com/ratefleet/ratefleet/internal/keys"
	"github.com/ratefleet/ratefleet/internal/profile"
)

func startModes(t *testing.T, mutate func(*exchange.Config)) *exchange.Server {
	t.Helper()
	cfg := exchange.DefaultConfig()
	cfg.Keys = []keys.Key{keys.NewSigning("k1", "pub-k1", base64.StdEncoding.EncodeToString([]byte("secret-one")), "")}
	cfg.InDelay, cfg.OutDelay = exchange.DelayRange{}, exchange.DelayRange{}
	if mutate != nil {
		mutate(&cfg)
	}
	ex, err := exchange.New(cfg, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	require.NoError(t, ex.Open("127.0.0.1:0"))
	t.Cleanup(func() { _ = ex.Close(context.Background()) })
	return ex
}

// send makes the profile's default call and returns the status, the body and
// the Retry-After header.
func send(t *testing.T, p *profile.Profile, c profile.Creds, nonce int64, tamper func(*profile.Built)) (int, string, string) {
	t.Helper()
	b, err := p.Build(nil, c, profile.Send{Nonce: nonce, RequestID: "r1", Now: time.Now()})
	require.NoError(t, err)
	if tamper != nil {
		tamper(&b)
	}
	req, err := http.NewRequest(b.Method, b.URL.String(), strings.NewReader(b.Body))
	require.NoError(t, err)
	req.Header = b.Header
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), resp.Header.Get("Retry-After")
}

func TestSignedMode_ChecksTheSignatureAgainstTheKeysSecret(t *testing.T) {
	ex := startModes(t, nil)
	p, err := profile.Parse("signed", []byte(profile.SignedYAML))
	require.NoError(t, err)
	p.BaseURL = ex.URL()
	good := profile.Creds{APIKey: "pub-k1", Secret: base64.StdEncoding.EncodeToString([]byte("secret-one"))}
	tests := []struct {
		name   string
		creds  profile.Creds
		nonce  int64
		tamper func(*profile.Built)
		status int
		body   string
	}{
		{"signed right", good, 1, nil, 200, `"req_id":"r1"`},
		{"wrong secret", profile.Creds{APIKey: "pub-k1", Secret: base64.StdEncoding.EncodeToString([]byte("guess"))}, 2, nil, 401, "invalid signature"},
		{"body changed after signing", good, 3, func(b *profile.Built) { b.Body += "&x=1" }, 401, "invalid signature"},
		{"unknown key id", profile.Creds{APIKey: "pub-zz", Secret: good.Secret}, 4, nil, 401, "invalid signature"},
		{"old nonce, signed right", good, 1, nil, 400, "invalid nonce"},
		{"next nonce", good, 5, nil, 200, `"status":"OK"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body, _ := send(t, p, tt.creds, tt.nonce, tt.tamper)
			require.Equal(t, tt.status, status, body)
			require.Contains(t, body, tt.body)
		})
	}
	st := ex.Stats()
	require.EqualValues(t, 2, st.Keys[0].OK)
	require.EqualValues(t, 3, st.Keys[0].Accepted, "refused signatures took no rate slot")
}

func TestPerMinuteMode_AnswersRateLimitsAndTheThrottleWithRetryAfter(t *testing.T) {
	ex := startModes(t, func(c *exchange.Config) { c.Limit, c.Window, c.BlockAfter = 2, time.Minute, 0 })
	p, err := profile.Parse("per-minute", []byte(profile.PerMinuteYAML))
	require.NoError(t, err)
	p.BaseURL = ex.URL()
	creds := profile.Creds{APIKey: base64.StdEncoding.EncodeToString([]byte("secret-one"))} // the bearer is the secret

	for i := range 2 {
		status, body, _ := send(t, p, creds, 0, nil)
		require.Equal(t, 200, status, "request %d: %s", i, body)
	}
	status, _, retry := send(t, p, creds, 0, nil)
	require.Equal(t, 429, status)
	// The window frees 60 s + 1 ms after the first request, rounded up to whole
	// seconds: 61 when all three came within one millisecond.
	require.Contains(t, []string{"59", "60", "61"}, retry, "seconds until the minute's window frees")

	ex.Throttle(time.Minute, 7*time.Second)
	status, _, retry = send(t, p, creds, 0, nil)
	require.Equal(t, 429, status)
	require.Equal(t, "7", retry)

	status, _, _ = send(t, p, profile.Creds{APIKey: "nope"}, 0, nil)
	require.Equal(t, 401, status)
}

func TestPerMinuteMode_CountsItsSpikes(t *testing.T) {
	ex := startModes(t, func(c *exchange.Config) {
		c.Limit, c.Window, c.BlockAfter = 10, time.Minute, 0
		c.Faults = exchange.Faults{SpikeShare: 1, SpikeDelay: time.Millisecond}
	})
	p, err := profile.Parse("per-minute", []byte(profile.PerMinuteYAML))
	require.NoError(t, err)
	p.BaseURL = ex.URL()
	creds := profile.Creds{APIKey: base64.StdEncoding.EncodeToString([]byte("secret-one"))}
	for range 3 {
		status, body, _ := send(t, p, creds, 0, nil)
		require.Equal(t, 200, status, body)
	}
	require.EqualValues(t, 3, ex.Stats().Spikes, "every spike is counted, in every mode")
}
