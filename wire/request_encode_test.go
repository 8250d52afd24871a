package wire_test

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/wire"
)

// marshalled is what encoding/json writes for r once Encode has set its version.
func marshalled(t *testing.T, r wire.Request) string {
	t.Helper()
	r.V = max(r.V, r.NeededVersion())
	b, err := json.Marshal(r)
	require.NoError(t, err)
	return string(b)
}

func TestRequest_EncodeWritesWhatEncodingJSONWrites(t *testing.T) {
	at := time.Date(2026, 12, 7, 21, 50, 1, 123456789, time.FixedZone("", -5*3600-30*60))
	call := &wire.Call{
		Method: "POST", Path: "/0/private/<Add>&Order",
		Query:  []wire.Param{{Name: "pair", Value: "XBT/EUR"}, {Name: "q", Value: "a&b <c>"}},
		Header: []wire.Param{{Name: "X-Note", Value: "é \u2028 😀"}},
		Body:   "type=buy&volume=1.25", ContentType: "application/x-www-form-urlencoded; charset=\"utf-8\"",
	}
	full := wire.Request{
		V: 4, ID: "3f1c2a9e-5d7b-4c1a-9b1e-0a1b2c3d4e5f", Created: at, TTLms: 90_000,
		Payload:  json.RawMessage(" {\n \"symbol\" : \"BTC<&>\\u0041\",\t\"n\": [1, 2.5e3, null, true] }\n"),
		ReplayOf: "grave-17", Call: call, Weight: 20, Costs: map[string]int64{"output_tokens": 512, "input_tokens": 1_000, "a": 0},
		ReplyTo: "ratefleet.reply.alice.x", Key: "k007", Priority: wire.Urgent, Results: wire.ResultsReply,
	}
	tests := []struct {
		name string
		r    wire.Request
	}{
		{"every field", full},
		{"an account instead of a key", func() wire.Request { r := full; r.Key, r.Account = "", "acct_1"; return r }()},
		{"a label instead of a key", func() wire.Request { r := full; r.Key, r.Label = "", "spot-eu"; return r }()},
		{"the fewest", wire.Request{ID: "a", Created: time.Unix(0, 0).UTC(), TTLms: 1}},
		{"as the producer makes it", wire.New(time.Now(), time.Minute, json.RawMessage(`{"pair":"XBTEUR"}`))},
		{"an id and payload to escape", wire.Request{
			V: 1, ID: "<script>&\u2028\u2029 é", Created: at, TTLms: 5,
			Payload: json.RawMessage("\"a\u2028b\u2029c \\\"q\\\" é\""),
		}},
		{"a call with only a path", wire.Request{V: 2, ID: "p", Created: at, TTLms: 5, Call: &wire.Call{Path: "/x"}}},
		{"a payload of null", wire.Request{V: 1, ID: "n", Created: at, TTLms: 5, Payload: json.RawMessage("null")}},
	}
	// Between them the rows set every field that is written.
	set := map[string]bool{}
	for _, tt := range tests {
		v := reflect.ValueOf(tt.r)
		for i := range v.NumField() {
			if !v.Field(i).IsZero() {
				set[v.Type().Field(i).Name] = true
			}
		}
	}
	for _, f := range reflect.VisibleFields(reflect.TypeFor[wire.Request]()) {
		if f.Tag.Get("json") != "-" {
			require.True(t, set[f.Name], "no row sets %s", f.Name)
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.r.Encode()
			require.NoError(t, err)
			require.Equal(t, marshalled(t, tt.r), string(got))
			back, err := wire.Decode(got)
			require.NoError(t, err)
			require.Equal(t, tt.r.ID, back.ID)
		})
	}
}

func TestRequest_EncodeRefusesWhatJSONCannotCarry(t *testing.T) {
	ok := wire.Request{V: 1, ID: "a", Created: time.Unix(0, 0), TTLms: 5}
	tests := []struct {
		name string
		mod  func(*wire.Request)
	}{
		{"a year past 9999", func(r *wire.Request) { r.Created = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }},
		{"a year before 0", func(r *wire.Request) { r.Created = time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC) }},
		{"an offset of a day", func(r *wire.Request) { r.Created = time.Unix(0, 0).In(time.FixedZone("", 24*3600)) }},
		{"a payload that is not JSON", func(r *wire.Request) { r.Payload = json.RawMessage(`{"a":`) }},
		{"a payload with more after it", func(r *wire.Request) { r.Payload = json.RawMessage(`{} {}`) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := ok
			tt.mod(&r)
			_, werr := json.Marshal(r)
			require.Error(t, werr, "encoding/json takes it")
			_, err := r.Encode()
			require.Error(t, err)
		})
	}
}

func FuzzRequest_Encode(f *testing.F) {
	f.Add("id", []byte(`{"a":1}`), int64(0), 0, "/x", "v", "body", "input_tokens", int64(7), "k1")
	f.Add("<&>\u2028", []byte(" [ \"\\u00e9\xff\" , 1e5 ]\n"), int64(-1), 86399, "/a b", "\x00\"\\", "é😀", "", int64(0), "")
	f.Add("x", []byte(`"\u2029<"`), int64(1)<<62, -86400, "/", "", "", "z", int64(-1), "a.b")
	f.Fuzz(func(t *testing.T, id string, payload []byte, nsec int64, offset int, path, value, body, dim string, cost int64, key string) {
		r := wire.Request{
			V: 1, ID: id, Created: time.Unix(0, nsec).In(time.FixedZone("", offset)), TTLms: 1 + nsec&0xffff,
			Payload: payload, ReplayOf: value, Key: key, Results: wire.ResultsKeep,
		}
		if path != "" {
			r.Call = &wire.Call{Method: "POST", Path: path, Query: []wire.Param{{Name: "q", Value: value}}, Body: body}
		}
		if dim != "" {
			r.Costs = map[string]int64{dim: cost, "output_tokens": 1}
		}
		got, err := r.Encode()
		r.V = max(r.V, r.NeededVersion())
		if r.Validate() != nil {
			require.Error(t, err, "a request that fails Validate is not encoded")
			return
		}
		want, werr := json.Marshal(r)
		if werr != nil {
			require.Error(t, err)
			return
		}
		require.NoError(t, err)
		require.Equal(t, string(want), string(got))
	})
}
