package graveyard_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/graveyard"
)

func TestEntryIDs_EveryIDTheEntryCarried(t *testing.T) {
	for _, tc := range []struct {
		name  string
		entry graveyard.Entry
		want  []string
	}{
		{"a request", graveyard.Entry{RequestID: "r1", Original: []byte(`{"v":1,"id":"r1","ttl_ms":1000}`)}, []string{"r1"}},
		{"a replay", graveyard.Entry{RequestID: "r2", Original: []byte(`{"v":1,"id":"r2","replay_of":"r1"}`)}, []string{"r2", "r1"}},
		{"malformed, with the id it had", graveyard.Entry{Original: []byte(`{"id":"hand-4","ttl_ms":-1}`)}, []string{"hand-4"}},
		{"malformed, a numeric id", graveyard.Entry{Original: []byte(`{"id":17}`)}, []string{"17"}},
		{"not JSON", graveyard.Entry{Original: []byte(`hand-4`)}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, tc.entry.IDs())
		})
	}
}
