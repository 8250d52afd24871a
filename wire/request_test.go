package wire_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/wire"
)

func TestRequest_RoundTrip(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 600_000_000, time.UTC)
	r := wire.New(now, 1500*time.Millisecond, json.RawMessage(`{"symbol":"BTC"}`))
	b, err := r.Encode()
	require.NoError(t, err)
	got, err := wire.Decode(b)
	require.NoError(t, err)
	require.Equal(t, r.ID, got.ID)
	require.True(t, r.Created.Equal(got.Created))
	require.JSONEq(t, `{"symbol":"BTC"}`, string(got.Payload))
	require.Equal(t, now.Add(1500*time.Millisecond), got.Deadline())
}

func TestRequest_Expired(t *testing.T) {
	now := time.Unix(1000, 0)
	r := wire.New(now, time.Second, nil)
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
		{"not json", `hello`, wire.ErrMalformed},
		{"no id", `{"v":1,"created":"2026-01-01T00:00:00Z","ttl_ms":1000}`, wire.ErrMalformed},
		{"zero ttl", `{"v":1,"id":"a","created":"2026-01-01T00:00:00Z","ttl_ms":0}`, wire.ErrMalformed},
		{"unknown field", `{"v":1,"id":"a","created":"2026-01-01T00:00:00Z","ttl_ms":5,"x":1}`, wire.ErrMalformed},
		{"an id that would forge a header", `{"v":1,"id":"a\r\nNats-Msg-Id: b","created":"2026-01-01T00:00:00Z","ttl_ms":5}`, wire.ErrMalformed},
		{"trailing", `{"v":1,"id":"a","created":"2026-01-01T00:00:00Z","ttl_ms":5} {}`, wire.ErrMalformed},
		{"future version", `{"v":5,"id":"a","created":"2026-01-01T00:00:00Z","ttl_ms":5}`, wire.ErrUnsupportedVersion},
		{"future version with fields unknown here", `{"v":5,"id":"a","created":"2026-01-01T00:00:00Z","ttl_ms":5,"call2":{}}`, wire.ErrUnsupportedVersion},
		{"version 1 with a call", `{"v":1,"id":"a","created":"2026-01-01T00:00:00Z","ttl_ms":5,"call":{"path":"/x"}}`, wire.ErrMalformed},
		{"call path with a host", `{"v":2,"id":"a","created":"2026-01-01T00:00:00Z","ttl_ms":5,"call":{"path":"//evil.example/x"}}`, wire.ErrMalformed},
		{"call path going up", `{"v":2,"id":"a","created":"2026-01-01T00:00:00Z","ttl_ms":5,"call":{"path":"/a/../b"}}`, wire.ErrMalformed},
		{"call path going up, encoded", `{"v":2,"id":"a","created":"2026-01-01T00:00:00Z","ttl_ms":5,"call":{"path":"/a/%2e%2e/b"}}`, wire.ErrMalformed},
		{"call path going up, encoded in capitals", `{"v":2,"id":"a","created":"2026-01-01T00:00:00Z","ttl_ms":5,"call":{"path":"/a/%2E%2E/b"}}`, wire.ErrMalformed},
		{"call path going up, half encoded", `{"v":2,"id":"a","created":"2026-01-01T00:00:00Z","ttl_ms":5,"call":{"path":"/a/.%2e/b"}}`, wire.ErrMalformed},
		{"call path going up with an encoded slash", `{"v":2,"id":"a","created":"2026-01-01T00:00:00Z","ttl_ms":5,"call":{"path":"/a/..%2fb"}}`, wire.ErrMalformed},
		{"call path with an encoded slash", `{"v":2,"id":"a","created":"2026-01-01T00:00:00Z","ttl_ms":5,"call":{"path":"/a%2Fb"}}`, wire.ErrMalformed},
		{"call path with an encoded backslash", `{"v":2,"id":"a","created":"2026-01-01T00:00:00Z","ttl_ms":5,"call":{"path":"/a/..%5cb"}}`, wire.ErrMalformed},
		{"call path encoded twice", `{"v":2,"id":"a","created":"2026-01-01T00:00:00Z","ttl_ms":5,"call":{"path":"/a/%252e%252e/b"}}`, wire.ErrMalformed},
		{"call path with a bad escape", `{"v":2,"id":"a","created":"2026-01-01T00:00:00Z","ttl_ms":5,"call":{"path":"/a/%zz"}}`, wire.ErrMalformed},
		{"call path of a single dot, encoded", `{"v":2,"id":"a","created":"2026-01-01T00:00:00Z","ttl_ms":5,"call":{"path":"/a/%2e/b"}}`, wire.ErrMalformed},
		{"call method", `{"v":2,"id":"a","created":"2026-01-01T00:00:00Z","ttl_ms":5,"call":{"method":"CONNECT","path":"/x"}}`, wire.ErrMalformed},
		{"call host header", `{"v":2,"id":"a","created":"2026-01-01T00:00:00Z","ttl_ms":5,"call":{"path":"/x","header":[{"name":"Host","value":"h"}]}}`, wire.ErrMalformed},
		{"call body on a GET", `{"v":2,"id":"a","created":"2026-01-01T00:00:00Z","ttl_ms":5,"call":{"path":"/x","body":"a=1"}}`, wire.ErrMalformed},
		{"reply wildcard", `{"v":2,"id":"a","created":"2026-01-01T00:00:00Z","ttl_ms":5,"reply_to":"x.>"}`, wire.ErrMalformed},
		{"two routes", `{"v":3,"id":"a","created":"2026-01-01T00:00:00Z","ttl_ms":5,"key":"k1","label":"spot"}`, wire.ErrMalformed},
		{"a label that is no token", `{"v":3,"id":"a","created":"2026-01-01T00:00:00Z","ttl_ms":5,"label":"a.b"}`, wire.ErrMalformed},
		{"an unknown priority", `{"v":3,"id":"a","created":"2026-01-01T00:00:00Z","ttl_ms":5,"priority":"high"}`, wire.ErrMalformed},
		{"results in version 3", `{"v":3,"id":"a","created":"2026-01-01T00:00:00Z","ttl_ms":5,"results":"none"}`, wire.ErrMalformed},
		{"unknown results", `{"v":4,"id":"a","created":"2026-01-01T00:00:00Z","ttl_ms":5,"results":"later"}`, wire.ErrMalformed},
		{"a route in version 2", `{"v":2,"id":"a","created":"2026-01-01T00:00:00Z","ttl_ms":5,"label":"spot"}`, wire.ErrMalformed},
		{"weight too high", `{"v":2,"id":"a","created":"2026-01-01T00:00:00Z","ttl_ms":5,"weight":100000}`, wire.ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := wire.Decode([]byte(tt.in))
			require.ErrorIs(t, err, tt.want)
		})
	}
}

func TestEncode_WritesTheLowestVersionThatCarriesTheFields(t *testing.T) {
	now := time.Unix(1000, 0)
	tests := []struct {
		name string
		mod  func(*wire.Request)
		want int
	}{
		{"plain request: every worker reads it", func(*wire.Request) {}, 1},
		{"with a call", func(r *wire.Request) {
			r.Call = &wire.Call{Method: "POST", Path: "/0/private/Balance", Body: "a=1"}
		}, 2},
		{"with a weight", func(r *wire.Request) { r.Weight = 5 }, 2},
		{"with a reply subject", func(r *wire.Request) { r.ReplyTo = "ratefleet.reply.x" }, 2},
		{"with a label", func(r *wire.Request) { r.Label = "spot" }, 3},
		{"urgent", func(r *wire.Request) { r.Priority = wire.Urgent }, 3},
		{"results not kept", func(r *wire.Request) { r.Results = wire.ResultsReply }, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := wire.New(now, time.Second, nil)
			r.V = 0
			tt.mod(&r)
			b, err := r.Encode()
			require.NoError(t, err)
			got, err := wire.Decode(b)
			require.NoError(t, err)
			require.Equal(t, tt.want, got.V)
			require.Equal(t, r.Call, got.Call)
		})
	}
}
