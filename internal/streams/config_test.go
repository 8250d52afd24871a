package streams_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet"
	"github.com/ratefleet/ratefleet/internal/embedded"
	"github.com/ratefleet/ratefleet/internal/streams"
)

func defaultConfig(t *testing.T) *streams.Config {
	t.Helper()
	c, err := streams.Parse("streams.yaml", ratefleet.DefaultStreams())
	require.NoError(t, err)
	return c
}

func TestParse_ShippedFileIsValid(t *testing.T) {
	c := defaultConfig(t)
	require.Equal(t, "RATEFLEET_REQUESTS", c.Requests.Stream.Name)
	require.Equal(t, 50, c.Requests.Consumer.MaxDeliver)
	require.Equal(t, 3*time.Second, c.KV.Leases.LeaseTTL)
	require.Empty(t, c.Requests.Consumer.RetryDelays)
}

func TestParse_RetryDelaysAreRefusedWithWhereTheyWent(t *testing.T) {
	doc := strings.Replace(string(ratefleet.DefaultStreams()), "    max_deliver: 50", "    max_deliver: 50\n    retry_delays: [100ms]", 1)
	_, err := streams.Parse("streams.yaml", []byte(doc))
	require.ErrorIs(t, err, streams.ErrInvalid)
	require.Contains(t, err.Error(), "retry section")
}

func TestParse_RejectsUnknownFieldNamingItsLine(t *testing.T) {
	doc := strings.Replace(string(ratefleet.DefaultStreams()), "    max_deliver: 50", "    max_deliver: 50\n    max_delivery: 7", 1)
	_, err := streams.Parse("streams.yaml", []byte(doc))
	require.ErrorIs(t, err, streams.ErrInvalid)
	require.Contains(t, err.Error(), "max_delivery")
	line := 1 + strings.Count(doc[:strings.Index(doc, "max_delivery")], "\n")
	require.Contains(t, err.Error(), "["+strconv.Itoa(line)+":", "the error names the line")
}

func TestValidate_SaysWhatIsWrongAndHowToFix(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*streams.Config)
		want   string
	}{
		{"zero max deliver", func(c *streams.Config) { c.Requests.Consumer.MaxDeliver = 0 },
			"requests.consumer.max_deliver: 0 must be at least 1 (the number of attempts a request gets)"},
		{"requests not a work queue", func(c *streams.Config) { c.Requests.Stream.Retention = "limits" },
			`requests.stream.retention: is "limits"; ratefleet needs "workqueue" here`},
		{"graveyard drops old", func(c *streams.Config) { c.Graveyard.Stream.Discard = "old" },
			"graveyard.stream.discard: is \"old\"; use `new`"},
		{"lease ttl below a second", func(c *streams.Config) { c.KV.Leases.LeaseTTL = 500 * time.Millisecond },
			"kv.leases.lease_ttl: 500ms must be a whole number of seconds"},
		{"bad storage", func(c *streams.Config) { c.KV.KeyState.Storage = "disk" },
			"kv.key_state.storage: is \"disk\"; use `file`"},
		{"reply into JetStream", func(c *streams.Config) { c.Results.ReplyPrefix = "$JS." },
			"results.reply_prefix: \"$JS.\" must not start with $ or _"},
		{"reply into the requests stream", func(c *streams.Config) { c.Results.ReplyPrefix = "ratefleet." },
			"overlaps the stream subject \"ratefleet.requests\""},
		{"unbounded results", func(c *streams.Config) { c.Results.Stream.MaxAge = 0 },
			"results.stream: max_age and max_bytes must be positive"},
		{"shared stream name", func(c *streams.Config) { c.Stats.Stream.Name = c.Graveyard.Stream.Name },
			"uses the same stream name \"RATEFLEET_GRAVEYARD\""},
		{"wrong version", func(c *streams.Config) { c.Version = 2 }, "version: is 2"},
		{"dotted durable", func(c *streams.Config) { c.Requests.Consumer.Durable = "a.b" },
			"requests.consumer.durable: \"a.b\" must be a name of 1 to 32 characters"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := defaultConfig(t)
			tt.mutate(c)
			err := c.Validate()
			require.ErrorIs(t, err, streams.ErrInvalid)
			require.Contains(t, err.Error(), tt.want)
		})
	}
}

func connect(t *testing.T) jetstream.JetStream {
	t.Helper()
	s, err := embedded.Start(embedded.Options{})
	require.NoError(t, err)
	t.Cleanup(s.Shutdown)
	nc, err := nats.Connect(s.ClientURL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	return js
}

func TestApply_TwiceChangesNothing(t *testing.T) {
	js := connect(t)
	ctx := context.Background()
	c := defaultConfig(t)

	first, err := c.Apply(ctx, js)
	require.NoError(t, err)
	require.Len(t, first, 11, "5 streams, the one consumer (no priorities, no routes), 5 buckets")
	for _, ch := range first {
		require.Equal(t, streams.Created, ch.Action, ch.Name)
	}
	before := snapshot(t, js)

	second, err := c.Apply(ctx, js)
	require.NoError(t, err)
	require.False(t, second.Changed(), "second apply: %+v", second)
	require.Equal(t, before, snapshot(t, js), "the server's configuration is untouched")

	info, err := js.Stream(ctx, "KV_ratefleet_leases")
	require.NoError(t, err)
	require.True(t, info.CachedInfo().Config.AllowMsgTTL, "leases need per-key TTLs")
}

func snapshot(t *testing.T, js jetstream.JetStream) map[string]any {
	t.Helper()
	ctx := context.Background()
	out := map[string]any{}
	for name := range js.StreamNames(ctx).Name() {
		st, err := js.Stream(ctx, name)
		require.NoError(t, err)
		info := st.CachedInfo()
		out[name] = info.Config
		out[name+"/created"] = info.Created
		for cname := range st.ConsumerNames(ctx).Name() {
			cons, err := st.Consumer(ctx, cname)
			require.NoError(t, err)
			out[name+"/"+cname] = cons.CachedInfo().Config
		}
	}
	return out
}

func TestApply_UpdatesWhatChanged(t *testing.T) {
	js := connect(t)
	ctx := context.Background()
	c := defaultConfig(t)
	_, err := c.Apply(ctx, js)
	require.NoError(t, err)

	c.Requests.Consumer.MaxDeliver = 7
	c.Graveyard.Stream.MaxMsgs = 5000
	res, err := c.Apply(ctx, js)
	require.NoError(t, err)
	actions := map[string]streams.Action{}
	for _, ch := range res {
		actions[ch.Name] = ch.Action
	}
	require.Equal(t, streams.Updated, actions["RATEFLEET_REQUESTS/workers"])
	require.Equal(t, streams.Updated, actions["RATEFLEET_GRAVEYARD"])
	require.Equal(t, streams.Unchanged, actions["RATEFLEET_REQUESTS"])

	cons, err := js.Consumer(ctx, "RATEFLEET_REQUESTS", "workers")
	require.NoError(t, err)
	require.Equal(t, 7, cons.CachedInfo().Config.MaxDeliver)
}

func TestApply_IncompatibleChangeSaysWhatToDo(t *testing.T) {
	js := connect(t)
	ctx := context.Background()
	c := defaultConfig(t)
	_, err := c.Apply(ctx, js)
	require.NoError(t, err)

	c.Stats.Stream.Storage = "memory"
	_, err = c.Apply(ctx, js)
	require.ErrorIs(t, err, streams.ErrIncompatible)
	require.Contains(t, err.Error(), "nats stream rm RATEFLEET_STATS")
}

func TestCheck_ReportsDriftWithoutChangingAnything(t *testing.T) {
	js := connect(t)
	ctx := context.Background()
	c := defaultConfig(t)

	res, err := c.Check(ctx, js)
	require.ErrorIs(t, err, streams.ErrDrift)
	require.True(t, res.Changed())
	_, err = js.Stream(ctx, c.Requests.Stream.Name)
	require.ErrorIs(t, err, jetstream.ErrStreamNotFound, "check creates nothing")

	_, err = c.Apply(ctx, js)
	require.NoError(t, err)
	_, err = c.Check(ctx, js)
	require.NoError(t, err)
}

// Edge 1: every request the requests stream takes must fit in a graveyard entry,
// so max_msg_size is checked against the connected server's max payload.
func TestCheckPayload_LeavesRoomForTheGraveyardEntry(t *testing.T) {
	const overhead = 64 << 10
	tests := []struct {
		name       string
		maxMsgSize int32
		maxPayload int64
		ok         bool
	}{
		{"the shipped file on a default server", 0, 1 << 20, true},
		{"the whole max payload", 1 << 20, 1 << 20, false},
		{"unset: the server's max payload", -1, 1 << 20, false},
		{"exactly the room left", 1<<20 - overhead, 1 << 20, true},
		{"a server with 8 MiB", 4 << 20, 8 << 20, true},
		{"a server with 64 KiB", 32 << 10, 64 << 10, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := defaultConfig(t)
			if tt.maxMsgSize != 0 {
				c.Requests.Stream.MaxMsgSize = tt.maxMsgSize
			}
			err := c.CheckPayload(tt.maxPayload, overhead)
			if tt.ok {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, streams.ErrPayload)
			require.Contains(t, err.Error(), "set max_msg_size to at most")
		})
	}
}
