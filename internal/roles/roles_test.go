package roles_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
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

	"github.com/ratefleet/ratefleet/internal/cli"
	"github.com/ratefleet/ratefleet/internal/embedded"
	"github.com/ratefleet/ratefleet/internal/fleet"
	"github.com/ratefleet/ratefleet/internal/natsconn"
	"github.com/ratefleet/ratefleet/internal/roles"
	"github.com/ratefleet/ratefleet/wire"
)

// secured starts a TLS-only server requiring client certificates, with one
// password user per role, and applies streams.yaml as the admin.
func secured(t *testing.T) (*embedded.Server, *fleet.Access) {
	t.Helper()
	s, acc, _ := securedWith(t)
	return s, acc
}

// securedWith is secured with one more producer user per name in producers,
// each with its own permissions (roles.For); it returns their passwords.
func securedWith(t *testing.T, producers ...string) (*embedded.Server, *fleet.Access, map[string]string) {
	t.Helper()
	cfg, err := natsconn.LoadStreams("")
	require.NoError(t, err)
	acc, err := fleet.NewAccess(cfg, t.TempDir(), false, true)
	require.NoError(t, err)
	users, err := acc.Users(cfg)
	require.NoError(t, err)
	passwords := map[string]string{}
	for _, name := range producers {
		r, err := roles.For(cfg, roles.Producer, name)
		require.NoError(t, err)
		passwords[name] = "pw-" + name + "-" + t.Name()
		users = append(users, embedded.User{Name: name, Password: passwords[name], Publish: r.Publish, Subscribe: r.Subscribe})
	}
	s, err := embedded.Start(embedded.Options{Users: users, TLS: acc.TLS()})
	require.NoError(t, err)
	t.Cleanup(s.Shutdown)
	admin, _ := connect(t, s, acc, roles.Admin)
	_, err = admin.Streams.Apply(context.Background(), admin.JS)
	require.NoError(t, err)
	return s, acc, passwords
}

// connect connects as role; the channel receives the server's permission
// refusals.
func connect(t *testing.T, s *embedded.Server, acc *fleet.Access, role string) (*natsconn.Conn, chan error) {
	t.Helper()
	conn, err := acc.Connection(s.ClientURL(), role)
	require.NoError(t, err)
	return dial(t, conn)
}

// connectUser connects as the producer user name, as a command would: its
// inbox prefix follows from its name.
func connectUser(t *testing.T, s *embedded.Server, acc *fleet.Access, name, password string) (*natsconn.Conn, chan error) {
	t.Helper()
	pki := acc.PKI()
	n := cli.NATS{URL: s.ClientURL(), User: name, Password: password, TLSCA: pki.CA, TLSCert: pki.ClientCert, TLSKey: pki.ClientKey}
	conn, err := n.Resolve(func(string) string { return "" }, nil)
	require.NoError(t, err)
	return dial(t, conn)
}

func dial(t *testing.T, conn cli.Connection) (*natsconn.Conn, chan error) {
	t.Helper()
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
	return &natsconn.Conn{NC: nc, JS: js, Streams: cfg, User: conn.User}, refused
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
	// subscribe waits on subject until the refusal ends the wait.
	subscribe := func(subject string) func(context.Context, jetstream.JetStream) error {
		return func(ctx context.Context, js jetstream.JetStream) error {
			sub, err := js.Conn().SubscribeSync(subject)
			if err != nil {
				return err
			}
			defer func() { _ = sub.Unsubscribe() }()
			if _, err := sub.NextMsgWithContext(ctx); err != nil {
				return err
			}
			return errors.New("a message arrived")
		}
	}
	// request sends an API request whose answer would be a success.
	request := func(subject, body string) func(context.Context, jetstream.JetStream) error {
		return func(ctx context.Context, js jetstream.JetStream) error {
			m, err := js.Conn().RequestWithContext(ctx, subject, []byte(body))
			if err != nil {
				return err
			}
			return fmt.Errorf("answered: %s %s", m.Header.Get("Status"), m.Data)
		}
	}
	// send publishes on core NATS, where a refusal is the only answer.
	send := func(subject string) func(context.Context, jetstream.JetStream) error {
		return func(ctx context.Context, js jetstream.JetStream) error {
			if err := js.Conn().Publish(subject, []byte(`{"v":1,"id":"order-1","outcome":"served","status":200}`)); err != nil {
				return err
			}
			<-ctx.Done()
			return ctx.Err()
		}
	}
	tok := wire.Token("order-1")
	consumer := func(stream, name, filter, deliver string, durable bool) string {
		cfg := map[string]any{"name": name, "ack_policy": "none"}
		if filter != "" {
			cfg["filter_subject"] = filter
		}
		if deliver != "" {
			cfg["deliver_subject"] = deliver
		}
		if durable {
			cfg["durable_name"], cfg["ack_policy"] = name, "explicit"
		}
		b, err := json.Marshal(map[string]any{"stream_name": stream, "config": cfg})
		require.NoError(t, err)
		return string(b)
	}
	orderedResults := func(ctx context.Context, js jetstream.JetStream) error {
		_, err := js.OrderedConsumer(ctx, "RATEFLEET_RESULTS", jetstream.OrderedConsumerConfig{FilterSubjects: []string{"ratefleet.results.ratefleet-producer.>"}})
		return err
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

		// Inboxes: every user reads its own, never the shared _INBOX.> nor another's.
		{roles.Producer, "read every inbox", "_INBOX.>", subscribe("_INBOX.>")},
		{roles.Producer, "read another user's inbox", "_INBOX_bob.>", subscribe("_INBOX_bob.>")},
		{roles.Producer, "read the worker's inbox", "_INBOX_ratefleet-worker.>", subscribe("_INBOX_ratefleet-worker.>")},
		{roles.Worker, "read every inbox", "_INBOX.>", subscribe("_INBOX.>")},
		{roles.Keeper, "read every inbox", "_INBOX.>", subscribe("_INBOX.>")},
		{roles.Monitor, "read every inbox", "_INBOX.>", subscribe("_INBOX.>")},
		{roles.Graveyard, "read every inbox", "_INBOX.>", subscribe("_INBOX.>")},
		{roles.Admin, "read every inbox", "_INBOX.>", subscribe("_INBOX.>")},
		{roles.Monitor, "read a producer's inbox", "_INBOX_ratefleet-producer.>", subscribe("_INBOX_ratefleet-producer.>")},

		// A producer's requests, results and replies are its own.
		{roles.Producer, "read every reply", "ratefleet.reply.>", subscribe("ratefleet.reply.>")},
		{roles.Producer, "read another user's replies", "ratefleet.reply.bob.>", subscribe("ratefleet.reply.bob.>")},
		{roles.Producer, "read the replies of requests of no owner", "ratefleet.reply.*", subscribe("ratefleet.reply.*")},
		{roles.Producer, "read another user's result", "$JS.API.DIRECT.GET.RATEFLEET_RESULTS.ratefleet.results.bob." + tok,
			request("$JS.API.DIRECT.GET.RATEFLEET_RESULTS.ratefleet.results.bob."+tok, "")},
		{roles.Producer, "read any user's result through a wildcard", "$JS.API.DIRECT.GET.RATEFLEET_RESULTS.ratefleet.results.*." + tok,
			request("$JS.API.DIRECT.GET.RATEFLEET_RESULTS.ratefleet.results.*."+tok, "")},
		{roles.Producer, "read a result by a direct get's body", "$JS.API.DIRECT.GET.RATEFLEET_RESULTS",
			request("$JS.API.DIRECT.GET.RATEFLEET_RESULTS", `{"last_by_subj":"ratefleet.results.bob.`+tok+`"}`)},
		{roles.Producer, "read a result by a stream get", "$JS.API.STREAM.MSG.GET.RATEFLEET_RESULTS",
			request("$JS.API.STREAM.MSG.GET.RATEFLEET_RESULTS", `{"last_by_subj":"ratefleet.results.bob.`+tok+`"}`)},
		{roles.Producer, "publish a request as another user", "ratefleet.requests.bob", publish("ratefleet.requests.bob")},
		{roles.Producer, "publish a request of no owner", "ratefleet.requests", publish("ratefleet.requests")},
		{roles.Producer, "forge another user's result", "ratefleet.results.bob." + tok, publish("ratefleet.results.bob." + tok)},
		{roles.Producer, "forge its own result", "ratefleet.results.ratefleet-producer." + tok, publish("ratefleet.results.ratefleet-producer." + tok)},
		{roles.Producer, "send another user a reply", "ratefleet.reply.bob." + tok, send("ratefleet.reply.bob." + tok)},

		// No producer creates a consumer: not a push one delivering where it may not
		// publish, not a durable nothing cleans up, not even an ordered one.
		{roles.Producer, "create a push consumer delivering into another user's reply subject", "$JS.API.CONSUMER.CREATE.RATEFLEET_RESULTS.evil.ratefleet.results.ratefleet-producer.>",
			request("$JS.API.CONSUMER.CREATE.RATEFLEET_RESULTS.evil.ratefleet.results.ratefleet-producer.>",
				consumer("RATEFLEET_RESULTS", "evil", "ratefleet.results.ratefleet-producer.>", "ratefleet.reply.bob."+tok, false))},
		{roles.Producer, "create a durable consumer on the results stream", "$JS.API.CONSUMER.CREATE.RATEFLEET_RESULTS.mine",
			request("$JS.API.CONSUMER.CREATE.RATEFLEET_RESULTS.mine", consumer("RATEFLEET_RESULTS", "mine", "", "", true))},
		{roles.Producer, "create a durable consumer by the legacy form", "$JS.API.CONSUMER.DURABLE.CREATE.RATEFLEET_RESULTS.mine",
			request("$JS.API.CONSUMER.DURABLE.CREATE.RATEFLEET_RESULTS.mine", consumer("RATEFLEET_RESULTS", "mine", "", "", true))},
		{roles.Producer, "create an ephemeral consumer by the legacy form", "$JS.API.CONSUMER.CREATE.RATEFLEET_RESULTS",
			request("$JS.API.CONSUMER.CREATE.RATEFLEET_RESULTS", consumer("RATEFLEET_RESULTS", "", "", "", false))},
		{roles.Producer, "read its own results through an ordered consumer", "$JS.API.CONSUMER.CREATE.RATEFLEET_RESULTS.", orderedResults},

		// Workers do a worker's job.
		{roles.Worker, "delete a queued request", "$JS.API.STREAM.MSG.DELETE.RATEFLEET_REQUESTS",
			request("$JS.API.STREAM.MSG.DELETE.RATEFLEET_REQUESTS", `{"seq":1}`)},
		{roles.Worker, "create a push consumer on the requests stream", "$JS.API.CONSUMER.CREATE.RATEFLEET_REQUESTS.evil",
			request("$JS.API.CONSUMER.CREATE.RATEFLEET_REQUESTS.evil", consumer("RATEFLEET_REQUESTS", "evil", "", "ratefleet.reply.bob."+tok, false))},
		{roles.Worker, "create the keeper's durable", "$JS.API.CONSUMER.CREATE.RATEFLEET_ADVISORIES.graveyard-keeper",
			request("$JS.API.CONSUMER.CREATE.RATEFLEET_ADVISORIES.graveyard-keeper", consumer("RATEFLEET_ADVISORIES", "graveyard-keeper", "", "", true))},
		{roles.Worker, "read every reply", "ratefleet.reply.>", subscribe("ratefleet.reply.>")},
		{roles.Keeper, "create a push consumer on the results stream", "$JS.API.CONSUMER.CREATE.RATEFLEET_RESULTS.evil",
			request("$JS.API.CONSUMER.CREATE.RATEFLEET_RESULTS.evil", consumer("RATEFLEET_RESULTS", "evil", "", "ratefleet.reply.bob."+tok, false))},

		// The monitor and the graveyard operator read what their jobs need.
		{roles.Monitor, "create an unfiltered consumer on the stats stream", "$JS.API.CONSUMER.CREATE.RATEFLEET_STATS.evil",
			request("$JS.API.CONSUMER.CREATE.RATEFLEET_STATS.evil", consumer("RATEFLEET_STATS", "evil", "", "ratefleet.reply.bob."+tok, false))},
		{roles.Monitor, "create a consumer on the results stream", "$JS.API.CONSUMER.CREATE.RATEFLEET_RESULTS.x.ratefleet.results.>",
			request("$JS.API.CONSUMER.CREATE.RATEFLEET_RESULTS.x.ratefleet.results.>", consumer("RATEFLEET_RESULTS", "x", "ratefleet.results.>", "", false))},
		{roles.Monitor, "read a user's result", "$JS.API.DIRECT.GET.RATEFLEET_RESULTS.ratefleet.results.bob." + tok,
			request("$JS.API.DIRECT.GET.RATEFLEET_RESULTS.ratefleet.results.bob."+tok, "")},
		{roles.Monitor, "create a consumer on a bucket without a filter", "$JS.API.CONSUMER.CREATE.KV_ratefleet_keys.x",
			request("$JS.API.CONSUMER.CREATE.KV_ratefleet_keys.x", consumer("KV_ratefleet_keys", "x", "", "ratefleet.reply.bob."+tok, false))},
		{roles.Graveyard, "create a consumer on the requests stream", "$JS.API.CONSUMER.CREATE.RATEFLEET_REQUESTS.x",
			request("$JS.API.CONSUMER.CREATE.RATEFLEET_REQUESTS.x", consumer("RATEFLEET_REQUESTS", "x", "", "", false))},
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
					if !strings.Contains(r.Error(), `"`+tc.subject) {
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
	rs, err := roles.AllWith(cfg, []string{"alice", "bob"})
	require.NoError(t, err)
	var b bytes.Buffer
	require.NoError(t, roles.WriteServerConfig(&b, rs))
	for _, r := range rs {
		t.Setenv(roles.PasswordVar(r), "pw-"+r.Name)
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
	}
	var nsc bytes.Buffer
	require.NoError(t, roles.WriteNSC(&nsc, rs, "RATEFLEET"))
	require.Contains(t, nsc.String(), "nsc add user --account RATEFLEET --name ratefleet-worker")
	require.Contains(t, nsc.String(), "nsc add user --account RATEFLEET --name alice")
	require.Contains(t, nsc.String(), "_INBOX_alice.>,ratefleet.reply.alice.>")
}
