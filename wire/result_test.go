package wire

import (
	"encoding/json"
	"net/http"
	"reflect"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// fullResult has every field set, so that a field Encode leaves out shows.
func fullResult() Result {
	return Result{
		V: ResultVersion, ID: "3f1c2a9e-5d7b-4c1a", Seq: 1 << 40, Outcome: Served, Status: 200,
		Header:     http.Header{"X-B": {"2", "<b>"}, "X-A": {"1"}, "X-Nil": nil, "X-Empty": {}},
		Body:       `{"status":"OK","req_id":"a&b"}`,
		BodyBase64: []byte{0xff, 0, 1, 2},
		Truncated:  true, BodyParts: 3, BodySize: 1 << 20, BodyDigest: "abc_-",
		Reason: ReasonMaxDeliveries, Error: "upstream said \"no\"\n", Key: "k075", Worker: "worker-1",
		Delivery: 7, At: time.Date(2026, 12, 7, 19, 36, 18, 314123456, time.FixedZone("", 3600)),
	}
}

func TestResult_EncodeWritesWhatEncodingJSONWrites(t *testing.T) {
	full := fullResult()
	v := reflect.ValueOf(full)
	for i := range v.NumField() {
		require.False(t, v.Field(i).IsZero(), "fullResult leaves %s unset", v.Type().Field(i).Name)
	}
	tests := []struct {
		name string
		r    Result
	}{
		{"every field", full},
		{"the fewest", Result{}},
		{"a served request", Result{ID: "r1", Outcome: Served, Status: 200, Body: `{"ok":true}`, Key: "k1", Worker: "w", Delivery: 1, At: time.Now()}},
		{"strings to escape", Result{ID: "<script>&\u2028\u2029", Body: "\x00\x01\b\f\n\r\t\x1f\"\\\x7f", Error: "bad \xff\xfe utf-8 é 😀"}},
		{"an empty header", Result{Header: http.Header{}}},
		{"an empty base64 body", Result{BodyBase64: []byte{}}},
		{"the zero time in UTC", Result{At: time.Time{}.UTC()}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.r.Encode()
			require.NoError(t, err)
			r := tt.r
			r.V = ResultVersion
			want, err := json.Marshal(r)
			require.NoError(t, err)
			require.Equal(t, string(want), string(got))
		})
	}
}

func TestResult_EncodeRefusesATimeJSONCannotCarry(t *testing.T) {
	for _, at := range []time.Time{
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(-1, 12, 31, 0, 0, 0, 0, time.UTC),
		time.Unix(0, 0).In(time.FixedZone("", -24*3600)),
	} {
		r := Result{ID: "r", At: at}
		_, werr := json.Marshal(r)
		require.Error(t, werr, "encoding/json takes %s", at)
		_, err := r.Encode()
		require.Error(t, err, "at %s", at)
	}
}

func FuzzResult_Encode(f *testing.F) {
	f.Add("id", "body", "X-Name", "value", "error", []byte("raw"), uint64(1), 200, int64(0))
	f.Add("<&>", "\u2028\xff\x00", "", "\"\\", "é😀", []byte{}, uint64(0), 0, int64(-1))
	f.Fuzz(func(t *testing.T, id, body, name, value, msg string, raw []byte, seq uint64, status int, nsec int64) {
		r := Result{
			V: ResultVersion, ID: id, Seq: seq, Outcome: Buried, Status: status, Body: body, BodyBase64: raw,
			Error: msg, Reason: value, Key: name, Delivery: seq / 2, At: time.Unix(0, nsec).In(time.FixedZone("", int(seq%200000)-100000)),
		}
		if name != "" {
			r.Header = http.Header{name: {value, body}}
		}
		want, werr := json.Marshal(r)
		got, err := r.Encode()
		if werr != nil {
			require.Error(t, err)
			return
		}
		require.NoError(t, err)
		require.Equal(t, string(want), string(got))
	})
}
