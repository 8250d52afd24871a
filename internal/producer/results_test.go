package producer_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/producer"
	"github.com/ratefleet/ratefleet/wire"
)

// Results come from a reply, or, when none came, from the results stream; an id
// with neither is counted missing once the wait ends. Another user's results are
// never taken.
func TestResults_FromRepliesOrTheStreamNeverAnotherUsers(t *testing.T) {
	c := startNATS(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rs := c.Streams.Results
	const owner = wire.Owner("alice")
	r, err := producer.WatchResults(c.NC, rs, owner)
	require.NoError(t, err)
	t.Cleanup(func() { _ = r.Close() })
	result := func(id string) []byte {
		b, err := wire.Result{ID: id, Outcome: wire.Served, Status: 200, Body: "for " + id}.Encode()
		require.NoError(t, err)
		return b
	}
	require.NoError(t, c.NC.Publish(wire.ReplySubject(rs.ReplyPrefix, owner, "by-reply"), result("by-reply")))
	_, err = c.JS.Publish(ctx, wire.ResultSubject(rs.Prefix(), owner, "in-stream"), result("in-stream"))
	require.NoError(t, err)
	// Bob's result of an id alice also used is bob's.
	_, err = c.JS.Publish(ctx, wire.ResultSubject(rs.Prefix(), "bob", "bobs"), result("bobs"))
	require.NoError(t, err)
	require.NoError(t, c.NC.Flush())

	ids := producer.NewIDSet()
	_, _ = ids.Write([]byte("by-reply\nin-stream\n"))
	var out bytes.Buffer
	tally, err := r.Collect(ctx, ids, &out)
	require.NoError(t, err)
	require.Equal(t, producer.ResultTally{Served: 2}, tally)
	require.Contains(t, out.String(), "for by-reply")
	require.Contains(t, out.String(), "for in-stream")
	require.Equal(t, 2, strings.Count(out.String(), "\n"))

	missing := producer.NewIDSet()
	_, _ = missing.Write([]byte("bobs\n"))
	// Alive long enough for a read of the stream, which finds nothing under alice.
	done, stop := context.WithTimeout(ctx, time.Second)
	defer stop()
	out.Reset()
	tally, err = r.Collect(done, missing, &out)
	require.NoError(t, err)
	require.Equal(t, producer.ResultTally{Missing: 1}, tally)
	require.Empty(t, out.String())
}
