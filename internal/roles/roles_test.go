package roles_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/embedded"
	"github.com/ratefleet/ratefleet/internal/fleet"
	"github.com/ratefleet/ratefleet/internal/natsconn"
	"github.com/ratefleet/ratefleet/internal/roles"
)

// secured starts a TLS-only server requiring client certificates, with one
// password user per role, and applies streams.yaml as the admin.
func secured(t *testing.T) (*embedded.Server, *fleet.Access) {
	t.Helper()
	cfg, err := natsconn.LoadStreams("")
	require.NoError(t, err)
	acc, err := fleet.NewAccess(cfg, t.TempDir(), false, true)
	require.NoError(t, err)
	users, err := acc.Users(cfg)
	require.NoError(t, err)
	s, err := embedded.Start(embedded.Options{Users: users, TLS: acc.TLS()})
	require.NoError(t, err)
	t.Cleanup(s.Shutdown)
	admin, _ := connect(t, s, acc, roles.Admin)
	_, err = admin.Streams.Apply(context.Background(), admin.JS)
	require.NoError(t, err)
	return s, acc
}

// connect connects as role; the channel receives the server's permission
// refusals.
func connect(t *testing.T, s *embedded.Server, acc *fleet.Access, role string) (*natsconn.Conn, chan error) {
	t.Helper()
	conn, err := acc.Connection(s.ClientURL(), role)
	require.NoError(t, err)
	refused := make(chan error, 64)
	opts := append(conn.Options, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrPermissionViolation) {
			select {
			case refused <- err:
			default:
			}
		}
	}))
	nc, err := nats.Connect(conn.URL, opts...)
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	cfg, err := natsconn.LoadStreams("")
	require.NoError(t, err)
	return &natsconn.Conn{NC: nc, JS: js, Streams: cfg}, refused
}

func TestRoles_EachRoleIsRefusedWhatItMustNotDo(t *testing.T) {
	s, acc := secured(t)
	kvPut := func(bucket string) func(context.Context, jetstream.JetStream) error {
		return func(ctx context.Context, js jetstream.JetStream) error {
			_, err := js.Publish(ctx, "$KV."+bucket+".key1", []byte(`{"holder":"intruder"}`))
			return err
		}
	}
	publish := func(subject string) func(context.Context, jetstream.JetStream) error {
		return func(ctx context.Context, js jetstream.JetStream) error {
			_, err := js.Publish(ctx, subject, []byte(`{}`))
			return err
		}
	}
	purge := func(stream string) func(context.Context, jetstream.JetStream) error {
		return func(ctx context.Context, js jetstream.JetStream) error {
			st, err := js.Stream(ctx, stream)
			if err != nil {
				return err
			}
			return st.Purge(ctx)
		}
	}
	deleteStream := func(stream string) func(context.Context, jetstream.JetStream) error {
		return func(ctx context.Context, js jetstream.JetStream) error { return js.DeleteStream(ctx, stream) }
	}
	t.Cleanup(func() { checkUnchanged(t, s, acc) })
	for _, tc := range []struct {
		role, what, subject string
		do                  func(context.Context, jetstream.JetStream) error
	}{
		{roles.Producer, "claim a lease", "$KV.ratefleet_leases.key1", kvPut("ratefleet_leases")},
		{roles.Producer, "change a key's state", "$KV.ratefleet_keys.key1", kvPut("ratefleet_keys")},
		{roles.Producer, "write to the graveyard", "ratefleet.graveyard.expired", publish("ratefleet.graveyard.expired")},
		{roles.Producer, "purge the graveyard", "$JS.API.STREAM.PURGE.RATEFLEET_GRAVEYARD", purge("RATEFLEET_GRAVEYARD")},
		{roles.Producer, "pull requests", "$JS.API.CONSUMER.MSG.NEXT.RATEFLEET_REQUESTS.workers", func(ctx context.Context, js jetstream.JetStream) error {
			c, err := js.Consumer(ctx, "RATEFLEET_REQUESTS", "workers")
			if err != nil {
				return err
			}
			b, err := c.Fetch(1, jetstream.FetchMaxWait(time.Second))
			if err != nil {
				return err
			}
			for range b.Messages() {
				return errors.New("a request was delivered")
			}
			if b.Error() != nil {
				return b.Error()
			}
			return errors.New("fetch ended without a request")
		}},
		{roles.Monitor, "publish a request", "ratefleet.requests", publish("ratefleet.requests")},
		{roles.Monitor, "change a key's state", "$KV.ratefleet_keys.key1", kvPut("ratefleet_keys")},
		{roles.Monitor, "claim a lease", "$KV.ratefleet_leases.key1", kvPut("ratefleet_leases")},
		{roles.Monitor, "remove a graveyard entry", "$JS.API.STREAM.MSG.DELETE.RATEFLEET_GRAVEYARD", func(ctx context.Context, js jetstream.JetStream) error {
			st, err := js.Stream(ctx, "RATEFLEET_GRAVEYARD")
			if err != nil {
				return err
			}
			return st.DeleteMsg(ctx, 1)
		}},
		{roles.Worker, "delete the requests stream", "$JS.API.STREAM.DELETE.RATEFLEET_REQUESTS", deleteStream("RATEFLEET_REQUESTS")},
		{roles.Worker, "purge the graveyard", "$JS.API.STREAM.PURGE.RATEFLEET_GRAVEYARD", purge("RATEFLEET_GRAVEYARD")},
		{roles.Worker, "delete the workers' consumer", "$JS.API.CONSUMER.DELETE.RATEFLEET_REQUESTS.workers", func(ctx context.Context, js jetstream.JetStream) error {
			return js.DeleteConsumer(ctx, "RATEFLEET_REQUESTS", "workers")
		}},
		{roles.Worker, "publish requests", "ratefleet.requests", publish("ratefleet.requests")},
		{roles.Worker, "apply streams.yaml (update a stream)", "$JS.API.STREAM.UPDATE.RATEFLEET_STATS", func(ctx context.Context, js jetstream.JetStream) error {
			_, err := js.UpdateStream(ctx, jetstream.StreamConfig{Name: "RATEFLEET_STATS", Subjects: []string{"ratefleet.stats.>"}, MaxMsgsPerSubject: 100})
			return err
		}},
		{roles.Graveyard, "claim a lease", "$KV.ratefleet_leases.key1", kvPut("ratefleet_leases")},
		{roles.Graveyard, "purge the requests stream", "$JS.API.STREAM.PURGE.RATEFLEET_REQUESTS", purge("RATEFLEET_REQUESTS")},
		{roles.Graveyard, "change key state", "$KV.ratefleet_keys.key1", kvPut("ratefleet_keys")},
		{roles.Graveyard, "publish stats", "ratefleet.stats.worker.x", publish("ratefleet.stats.worker.x")},
		{roles.Producer, "forge a replay's ledger entry", "$KV.ratefleet_replays.key1", kvPut("ratefleet_replays")},
		{roles.Worker, "forge a replay's ledger entry", "$KV.ratefleet_replays.key1", kvPut("ratefleet_replays")},
		{roles.Monitor, "forge a replay's ledger entry", "$KV.ratefleet_replays.key1", kvPut("ratefleet_replays")},
	} {
		t.Run(tc.role+" may not "+tc.what, func(t *testing.T) {
			t.Parallel()
			c, refused := connect(t, s, acc, tc.role)
			// The server refuses at once; the operation itself would wait for an
			// answer that never comes, so it is cut short once refused.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- tc.do(ctx, c.JS) }()
			var got []string
			var opErr error
			for {
				select {
				case r := <-refused:
					got = append(got, r.Error())
					if !strings.Contains(r.Error(), `"`+tc.subject+`"`) {
						continue
					}
					t.Logf("refused: %v", r)
					cancel()
					if done != nil {
						opErr = <-done
					}
					require.Error(t, opErr, "the operation must not succeed")
					return
				case opErr = <-done:
					require.Error(t, opErr, "the operation must not succeed")
					done = nil // it failed before the refusal arrived: wait for the refusal
				case <-ctx.Done():
					t.Fatalf("no permission refusal for %s; got %v (operation error: %v)", tc.subject, got, opErr)
				}
			}
		})
	}
}

// checkUnchanged shows that no refused operation changed the server.
func checkUnchanged(t *testing.T, s *embedded.Server, acc *fleet.Access) {
	admin, _ := connect(t, s, acc, roles.Admin)
	ctx := context.Background()
	kv, err := admin.JS.KeyValue(ctx, "ratefleet_leases")
	require.NoError(t, err)
	_, err = kv.Get(ctx, "key1")
	require.ErrorIs(t, err, jetstream.ErrKeyNotFound)
	_, err = admin.JS.Stream(ctx, "RATEFLEET_REQUESTS")
	require.NoError(t, err)
	_, err = admin.JS.Consumer(ctx, "RATEFLEET_REQUESTS", "workers")
	require.NoError(t, err)
	st, err := admin.JS.Stream(ctx, "RATEFLEET_STATS")
	require.NoError(t, err)
	require.EqualValues(t, 1, st.CachedInfo().Config.MaxMsgsPerSubject)
}

func TestRoles_EveryRoleMayCheckTheDeclarations(t *testing.T) {
	s, acc := secured(t)
	for _, role := range roles.Names() {
		t.Run(role, func(t *testing.T) {
			c, refused := connect(t, s, acc, role)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err := c.Streams.Check(ctx, c.JS)
			require.NoError(t, err)
			require.Empty(t, refused)
		})
	}
}

// The graveyard role notes each replay in the replays ledger and reads it back.
func TestRoles_GraveyardMayKeepTheReplaysLedger(t *testing.T) {
	s, acc := secured(t)
	c, refused := connect(t, s, acc, roles.Graveyard)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	kv, err := c.JS.KeyValue(ctx, c.Streams.KV.Replays.Bucket)
	require.NoError(t, err)
	_, err = kv.Create(ctx, "replay1", []byte(`{"stored":false}`))
	require.NoError(t, err)
	_, err = kv.Put(ctx, "replay1", []byte(`{"stored":true,"seq":1}`))
	require.NoError(t, err)
	e, err := kv.Get(ctx, "replay1")
	require.NoError(t, err)
	require.JSONEq(t, `{"stored":true,"seq":1}`, string(e.Value()))
	require.Empty(t, refused)
}

func TestRoles_ServerConfigBlockGivesTheSamePermissions(t *testing.T) {
	cfg, err := natsconn.LoadStreams("")
	require.NoError(t, err)
	rs := roles.All(cfg)
	var b bytes.Buffer
	require.NoError(t, roles.WriteServerConfig(&b, rs))
	for _, r := range rs {
		t.Setenv(roles.PasswordVar(r.Name), "pw-"+r.Name)
	}
	path := filepath.Join(t.TempDir(), "nats.conf")
	require.NoError(t, os.WriteFile(path, b.Bytes(), 0o600))
	opts, err := server.ProcessConfigFile(path)
	require.NoError(t, err, b.String())
	require.Len(t, opts.Users, len(rs))
	for _, r := range rs {
		i := slices.IndexFunc(opts.Users, func(u *server.User) bool { return u.Username == r.User })
		require.GreaterOrEqual(t, i, 0, r.User)
		u := opts.Users[i]
		require.Equal(t, "pw-"+r.Name, u.Password)
		require.Equal(t, r.Publish, u.Permissions.Publish.Allow, r.Name)
		require.Equal(t, r.Subscribe, u.Permissions.Subscribe.Allow, r.Name)
		require.Equal(t, r.Responses, u.Permissions.Response != nil, "%s: allow_responses", r.Name)
	}
	var nsc bytes.Buffer
	require.NoError(t, roles.WriteNSC(&nsc, rs, "RATEFLEET"))
	require.Contains(t, nsc.String(), "nsc add user --account RATEFLEET --name ratefleet-worker")
	require.Contains(t, nsc.String(), "--allow-pub-response\n")
}
