package wire_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/wire"
)

func TestRoutedSubject_ReadsBackAsThePlaceItNames(t *testing.T) {
	const base = "ratefleet.requests"
	tests := []struct {
		name    string
		owner   wire.Owner
		prio    wire.Priority
		route   wire.Route
		subject string
	}{
		{"batch, any key, of a user: the subject of version 1", "alice", wire.Batch, wire.Any, base + ".alice"},
		{"batch, any key, of no user", wire.Anonymous, "", wire.Any, base},
		{"urgent, a label", "alice", wire.Urgent, wire.Route{Kind: wire.RouteLabel, Name: "spot"}, base + ".alice.urgent.label-spot"},
		{"batch, a key with a dash", "bob", wire.Batch, wire.Route{Kind: wire.RouteKey, Name: "k-1"}, base + ".bob.batch.key-k-1"},
		{"urgent, any key, of no user", wire.Anonymous, wire.Urgent, wire.Any, base + ".urgent.any"},
		{"batch, an account, of no user", wire.Anonymous, wire.Batch, wire.Route{Kind: wire.RouteAccount, Name: "main"}, base + ".batch.acct-main"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.owner.RoutedSubject(base, tt.prio, tt.route)
			require.Equal(t, tt.subject, got)
			pl, err := wire.PlaceOf(base, got)
			require.NoError(t, err)
			want := tt.prio
			if want == "" {
				want = wire.DefaultPriority
			}
			require.Equal(t, wire.Place{Owner: tt.owner, Priority: want, Route: tt.route}, pl)
		})
	}
}

func TestPlaceOf_RefusesSubjectsThatNameNoPlace(t *testing.T) {
	for _, s := range []string{
		"ratefleet.other",
		"ratefleet.requests.alice.high.any",
		"ratefleet.requests.alice.urgent.model-x",
		"ratefleet.requests.alice.urgent.label-",
		"ratefleet.requests.alice.urgent",
		"ratefleet.requests.a.b.c.d",
	} {
		t.Run(s, func(t *testing.T) {
			_, err := wire.PlaceOf("ratefleet.requests", s)
			require.ErrorIs(t, err, wire.ErrOwner)
		})
	}
}

func TestDecodeFrom_RefusesARecordWhoseRouteIsNotItsSubjects(t *testing.T) {
	r := wire.New(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC), time.Second, nil)
	r.Label, r.Owner = "spot", "alice"
	b, err := r.Encode()
	require.NoError(t, err)
	_, err = wire.DecodeFrom("ratefleet.requests", "ratefleet.requests.alice", b)
	require.ErrorIs(t, err, wire.ErrMalformed, "a labelled request on the subject any key reads")
	got, err := wire.DecodeFrom("ratefleet.requests", r.Subject("ratefleet.requests"), b)
	require.NoError(t, err)
	require.Equal(t, wire.Route{Kind: wire.RouteLabel, Name: "spot"}, got.Route())
}
