package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/keystate"
	"github.com/ratefleet/ratefleet/internal/lease"
	"github.com/ratefleet/ratefleet/internal/natsconn"
	"github.com/ratefleet/ratefleet/internal/roles"
	"github.com/ratefleet/ratefleet/internal/stats"
)

// TestStreamsKeys_ListClearAndReset shows a quarantined key as such (from key
// state, with its 429 count and L) and a held key with its holder, L and next
// free slot (from the lease bucket and its holder's last report), then the admin clears its quarantine and
// resets its count with --yes, each with a log line; the monitor role may
// list but not clear; an unconfirmed change changes nothing.
func TestStreamsKeys_ListClearAndReset(t *testing.T) {
	s, acc := secured(t)
	tls := acc.Args(roles.Admin)
	url := s.ClientURL()
	admin := roleEnv(acc, roles.Admin)
	code, _, stderr := runAs(t, admin, append([]string{"apply", "--nats", url}, tls...)...)
	require.Equal(t, 0, code, stderr)

	conn, err := acc.Connection(url, roles.Admin)
	require.NoError(t, err)
	nc := connectAs(t, conn.URL, conn.Options)
	ctx := context.Background()
	store, err := keystate.Open(ctx, nc.JS, nc.Streams.KV.KeyState.Bucket)
	require.NoError(t, err)
	_, err = store.Update(ctx, "key1", func(r *keystate.Record) error {
		r.NonceReserved, r.Count429, r.MaxDelay = 42, 3, 80*time.Millisecond
		r.Unusable, r.Quarantined, r.Reason = true, true, "quarantined by the ban guard after repeated 429s"
		return nil
	})
	require.NoError(t, err)
	_, err = store.Update(ctx, "key2", func(r *keystate.Record) error { r.NonceReserved = 7; return nil })
	require.NoError(t, err)

	// As a worker: w1 holds key2, and its last report tells key2's next free slot.
	wconn, err := acc.Connection(url, roles.Worker)
	require.NoError(t, err)
	w := connectAs(t, wconn.URL, wconn.Options)
	leases, err := w.JS.KeyValue(ctx, w.Streams.KV.Leases.Bucket)
	require.NoError(t, err)
	rec, err := json.Marshal(lease.Record{Holder: "w1", Session: "s1", Since: time.Now()})
	require.NoError(t, err)
	for _, entry := range []string{lease.WorkerEntry("w1"), lease.KeyEntry("key2")} {
		_, err = leases.Put(ctx, entry, rec)
		require.NoError(t, err)
	}
	r := stats.NewRecorder("w1", "h", 1, time.Now())
	r.Key("key2", func(k *stats.KeyReport) { k.Held, k.MaxDelayMs, k.NextFree = true, 60, time.Now().Add(time.Hour) })
	rep, err := r.Report(time.Now())
	require.NoError(t, err)
	data, err := json.Marshal(rep)
	require.NoError(t, err)
	_, err = w.JS.Publish(ctx, stats.Subject("w1"), data)
	require.NoError(t, err)

	list := func(role string) map[string]keyRow {
		code, stdout, stderr := runAs(t, roleEnv(acc, role), append([]string{"keys", "ls", "--json", "--nats", url}, acc.Args(role)...)...)
		require.Equal(t, 0, code, stderr)
		rows := map[string]keyRow{}
		for _, line := range strings.Split(strings.TrimSpace(stdout), "\n") {
			var r keyRow
			require.NoError(t, json.Unmarshal([]byte(line), &r), line)
			rows[r.Name] = r
		}
		return rows
	}
	rows := list(roles.Monitor)
	require.Equal(t, "quarantined", rows["key1"].State)
	require.Equal(t, 3, rows["key1"].Count429)
	require.InDelta(t, 80, rows["key1"].MaxDelayMs, 1e-9)
	require.Equal(t, "held", rows["key2"].State)
	require.Equal(t, "w1", rows["key2"].Holder)
	require.InDelta(t, 60, rows["key2"].MaxDelayMs, 1e-9, "L from the holder's report")
	require.NotNil(t, rows["key2"].NextFreeMs)
	require.Greater(t, *rows["key2"].NextFreeMs, int64(59*60*1000), "the next free slot from the holder's report")

	code, _, _ = runAs(t, roleEnv(acc, roles.Monitor), append([]string{"keys", "clear", "--yes", "--nats", url, "key1"}, acc.Args(roles.Monitor)...)...)
	require.Equal(t, 1, code, "the monitor role may not change key state")
	code, _, stderr = runAs(t, admin, append([]string{"keys", "clear", "--nats", url, "key1"}, tls...)...)
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "not confirmed: nothing changed")
	require.Equal(t, "quarantined", list(roles.Admin)["key1"].State)

	code, stdout, stderr := runAs(t, admin, append([]string{"keys", "clear", "--yes", "--nats", url, "key1"}, tls...)...)
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stdout, "key1: clear done")
	require.Contains(t, stderr, `msg="key cleared: workers may claim it again" key=key1 was_unusable=true was_quarantined=true`)
	rows = list(roles.Admin)
	require.Equal(t, "free", rows["key1"].State)
	require.Equal(t, 3, rows["key1"].Count429, "clearing keeps the count")

	code, _, stderr = runAs(t, admin, append([]string{"keys", "reset", "--yes", "--nats", url, "key1"}, tls...)...)
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stderr, `msg="key 429 count reset" key=key1 count_429_lifetime_was=3`)
	require.Equal(t, 0, list(roles.Admin)["key1"].Count429)

	code, _, stderr = runAs(t, admin, append([]string{"keys", "reset", "--yes", "--nats", url, "nokey"}, tls...)...)
	require.Equal(t, 1, code)
	require.Contains(t, stderr, `no key state for key "nokey"`)
}

// connectAs opens a checked connection with the given options.
func connectAs(t *testing.T, url string, opts []nats.Option) *natsconn.Conn {
	t.Helper()
	c, err := natsconn.Open(context.Background(), natsconn.Options{URL: url, Connect: opts, CheckOnly: true, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c
}
