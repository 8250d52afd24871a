package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/cli"
	"github.com/ratefleet/ratefleet/internal/embedded"
	"github.com/ratefleet/ratefleet/internal/graveyard"
	"github.com/ratefleet/ratefleet/internal/natsconn"
	"github.com/ratefleet/ratefleet/internal/settle"
	"github.com/ratefleet/ratefleet/wire"
)

// fixture is a NATS server with a graveyard of four entries: three requests
// (max_deliveries, expired, max_deliveries) buried an hour, two hours and a
// minute ago, and a malformed message that carried the id "hand-4".
type fixture struct {
	url  string
	conn *natsconn.Conn
	ids  []string
	now  time.Time
}

func setup(t *testing.T) fixture {
	t.Helper()
	s, err := embedded.Start(embedded.Options{})
	require.NoError(t, err)
	t.Cleanup(s.Shutdown)
	ctx := context.Background()
	c, err := natsconn.Open(ctx, natsconn.Options{URL: s.ClientURL(), Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	t.Cleanup(c.Close)
	g, err := graveyard.New(c.JS, c.Streams.Graveyard.Stream.Name, c.Streams.Graveyard.Stream.Subjects[0])
	require.NoError(t, err)
	now := time.Now()
	f := fixture{url: s.ClientURL(), conn: c, now: now}
	for i, e := range []struct {
		reason string
		ago    time.Duration
	}{{wire.ReasonMaxDeliveries, time.Hour}, {wire.ReasonExpired, 2 * time.Hour}, {wire.ReasonMaxDeliveries, time.Minute}} {
		r := wire.New(now.Add(-3*time.Hour), time.Second, []byte(`{"n":1}`))
		data, err := r.Encode()
		require.NoError(t, err)
		require.NoError(t, g.Bury(ctx, graveyard.Entry{Reason: e.reason, RequestID: r.ID, Original: data, Stream: c.Streams.Requests.Stream.Name,
			StreamSeq: uint64(i + 1), Deliveries: 5, Key: "key1", BuriedAt: now.Add(-e.ago),
			Attempts: []graveyard.Attempt{{At: now, Delivery: 5, Key: "key1", Status: 503, Result: "server_error"}}}))
		f.ids = append(f.ids, r.ID)
	}
	require.NoError(t, g.Bury(ctx, graveyard.Entry{Reason: wire.ReasonMalformed, Original: []byte(`{"id":"hand-4","ttl_ms":-1}`),
		Stream: c.Streams.Requests.Stream.Name, StreamSeq: 4, Error: "ttl_ms -1: must be positive", BuriedAt: now}))
	f.ids = append(f.ids, "hand-4")
	return f
}

// run runs the graveyard command with stdin and returns its exit status,
// stdout and stderr as main would print them.
func (f fixture) run(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out, errOut strings.Builder
	args = append(args[:1:1], append([]string{"--nats", f.url}, args[1:]...)...)
	err := run(ctx, args, strings.NewReader(stdin), &out, &errOut, func() time.Time { return f.now })
	return cli.ExitCode("graveyard", err, &errOut), out.String(), errOut.String()
}

func TestGraveyard_LsJSONLimitSinceAndReasons(t *testing.T) {
	f := setup(t)
	code, out, errOut := f.run(t, "", "ls", "--json", "--limit", "2")
	require.Equal(t, 0, code, errOut)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 2)
	var r row
	require.NoError(t, json.Unmarshal([]byte(lines[0]), &r))
	require.Equal(t, uint64(1), r.Seq)
	require.Equal(t, 503, r.LastStatus)

	code, out, _ = f.run(t, "", "ls", "--since", "90m")
	require.Equal(t, 0, code)
	require.Contains(t, out, "\n3 entries\n", "the entry buried two hours ago is left out")
	require.Contains(t, out, "hand-4", "a malformed entry is listed by the id it carried")

	code, _, errOut = f.run(t, "", "ls", "--reason", "bogus")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, `--reason "bogus": no such reason; want one of max_deliveries, expired, malformed, key_unusable, not_allowed`)
}

func TestGraveyard_ShowByAnyIDTheEntryCarried(t *testing.T) {
	f := setup(t)
	code, out, errOut := f.run(t, "", "show", "hand-4", "2")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, 2, strings.Count(out, `"seq":`), "two entries: %s", out)
	require.Equal(t, 1, strings.Count(out, `"ttl_ms": -1`), "the malformed original shown once: %s", out)
	require.Contains(t, out, `"original": {`)
	require.NotContains(t, out, "original_request", "the original is not printed twice")

	code, _, errOut = f.run(t, "", "show", "nope")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "no such graveyard entry nope")
}

func TestGraveyard_ReplayOnlyWhatIsNamedWithProgress(t *testing.T) {
	f := setup(t)
	code, _, errOut := f.run(t, "", "replay")
	require.Equal(t, 2, code, "nothing named, no filter, no --all")
	require.Contains(t, errOut, "acts on nothing by default")

	code, out, errOut := f.run(t, "", "replay", "3", f.ids[0])
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "1/2 replayed 1 (max_deliveries, "+f.ids[0]+")")
	require.Contains(t, out, "2/2 replayed 3 (max_deliveries, "+f.ids[2]+")")
	require.Contains(t, out, "done: 2 of 2 replayed, 0 skipped")
	code, out, _ = f.run(t, "", "ls", "--count")
	require.Equal(t, 0, code)
	require.Contains(t, out, "\n2 entries\n", "only the two named entries left the graveyard")

	code, out, _ = f.run(t, "", "replay", "--reason", "malformed")
	require.Equal(t, 0, code)
	require.Contains(t, out, "1/1 skip 4")
	require.Contains(t, out, "done: 0 of 1 replayed, 1 skipped")
}

func TestGraveyard_RmAndPurgeAskFirst(t *testing.T) {
	f := setup(t)
	code, _, errOut := f.run(t, "n\n", "rm", "hand-4")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "remove 1 graveyard entries for good? [y/N] graveyard: not confirmed: nothing changed")

	code, out, errOut := f.run(t, "y\n", "rm", "hand-4")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "removed 1 of 1 entries")
	require.Contains(t, errOut, `msg="graveyard entries removed" removed=1`)

	code, out, errOut = f.run(t, "", "purge", "--reason", "expired", "--yes")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "purged 1 entries")
	code, out, _ = f.run(t, "", "ls")
	require.Equal(t, 0, code)
	require.Contains(t, out, "\n2 entries\n")
	require.NotContains(t, out, "expired")
}

// TestGraveyard_PrintsNoControlCharacterAnEntryCarries buries a request whose
// id, key name, reason and error hold terminal escape sequences, as anyone who
// may publish a request can choose, and checks that no command prints one raw.
func TestGraveyard_PrintsNoControlCharacterAnEntryCarries(t *testing.T) {
	f := setup(t)
	g, err := graveyard.New(f.conn.JS, f.conn.Streams.Graveyard.Stream.Name, f.conn.Streams.Graveyard.Stream.Subjects[0])
	require.NoError(t, err)
	const id = "evil\x1b[2J\x1b]0;owned\x07\u009b31m\u202e"
	r := wire.New(f.now.Add(-time.Hour), time.Second, nil)
	r.ID = id
	// Such an id is refused as malformed now; an entry buried by an older
	// version may still hold one.
	data, err := json.Marshal(r)
	require.NoError(t, err)
	require.NoError(t, g.Bury(context.Background(), graveyard.Entry{Reason: wire.ReasonMaxDeliveries, RequestID: id, Original: data,
		Stream: f.conn.Streams.Requests.Stream.Name, StreamSeq: 9, Deliveries: 5, Key: "key\x1b[1A", BuriedAt: f.now,
		Error: "boom\x1b[31m\nforged line\x7f", Attempts: []graveyard.Attempt{{At: f.now, Key: "key\x1b[1A", Status: 503, Result: "server_error", Error: "x\x1b[0m"}}}))

	raw := func(s string) bool {
		return strings.ContainsFunc(s, func(r rune) bool { return r == 0x1b || r == 0x07 || r == 0x7f || r == 0x9b || r == 0x202e })
	}
	for _, args := range [][]string{
		{"ls"}, {"ls", "--count"}, {"ls", "--json"}, {"ls", "--count", "--json"}, {"ls", "--id", id},
		{"show", id}, {"show", "nope\x1b[2J"}, {"replay", "--dry-run", id},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			_, out, errOut := f.run(t, "", args...)
			require.False(t, raw(out), "stdout holds a control character: %q", out)
			require.False(t, raw(errOut), "stderr holds a control character: %q", errOut)
		})
	}
	_, out, _ := f.run(t, "", "ls")
	require.Contains(t, out, `evil\x1b[2J`, "the id is shown, escaped")
	require.NotContains(t, out, "\nforged line", "an error cannot start a line of its own")
	_, out, _ = f.run(t, "", "show", id)
	var shown map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &shown))
	require.Equal(t, id, shown["request_id"], "show's JSON holds the same value, escaped")
}

// An entry whose request was served after all (the server gave up on a delivery
// whose send then succeeded) is not replayed: that would do it twice.
func TestGraveyard_ReplayRefusesAnEntryServedAfterAll(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	g, err := graveyard.New(f.conn.JS, f.conn.Streams.Graveyard.Stream.Name, f.conn.Streams.Graveyard.Stream.Subjects[0])
	require.NoError(t, err)
	r := wire.New(f.now.Add(-time.Minute), time.Second, nil)
	data, err := r.Encode()
	require.NoError(t, err)
	require.NoError(t, g.Bury(ctx, graveyard.Entry{Reason: wire.ReasonMaxDeliveries, RequestID: r.ID, Original: data,
		Stream: f.conn.Streams.Requests.Stream.Name, StreamSeq: 12, Deliveries: 5, BuriedAt: f.now, Error: "no worker reported the last attempt"}))
	require.NoError(t, settle.NewResults(f.conn.JS, f.conn.Streams).Publish(ctx, wire.Anonymous, "", wire.ResultsKeep,
		wire.Result{ID: r.ID, Seq: 12, Outcome: wire.Served, Status: 200, Delivery: 5, At: f.now}))

	_, out, _ := f.run(t, "", "replay", "--id", r.ID)
	require.Contains(t, out, "served after all")
	require.Contains(t, out, "0 of 1 replayed, 1 skipped")
	st, err := f.conn.JS.Stream(ctx, f.conn.Streams.Requests.Stream.Name)
	require.NoError(t, err)
	require.Zero(t, st.CachedInfo().State.Msgs, "nothing published")
}
