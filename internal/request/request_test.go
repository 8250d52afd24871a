package request_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/request"
)

func TestRequest_RoundTrip(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 600_000_000, time.UTC)
	r := request.New(now, 1500*time.Millisecond, json.RawMessage(`{"symbol":"BTC"}`))
	b, err := r.Encode()
	require.NoError(t, err)
	got, err := request.Decode(b)
	require.NoError(t, err)
	require.Equal(t, r.ID, got.ID)
	require.True(t, r.Created.Equal(got.Created))
	require.JSONEq(t, `{"symbol":"BTC"}`, string(got.Payload))
	require.Equal(t, now.Add(1500*time.Millisecond), got.Deadline())
}

func TestRequest_Expired(t *testing.T) {
	now := time.Unix(1000, 0)
	r := request.New(now, time.Second, nil)
	tests := []struct {
		at   time.Duration
		want bool
	}{{0, false}, {999 * time.Millisecond, false}, {time.Second, true}, {2 * time.Second, true}}
	for _, tt := range tests {
		require.Equal(t, tt.want, r.Expired(now.Add(tt.at)), "at +%s", tt.at)
	}
}

func TestDecode_Rejects(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want error
	}{
		{"not json", `hello`, request.ErrMalformed},
		{"no id", `{"v":1,"created":"2026-01-01T00:00:00Z","ttl_ms":1000}`, request.ErrMalformed},
		{"zero ttl", `{"v":1,"id":"a","created":"2026-01-01T00:00:00Z","ttl_ms":0}`, request.ErrMalformed},
		{"unknown field", `{"v":1,"id":"a","created":"2026-01-01T00:00:00Z","ttl_ms":5,"x":1}`, request.ErrMalformed},
		{"trailing", `{"v":1,"id":"a","created":"2026-01-01T00:00:00Z","ttl_ms":5} {}`, request.ErrMalformed},
		{"future version", `{"v":2,"id":"a","created":"2026-01-01T00:00:00Z","ttl_ms":5}`, request.ErrUnsupportedVersion},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := request.Decode([]byte(tt.in))
			require.ErrorIs(t, err, tt.want)
		})
	}
}
