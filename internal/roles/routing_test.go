package roles_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/client"
	"github.com/ratefleet/ratefleet/wire"
)

// TestRoles_AProducerRoutesAndCancelsOnlyItsOwnRequests has alice submit an
// urgent routed request and cancel it, under her role; then try bob's routed
// subject and bob's cancel marks, which the server refuses. A worker under the
// worker role ends her request as cancelled, never sent.
func TestRoles_AProducerRoutesAndCancelsOnlyItsOwnRequests(t *testing.T) {
	s, acc, pw := securedWith(t, "alice", "bob")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	aliceConn, refusedA := connectUser(t, s, acc, "alice", pw["alice"])
	alice, err := client.New(aliceConn.NC)
	require.NoError(t, err)
	bobConn, _ := connectUser(t, s, acc, "bob", pw["bob"])
	bob, err := client.New(bobConn.NC)
	require.NoError(t, err)

	// Queued before any worker runs, so the cancel lands first.
	kept, err := alice.Submit(ctx, client.Request{Priority: client.Urgent, TTL: time.Minute})
	require.NoError(t, err)
	dropped, err := alice.Submit(ctx, client.Request{Priority: client.Urgent, TTL: time.Minute})
	require.NoError(t, err)
	_, err = alice.Cancel(ctx, dropped)
	require.NoError(t, err)
	require.Empty(t, refusedA, "alice may route and cancel her own requests")

	// Bob cannot cancel alice's request: his marks are under his name, and
	// alice's subjects are not his to write.
	_, err = bob.Cancel(ctx, kept)
	require.NoError(t, err, "bob may mark his own id")
	for _, subject := range []string{
		"$KV." + aliceConn.Streams.KV.Cancels.Bucket + "." + wire.CancelKey("alice", kept),
		wire.Owner("alice").RoutedSubject(bobConn.Streams.Requests.Subject(), wire.Urgent, wire.Any),
	} {
		rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := bobConn.JS.Publish(rctx, subject, []byte(`{}`))
		rcancel()
		require.Error(t, err, "bob may not publish to %s", subject)
	}

	refusedW := serve(t, ctx, s, acc)
	res, err := alice.Await(ctx, kept)
	require.NoError(t, err)
	require.Equal(t, wire.Served, res.Outcome, "bob's mark did not cancel alice's request: %+v", res)
	res, err = alice.Await(ctx, dropped)
	require.NoError(t, err)
	require.Equal(t, wire.Buried, res.Outcome)
	require.Equal(t, wire.ReasonCancelled, res.Reason)
	require.Empty(t, refusedW, "the worker needs nothing its role lacks")
}
