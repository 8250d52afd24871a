package profile

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

// hasFieldByTokens is hasField as encoding/json's tokenizer reads it: the
// reference hasField must agree with.
func hasFieldByTokens(body []byte, name string) bool {
	if !json.Valid(body) {
		return false
	}
	d := json.NewDecoder(bytes.NewReader(body))
	if t, err := d.Token(); err != nil || t != json.Delim('{') {
		return false
	}
	for d.More() {
		t, err := d.Token()
		if err != nil {
			return false
		}
		if t == name {
			return true
		}
		var skip json.RawMessage
		if err := d.Decode(&skip); err != nil {
			return false
		}
	}
	return false
}

func TestHasField(t *testing.T) {
	tests := []struct {
		body string
		want bool
	}{
		{`{"status":"OK","req_id":"r"}`, true},
		{` { "req_id" : "r" , "status" : 1 } `, true},
		{`{"req_id":"r"}`, false},
		{`{"data":{"status":"OK"}}`, false},
		{`{"data":["status",{"status":1}],"x":"sta\"tus"}`, false},
		{`{"a":"}","b":"\\","status":null}`, true},
		{`{"st\u0061tus":true}`, true},
		{`{"a":-1.5e3,"b":true,"c":false,"status":[]}`, true},
		{`["status"]`, false},
		{`"status"`, false},
		{`{}`, false},
		{`{"status":`, false},
		{``, false},
		{`<html>status</html>`, false},
	}
	for _, tt := range tests {
		require.Equal(t, tt.want, hasField([]byte(tt.body), "status"), tt.body)
		require.Equal(t, tt.want, hasFieldByTokens([]byte(tt.body), "status"), "the reference disagrees on %s", tt.body)
	}
}

func FuzzHasField(f *testing.F) {
	for _, s := range []string{`{"status":"OK"}`, `{"a":{"status":1},"b":[1,"x"]}`, `{"\u00e9":1,"\xff":2}`, `[]`, `{"a":"\\\""}`} {
		f.Add([]byte(s), "status")
	}
	f.Fuzz(func(t *testing.T, body []byte, name string) {
		require.Equal(t, hasFieldByTokens(body, name), hasField(body, name))
	})
}
