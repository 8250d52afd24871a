package client_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/client"
)

// A Go service submits a request, waits for the upstream's answer and prints it.
func Example() {
	natsURL, stop, err := startFleet() // NATS, the simulated exchange and a worker, on loopback
	if err != nil {
		fmt.Println(err)
		return
	}
	defer stop()

	nc, err := nats.Connect(natsURL)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer nc.Close()
	c, err := client.New(nc)
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// Do: submit with a reply subject and wait for the answer.
	res, err := c.Do(ctx, client.Request{ID: "order-1", Call: &client.Call{Path: "/api/request"}})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(res.ID, res.Outcome, res.Status, res.Body)

	// Submit now, Await later: the result waits in the results stream.
	id, err := c.Submit(ctx, client.Request{ID: "order-2"})
	if err != nil {
		fmt.Println(err)
		return
	}
	res, err = c.Await(ctx, id)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(res.ID, res.Outcome, res.Status, res.Body)
	// Output:
	// order-1 served 200 {"status":"OK","req_id":"order-1"}
	// order-2 served 200 {"status":"OK","req_id":"order-2"}
}

func TestClient_RefusesWhatCannotBeSentAndBuriedRequestsHaveAResult(t *testing.T) {
	natsURL, stop, err := startFleet()
	require.NoError(t, err)
	t.Cleanup(stop)
	nc, err := nats.Connect(natsURL)
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	c, err := client.New(nc)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	tests := []struct {
		name string
		req  client.Request
	}{
		{"another host", client.Request{Call: &client.Call{Path: "//evil.example/x"}}},
		{"a body on a GET", client.Request{Call: &client.Call{Path: "/api/request", Body: "a=1"}}},
		{"a weight too high", client.Request{Weight: 5000}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.Submit(ctx, tt.req)
			require.True(t, errors.Is(err, client.ErrInvalidRequest), "%v", err)
		})
	}

	// A call that sets what the profile sets is buried by the worker, with a
	// result saying why; so is a request of a weight the profile does not count.
	for _, req := range []client.Request{
		{ID: "sets-the-key", Call: &client.Call{Path: "/api/request", Query: []client.Param{{Name: "api_key", Value: "x"}}}},
		{ID: "weighty", Weight: 2},
	} {
		res, err := c.Do(ctx, req)
		require.NoError(t, err)
		require.Equal(t, client.Buried, res.Outcome)
		require.Equal(t, "malformed", res.Reason)
		require.NotEmpty(t, res.Error)
	}
	// A result only sent still reaches Do; with none, Do has nothing to wait
	// for and says so.
	res, err := c.Do(ctx, client.Request{ID: "reply-only", Results: client.ResultsReply})
	require.NoError(t, err)
	require.True(t, res.OK())
	_, err = c.Do(ctx, client.Request{Results: client.ResultsNone})
	require.True(t, errors.Is(err, client.ErrInvalidRequest), "%v", err)
	_, err = c.Submit(ctx, client.Request{Results: "later"})
	require.True(t, errors.Is(err, client.ErrInvalidRequest), "%v", err)

	// An id with dots and spaces is still one subject.
	res, err = c.Do(ctx, client.Request{ID: "a.b c>*"})
	require.NoError(t, err)
	require.True(t, res.OK())
	again, err := c.Await(ctx, "a.b c>*")
	require.NoError(t, err)
	require.Equal(t, res.Delivery, again.Delivery)
}

// An id names one request: submitting it again, within the requests stream's
// duplicate window or after the request ended, stores nothing and says so.
func TestClient_SubmitOfAnIDAlreadyUsedIsADuplicate(t *testing.T) {
	natsURL, stop, err := startFleet()
	require.NoError(t, err)
	t.Cleanup(stop)
	nc, err := nats.Connect(natsURL)
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	c, err := client.New(nc)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	id, err := c.Submit(ctx, client.Request{ID: "order-7", TTL: time.Minute})
	require.NoError(t, err)
	_, err = c.Submit(ctx, client.Request{ID: id, TTL: time.Minute, Call: &client.Call{Method: "POST", Path: "/api/request"}})
	require.ErrorIs(t, err, client.ErrDuplicate, "the same id with another call, within the duplicate window")
	require.Contains(t, err.Error(), "sequence 1")

	res, err := c.Await(ctx, id)
	require.NoError(t, err)
	require.True(t, res.OK())
	require.Equal(t, uint64(1), res.Seq)
	_, err = c.Do(ctx, client.Request{ID: id})
	require.ErrorIs(t, err, client.ErrDuplicate, "an id whose request ended")
	require.Contains(t, err.Error(), "already ended")
}
