package wire_test

import (
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/wire"
)

// schemaPath is the published format of the request record.
const schemaPath = "../docs/request.schema.json"

func compileSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	s, err := c.Compile(schemaPath)
	require.NoError(t, err)
	return s
}

// TestSchema_AgreesWithTheRecord checks docs/request.schema.json against the
// code: every record the code writes is valid by the schema, the records the
// code refuses as malformed for their shape are invalid by it too, and the
// schema names exactly the record's fields, so neither can drift.
func TestSchema_AgreesWithTheRecord(t *testing.T) {
	s := compileSchema(t)
	created := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	v1 := wire.New(created, time.Second, json.RawMessage(`{"order":42}`))
	v2 := wire.New(created, 5*time.Second, nil)
	v2.Call = &wire.Call{Method: "POST", Path: "/0/private/Balance", Query: []wire.Param{{Name: "a", Value: "1"}},
		Header: []wire.Param{{Name: "X-Trace", Value: "t"}}, Body: "x=1", ContentType: "application/x-www-form-urlencoded"}
	v2.Weight, v2.ReplyTo = 3, "ratefleet.reply.alice.1"
	v3 := wire.New(created, time.Second, nil)
	v3.Label, v3.Priority = "spot", wire.Urgent
	v3.Costs = map[string]int64{"input_tokens": 1200, "output_tokens": 512}
	v3k := wire.New(created, time.Second, nil)
	v3k.Key, v3k.Weight = "k1", 2
	for name, r := range map[string]wire.Request{"version 1": v1, "version 2": v2, "version 3": v3, "version 3, a key": v3k} {
		b, err := r.Encode()
		require.NoError(t, err, name)
		doc, err := jsonschema.UnmarshalJSON(strings.NewReader(string(b)))
		require.NoError(t, err)
		require.NoError(t, s.Validate(doc), "%s: %s", name, b)
	}

	for _, bad := range []struct{ name, record string }{
		{"no id", `{"v":1,"created":"2030-01-02T03:04:05Z","ttl_ms":1000}`},
		{"empty id", `{"v":1,"id":"","created":"2030-01-02T03:04:05Z","ttl_ms":1000}`},
		{"no time to live", `{"v":1,"id":"a","created":"2030-01-02T03:04:05Z","ttl_ms":0}`},
		{"an unknown field", `{"v":1,"id":"a","created":"2030-01-02T03:04:05Z","ttl_ms":1000,"prio":1}`},
		{"a call in version 1", `{"v":1,"id":"a","created":"2030-01-02T03:04:05Z","ttl_ms":1000,"call":{"path":"/x"}}`},
		{"a weight too large", `{"v":2,"id":"a","created":"2030-01-02T03:04:05Z","ttl_ms":1000,"weight":1001}`},
		{"a path without its slash", `{"v":2,"id":"a","created":"2030-01-02T03:04:05Z","ttl_ms":1000,"call":{"path":"x"}}`},
		{"a path naming another host", `{"v":2,"id":"a","created":"2030-01-02T03:04:05Z","ttl_ms":1000,"call":{"path":"//evil.example/x"}}`},
		{"a path with a query", `{"v":2,"id":"a","created":"2030-01-02T03:04:05Z","ttl_ms":1000,"call":{"path":"/x?y=1"}}`},
		{"a path going up", `{"v":2,"id":"a","created":"2030-01-02T03:04:05Z","ttl_ms":1000,"call":{"path":"/a/../b"}}`},
		{"a path going up, encoded", `{"v":2,"id":"a","created":"2030-01-02T03:04:05Z","ttl_ms":1000,"call":{"path":"/a/%2e%2E/b"}}`},
		{"a path going up with an encoded slash", `{"v":2,"id":"a","created":"2030-01-02T03:04:05Z","ttl_ms":1000,"call":{"path":"/a/..%2fb"}}`},
		{"a path encoded twice", `{"v":2,"id":"a","created":"2030-01-02T03:04:05Z","ttl_ms":1000,"call":{"path":"/a/%252e%252e/b"}}`},
		{"a method it does not send", `{"v":2,"id":"a","created":"2030-01-02T03:04:05Z","ttl_ms":1000,"call":{"method":"TRACE","path":"/x"}}`},
		{"a reply subject with a wildcard", `{"v":2,"id":"a","created":"2030-01-02T03:04:05Z","ttl_ms":1000,"reply_to":"ratefleet.reply.>"}`},
		{"costs in version 2", `{"v":2,"id":"a","created":"2030-01-02T03:04:05Z","ttl_ms":1000,"costs":{"orders":1}}`},
		{"a negative cost", `{"v":3,"id":"a","created":"2030-01-02T03:04:05Z","ttl_ms":1000,"costs":{"orders":-1}}`},
		{"a cost of no dimension", `{"v":3,"id":"a","created":"2030-01-02T03:04:05Z","ttl_ms":1000,"costs":{"Orders!":1}}`},
		{"a label in version 2", `{"v":2,"id":"a","created":"2030-01-02T03:04:05Z","ttl_ms":1000,"label":"spot"}`},
		{"a key and a label", `{"v":3,"id":"a","created":"2030-01-02T03:04:05Z","ttl_ms":1000,"key":"k1","label":"spot"}`},
		{"an account with a dot", `{"v":3,"id":"a","created":"2030-01-02T03:04:05Z","ttl_ms":1000,"account":"a.b"}`},
		{"an unknown priority", `{"v":3,"id":"a","created":"2030-01-02T03:04:05Z","ttl_ms":1000,"priority":"high"}`},
		{"a created time that is no time", `{"v":1,"id":"a","created":"yesterday","ttl_ms":1000}`},
	} {
		t.Run(bad.name, func(t *testing.T) {
			_, err := wire.Decode([]byte(bad.record))
			require.True(t, errors.Is(err, wire.ErrMalformed), "the code takes it: %v", err)
			doc, err := jsonschema.UnmarshalJSON(strings.NewReader(bad.record))
			require.NoError(t, err)
			require.Error(t, s.Validate(doc), "the schema takes it")
		})
	}

	// The schema's properties are the record's JSON fields, and the call's the call's.
	raw, err := os.ReadFile(schemaPath)
	require.NoError(t, err)
	var doc struct {
		Properties map[string]any `json:"properties"`
		Defs       struct {
			Call struct {
				Properties map[string]any `json:"properties"`
			} `json:"call"`
		} `json:"$defs"`
	}
	require.NoError(t, json.Unmarshal(raw, &doc))
	require.Equal(t, jsonFields(reflect.TypeFor[wire.Request]()), keys(doc.Properties))
	require.Equal(t, jsonFields(reflect.TypeFor[wire.Call]()), keys(doc.Defs.Call.Properties))
}

// TestSchema_PathRulesAgreeWithTheCode checks the call path's rules, which the
// schema writes as a pattern and three it must not match, against the code's on
// paths either side of each rule.
func TestSchema_PathRulesAgreeWithTheCode(t *testing.T) {
	s := compileSchema(t)
	for _, tc := range []struct {
		path string
		ok   bool
	}{
		{"/", true},
		{"/0/private/AddOrder", true},
		{"/v1.2/.well-known/a..b/...", true},
		{"/a/", true},
		{"/a%20b/caf%C3%A9/%41", true},
		{"/a/.", false},
		{"/a/./b", false},
		{"/..", false},
		{"/a/%2e", false},
		{"/a/.%2E/b", false},
		{"/a%2Fb", false},
		{"/a/..%2f..%2fetc", false},
		{"/a/..%5Cb", false},
		{"/a/%252e%252e", false},
		{"/a/%25", false},
		{"/a/%zz", false},
		{"/a/%2", false},
		{"/a/%", false},
		{"/a b", false},
		{"/a\\\\b", false}, // a backslash, as JSON writes it
		{"/a\\u0000b", false},
		{"/a\\tb", false},
		{"//host/a", false},
		{"a/b", false},
	} {
		t.Run(tc.path, func(t *testing.T) {
			record := `{"v":2,"id":"a","created":"2030-01-02T03:04:05Z","ttl_ms":1000,"call":{"path":"` + tc.path + `"}}`
			_, err := wire.Decode([]byte(record))
			require.Equal(t, tc.ok, err == nil, "the code: %v", err)
			if err != nil {
				require.ErrorIs(t, err, wire.ErrMalformed)
			}
			doc, err := jsonschema.UnmarshalJSON(strings.NewReader(record))
			require.NoError(t, err)
			verr := s.Validate(doc)
			require.Equal(t, tc.ok, verr == nil, "the schema: %v", verr)
		})
	}
}

func jsonFields(t reflect.Type) []string {
	var out []string
	for f := range t.Fields() {
		if name, _, _ := strings.Cut(f.Tag.Get("json"), ","); name != "" && name != "-" {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

func keys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// resultSchemaPath is the published format of the result record.
const resultSchemaPath = "../docs/result.schema.json"

// TestResultSchema_AgreesWithTheRecord checks docs/result.schema.json against
// the code: every result the code writes is valid, results it cannot have are
// not, every reason is listed, and the schema names exactly the record's fields.
func TestResultSchema_AgreesWithTheRecord(t *testing.T) {
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	s, err := c.Compile(resultSchemaPath)
	require.NoError(t, err)
	at := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	served := wire.Result{ID: "order-1", Seq: 7, Outcome: wire.Served, Status: 200, Header: map[string][]string{"Content-Type": {"application/json"}},
		Key: "key1", Worker: "w1", Delivery: 1, At: at}
	served.SetBody([]byte(`{"ok":true}`))
	binary := served
	binary.SetBody([]byte{0xff, 0xfe})
	parts := served
	parts.Body, parts.BodyParts, parts.BodySize, parts.BodyDigest = "", 3, 2500000, "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"
	valid := map[string]wire.Result{"served": served, "a binary body": binary, "a body in parts": parts}
	for _, reason := range wire.Reasons() {
		valid["buried "+reason] = wire.Result{ID: "order-2", Seq: 9, Outcome: wire.Buried, Reason: reason, Error: "why", Delivery: 5, At: at}
	}
	for name, r := range valid {
		b, err := r.Encode()
		require.NoError(t, err, name)
		doc, err := jsonschema.UnmarshalJSON(strings.NewReader(string(b)))
		require.NoError(t, err)
		require.NoError(t, s.Validate(doc), "%s: %s", name, b)
		back, err := wire.DecodeResult(b)
		require.NoError(t, err)
		require.Equal(t, r.ID, back.ID)
	}
	for _, bad := range []struct{ name, record string }{
		{"no id", `{"v":1,"outcome":"served","delivery":1,"at":"2030-01-02T03:04:05Z"}`},
		{"an outcome it cannot have", `{"v":1,"id":"a","outcome":"lost","delivery":1,"at":"2030-01-02T03:04:05Z"}`},
		{"buried without a reason", `{"v":1,"id":"a","outcome":"buried","delivery":1,"at":"2030-01-02T03:04:05Z"}`},
		{"a body both inline and in parts", `{"v":1,"id":"a","outcome":"served","body":"x","body_parts":2,"body_size":5,"body_digest":"47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU","delivery":1,"at":"2030-01-02T03:04:05Z"}`},
		{"an unknown field", `{"v":1,"id":"a","outcome":"served","delivery":1,"at":"2030-01-02T03:04:05Z","x":1}`},
	} {
		t.Run(bad.name, func(t *testing.T) {
			doc, err := jsonschema.UnmarshalJSON(strings.NewReader(bad.record))
			require.NoError(t, err)
			require.Error(t, s.Validate(doc), "the schema takes it")
		})
	}
	raw, err := os.ReadFile(resultSchemaPath)
	require.NoError(t, err)
	var doc struct {
		Properties map[string]struct {
			Enum []string `json:"enum"`
		} `json:"properties"`
	}
	require.NoError(t, json.Unmarshal(raw, &doc))
	props := map[string]any{}
	for k := range doc.Properties {
		props[k] = nil
	}
	require.Equal(t, jsonFields(reflect.TypeFor[wire.Result]()), keys(props))
	require.ElementsMatch(t, wire.Reasons(), doc.Properties["reason"].Enum, "every reason a request is buried with")
}
