package producer_test

import (
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/producer"
)

// readAll drains a Lines source, collecting requests and bad lines (by number).
func readAll(t *testing.T, in string) ([]producer.Item, []int) {
	t.Helper()
	src := producer.NewLines(strings.NewReader(in), "input.jsonl", 800*time.Millisecond)
	var items []producer.Item
	var bad []int
	for {
		it, err := src.Next(t0)
		var be *producer.BadLineError
		switch {
		case errors.Is(err, io.EOF):
			return items, bad
		case errors.As(err, &be):
			require.Equal(t, "input.jsonl", be.Input)
			require.Contains(t, be.Error(), "input.jsonl line ")
			bad = append(bad, be.Line)
		case err != nil:
			t.Fatalf("unexpected error: %v", err)
		default:
			items = append(items, it)
		}
	}
}

func TestLines_FieldsAndDefaults(t *testing.T) {
	in := `{"id":"a1","ttl_ms":1500,"payload":{"symbol":"BTC"},"created":"2026-01-01T00:00:00Z"}
{}

{"payload":[1,2,3]}
	{"id":"a4","payload":null}  ` + "\r\n" + `{"payload":"text"}`
	items, bad := readAll(t, in)
	require.Empty(t, bad)
	require.Len(t, items, 5)

	first := items[0].Request
	require.Equal(t, "a1", first.ID)
	require.Equal(t, int64(1500), first.TTLms)
	require.JSONEq(t, `{"symbol":"BTC"}`, string(first.Payload))
	require.Equal(t, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), first.Created.UTC())

	second := items[1].Request
	require.NotEmpty(t, second.ID, "a missing id is a new UUID")
	require.Len(t, second.ID, 36)
	require.Equal(t, int64(800), second.TTLms, "a missing ttl_ms is the default")
	require.Equal(t, t0, second.Created, "a missing created is when the line is read")
	require.Nil(t, second.Payload)

	require.JSONEq(t, `[1,2,3]`, string(items[2].Request.Payload))
	require.Equal(t, "a4", items[3].Request.ID, "surrounding spaces and CRLF are fine")
	require.Nil(t, items[3].Request.Payload, "a null payload is no payload")
	require.JSONEq(t, `"text"`, string(items[4].Request.Payload), "the last line needs no newline")
	for _, it := range items {
		require.Equal(t, t0, it.Due, "lines are due at once")
		require.NoError(t, it.Request.Validate())
	}
}

func TestLines_BadLinesNameTheirLineAndReadingGoesOn(t *testing.T) {
	tests := []struct {
		name string
		line string
	}{
		{"not json", `hello`},
		{"truncated", `{"id":"x"`},
		{"not an object", `["a"]`},
		{"null", `null`},
		{"unknown field", `{"ttl":5}`},
		{"empty id", `{"id":""}`},
		{"id with a space", `{"id":"a b"}`},
		{"id not a string", `{"id":5}`},
		{"zero ttl", `{"ttl_ms":0}`},
		{"negative ttl", `{"ttl_ms":-5}`},
		{"fractional ttl", `{"ttl_ms":1.5}`},
		{"bad created", `{"created":"yesterday"}`},
		{"zero created", `{"created":"0001-01-01T00:00:00Z"}`},
		{"two values", `{} {}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			items, bad := readAll(t, "{\"id\":\"ok1\"}\n\n"+tt.line+"\n{\"id\":\"ok2\"}\n")
			require.Equal(t, []int{3}, bad)
			require.Len(t, items, 2)
			require.Equal(t, "ok2", items[1].Request.ID)
		})
	}
}

func TestLines_TooLongLineIsBadAndSkipped(t *testing.T) {
	long := `{"payload":"` + strings.Repeat("x", producer.MaxLineBytes) + `"}`
	items, bad := readAll(t, "{}\n"+long+"\n{\"id\":\"after\"}")
	require.Equal(t, []int{2}, bad)
	require.Len(t, items, 2)
	require.Equal(t, "after", items[1].Request.ID)
}

func TestLines_CallWeightAndReplyAreCheckedWhenRead(t *testing.T) {
	in := `{"id":"c1","call":{"method":"POST","path":"/0/private/AddOrder","body":"pair=XBTUSD"},"weight":3,"reply_to":"ratefleet.reply.me"}
{"id":"c2","call":{"path":"/a/../admin"}}
{"id":"c3","reply_to":"ratefleet.reply.*"}
{"id":"c4"}`
	items, bad := readAll(t, in)
	require.Equal(t, []int{2, 3}, bad)
	require.Len(t, items, 2)
	c1 := items[0].Request
	require.Equal(t, 2, c1.V, "a call needs version 2")
	require.Equal(t, "POST", c1.Call.Method)
	require.Equal(t, 3, c1.Units())
	require.Equal(t, "ratefleet.reply.me", c1.ReplyTo)
	require.Equal(t, 1, items[1].Request.V, "a plain request stays version 1, which every worker reads")
}
