package wire

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// plainRequests are requests as producers write them, and with every field.
func plainRequests() []Request {
	at := time.Date(2026, 12, 7, 22, 5, 1, 123456789, time.FixedZone("", 3600))
	return []Request{
		New(at, time.Minute, json.RawMessage(`{"pair":"XBTEUR"}`)),
		New(at.UTC(), time.Second, nil),
		{V: 4, ID: "r é 😀", Created: at, TTLms: 90_000,
			Payload:  json.RawMessage(`[1,-2.5e-3,"a\"b\\u00e9",{"x":[true,false,null]},{}]`),
			ReplayOf: "grave-1", Weight: 20, Costs: map[string]int64{"input_tokens": 1_000, "output_tokens": 0, "a": 7},
			Call: &Call{Method: "POST", Path: "/0/private/AddOrder", Query: []Param{{"pair", "XBT/EUR"}, {"q", ""}},
				Header: []Param{{"X-A", "1"}}, Body: "type=buy", ContentType: "text/plain"},
			ReplyTo: "ratefleet.reply.alice.x", Label: "spot", Priority: Urgent, Results: ResultsNone},
		{V: 3, ID: "k", Created: at, TTLms: 1, Key: "k007", Payload: json.RawMessage(`"just a string"`)},
		{V: 3, ID: "a", Created: at, TTLms: 1, Account: "acct-1", Payload: json.RawMessage(`12`)},
		{V: 2, ID: "c", Created: at, TTLms: 1, Call: &Call{Path: "/x"}, Payload: json.RawMessage(`null`)},
	}
}

func TestDecodePlain_ReadsWhatEncodeWritesAsEncodingJSONDoes(t *testing.T) {
	for _, r := range plainRequests() {
		data, err := r.Encode()
		require.NoError(t, err)
		t.Run(string(data), func(t *testing.T) {
			got, ok := decodePlain(data)
			require.True(t, ok, "Encode's output goes the plain way")
			want, err := decodeJSON(data)
			require.NoError(t, err)
			require.Equal(t, want, got)
		})
	}
}

func TestDecodePlain_LeavesTheRestToEncodingJSON(t *testing.T) {
	const base = `"id":"a","created":"2026-01-01T00:00:00Z","ttl_ms":5`
	tests := []struct {
		name, in string
	}{
		{"a space", `{"v":1, ` + base + `}`},
		{"an escape", `{"v":1,"id":"a\u0041","created":"2026-01-01T00:00:00Z","ttl_ms":5}`},
		{"invalid UTF-8", "{\"v\":1,\"id\":\"a\xff\",\"created\":\"2026-01-01T00:00:00Z\",\"ttl_ms\":5}"},
		{"a name in capitals", `{"V":1,` + base + `}`},
		{"a field twice", `{"v":1,"v":1,` + base + `}`},
		{"a call twice", `{"v":2,` + base + `,"call":{"path":"/a"},"call":{"method":"POST"}}`},
		{"a null", `{"v":1,` + base + `,"replay_of":null}`},
		{"an empty list", `{"v":2,` + base + `,"call":{"path":"/a","query":[]}}`},
		{"an empty map", `{"v":3,` + base + `,"costs":{}}`},
		{"a number with a fraction", `{"v":1.0,` + base + `}`},
		{"a number with an exponent", `{"v":1e0,` + base + `}`},
		{"a number too large", `{"v":1,` + base[:len(base)-1] + `99999999999999999999}`},
		{"a leading zero", `{"v":01,` + base + `}`},
		{"data after the object", `{"v":1,` + base + `}` + "\n"},
		{"an unknown field", `{"v":1,` + base + `,"x":1}`},
		{"a newer version", `{"v":9,` + base + `}`},
		{"a payload with a space before it", `{"v":1,` + base + `,"payload": {}}`},
		{"a payload that is not JSON", `{"v":1,` + base + `,"payload":{"a":}}`},
		{"a time that is not RFC 3339", `{"v":1,"id":"a","created":"2026-01-01 00:00:00","ttl_ms":5}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, ok := decodePlain([]byte(tt.in))
			require.False(t, ok)
		})
	}
}

func FuzzDecodePlain(f *testing.F) {
	for _, r := range plainRequests() {
		data, err := r.Encode()
		require.NoError(f, err)
		f.Add(data)
	}
	f.Add([]byte(`{"v":1,"id":"a","created":"2026-01-01T00:00:00Z","ttl_ms":5,"payload":[{"a":"}"},"]"]}`))
	f.Add([]byte(`{"v":2,"id":"a","created":"2026-01-01T00:00:00+01:00","ttl_ms":-0,"call":{"path":"/","query":[{"value":"1","name":"b"}]}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		got, ok := decodePlain(data)
		if !ok {
			return
		}
		want, err := decodeJSON(data)
		require.NoError(t, err, "encoding/json refuses what the plain way read")
		require.Equal(t, want, got)
	})
}
