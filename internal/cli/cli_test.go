package cli_test

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/cli"
)

func TestRedactURL_RemovesUserInformation(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"nats://alice:s3cr3t@127.0.0.1:1", "nats://127.0.0.1:1"},
		{"nats://tok3n@host:4222", "nats://host:4222"},
		{"nats://a:b@h1:1, tls://c:d@h2:2", "nats://h1:1,tls://h2:2"},
		{"nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
		{"nats://a:%zz@h:1", "nats://REDACTED@h:1"},
	} {
		require.Equal(t, tc.want, cli.RedactURL(tc.in), tc.in)
	}
}

// resolve parses args with the connection flags and resolves them against env.
func resolve(t *testing.T, args []string, env map[string]string) (cli.Connection, error) {
	t.Helper()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	var n cli.NATS
	n.Register(fs)
	require.NoError(t, fs.Parse(args))
	return n.Resolve(func(k string) string { return env[k] })
}

func TestResolve_FlagThenRatefleetThenNATSThenContext(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", dir)
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "nats", "context"), 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "nats", "context", "prod.json"),
		[]byte(`{"url":"nats://ctx:4222","user":"ctxuser","password":"ctxpw"}`), 0o600))
	creds := filepath.Join(dir, "u.creds")
	require.NoError(t, os.WriteFile(creds, []byte("x"), 0o600))

	for _, tc := range []struct {
		name     string
		args     []string
		env      map[string]string
		url      string
		auth     string
		contextN string
	}{
		{"nothing set", nil, nil, cli.DefaultURL, "none", ""},
		{"NATS_URL", nil, map[string]string{"NATS_URL": "nats://env:1"}, "nats://env:1", "none", ""},
		{"RATEFLEET over NATS", nil, map[string]string{"NATS_URL": "nats://env:1", "RATEFLEET_NATS_URL": "nats://rf:1"}, "nats://rf:1", "none", ""},
		{"flag over all", []string{"-s", "nats://flag:1"}, map[string]string{"RATEFLEET_NATS_URL": "nats://rf:1"}, "nats://flag:1", "none", ""},
		{"--server alias", []string{"--server", "nats://flag:2"}, nil, "nats://flag:2", "none", ""},
		{"context fills the rest", []string{"--context", "prod"}, nil, "nats://ctx:4222", "user ctxuser", "prod"},
		{"NATS_CONTEXT", nil, map[string]string{"NATS_CONTEXT": "prod", "NATS_URL": "nats://env:1"}, "nats://env:1", "user ctxuser", "prod"},
		{"a flag's creds replace the context's user", []string{"--context", "prod", "--creds", creds}, nil, "nats://ctx:4222", "credentials file " + creds, "prod"},
		{"flag user with a variable's password", []string{"--user", "alice"}, map[string]string{"NATS_PASSWORD": "pw", "NATS_CREDS": creds}, cli.DefaultURL, "user alice", ""},
		{"token from a variable", nil, map[string]string{"RATEFLEET_NATS_TOKEN": "t0k"}, cli.DefaultURL, "token", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := resolve(t, tc.args, tc.env)
			require.NoError(t, err)
			require.Equal(t, tc.url, c.URL)
			require.Equal(t, tc.auth, c.Auth)
			require.Equal(t, tc.contextN, c.Context)
		})
	}
}

func TestResolve_ErrorsNameTheSetting(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"missing creds", []string{"--creds", "/nonexistent.creds"}, nil, "--creds /nonexistent.creds"},
		{"missing creds from env", nil, map[string]string{"NATS_CREDS": "/nonexistent.creds"}, "$NATS_CREDS /nonexistent.creds"},
		{"missing nkey", []string{"--nkey", "/nonexistent.nk"}, nil, "--nkey /nonexistent.nk"},
		{"missing CA", []string{"--tlsca", "/nonexistent.pem"}, nil, "--tlsca /nonexistent.pem"},
		{"cert without key", []string{"--tlscert", "/x.pem"}, nil, "needs both --tlscert and --tlskey"},
		{"password without user", nil, map[string]string{"NATS_PASSWORD": "pw"}, "no user"},
		{"two ways", []string{"--user", "a", "--token", "t"}, nil, "more than one way"},
		{"unknown context", []string{"--context", "nope-" + t.Name()}, nil, `--context "nope-`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("XDG_CONFIG_HOME", t.TempDir())
			_, err := resolve(t, tc.args, tc.env)
			require.ErrorContains(t, err, tc.want)
			require.NotContains(t, err.Error(), "pw")
		})
	}
}

func TestRegister_HelpShowsNoEnvironmentValue(t *testing.T) {
	t.Setenv("NATS_PASSWORD", "hunter2-secret")
	t.Setenv("NATS_URL", "nats://u:hunter3-secret@h:1")
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	var out bytes.Buffer
	fs.SetOutput(&out)
	var n cli.NATS
	n.Register(fs)
	fs.PrintDefaults()
	require.NotContains(t, out.String(), "hunter")
	for _, f := range []string{"-nats", "-creds", "-nkey", "-user", "-password-file", "-token-file", "-tlscert", "-tlskey", "-tlsca", "-context"} {
		require.True(t, strings.Contains(out.String(), f), f)
	}
}

// A named user connects with its own inbox prefix, the only one ratefleet's
// roles let it subscribe to; --inbox-prefix still wins.
func TestResolve_ANamedUserAnswersOnItsOwnInbox(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	kp, err := nkeys.CreateUser()
	require.NoError(t, err)
	seed, err := kp.Seed()
	require.NoError(t, err)
	pub, err := kp.PublicKey()
	require.NoError(t, err)
	seedFile := filepath.Join(t.TempDir(), "u.nk")
	require.NoError(t, os.WriteFile(seedFile, seed, 0o600))
	for _, tc := range []struct {
		name        string
		args        []string
		user, inbox string
	}{
		{"a user", []string{"--user", "alice", "--password", "pw"}, "alice", "_INBOX_alice"},
		{"an explicit prefix", []string{"--user", "alice", "--password", "pw", "--inbox-prefix", "_INBOX"}, "alice", "_INBOX"},
		{"an NKey", []string{"--nkey", seedFile}, pub, "_INBOX_" + pub},
		{"a name that is no subject token", []string{"--user", "a.b", "--password", "pw"}, "a.b", ""},
		{"a token", []string{"--token", "t"}, "", ""},
		{"nobody", nil, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := resolve(t, tc.args, nil)
			require.NoError(t, err)
			require.Equal(t, tc.user, c.User)
			o := nats.GetDefaultOptions()
			for _, opt := range c.Options {
				require.NoError(t, opt(&o))
			}
			require.Equal(t, tc.inbox, o.InboxPrefix)
		})
	}
}
