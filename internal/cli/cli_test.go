package cli_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/cli"
)

func TestRedactURL_RemovesUserInformationInEveryForm(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
		secrets        []string // none of these may be left
	}{
		{"user and password", "nats://alice:s3cr3t@127.0.0.1:1", "nats://127.0.0.1:1", []string{"alice", "s3cr3t"}},
		{"no scheme, as nats.Connect takes", "alice:s3cr3t@host:4222", "host:4222", []string{"alice", "s3cr3t"}},
		{"a token", "nats://tok3n@host:4222", "nats://host:4222", []string{"tok3n"}},
		{"a token without a scheme", "tok3n@host", "host", []string{"tok3n"}},
		{"several URLs", "nats://a:s3cr3t@h1:1, tls://c:p4ss@h2:2", "nats://h1:1,tls://h2:2", []string{"s3cr3t", "p4ss"}},
		{"several, mixed", "h1:4222,alice:s3cr3t@h2:4222, tok3n@h3", "h1:4222,h2:4222,h3", []string{"s3cr3t", "tok3n"}},
		{"a password with a bad escape", "nats://a:%zzs3cr3t@h:1", "nats://h:1", []string{"s3cr3t"}},
		{"a password with a slash", "nats://alice:s3/cr3t@h:1", "nats://h:1", []string{"s3", "cr3t"}},
		{"a password with an @", "alice:s3@cr3t@h:1", "h:1", []string{"s3", "cr3t"}},
		{"a password with ://", "alice:s3://cr3t@h:1", "h:1", []string{"s3", "cr3t"}},
		{"a password cut by a comma", "nats://alice:s3c,r3t@h:1", "nats://REDACTED,h:1", []string{"s3c", "r3t"}},
		{"websocket with a path", "wss://u:s3cr3t@h:443/nats", "wss://h:443/nats", []string{"s3cr3t"}},
		{"IPv6", "nats://u:s3cr3t@[::1]:4222,[fe80::1]", "nats://[::1]:4222,[fe80::1]", []string{"s3cr3t"}},
		{"nothing to remove", "nats://127.0.0.1:4222", "nats://127.0.0.1:4222", nil},
		{"empty", "", "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := cli.RedactURL(tc.in)
			require.Equal(t, tc.want, got)
			for _, s := range tc.secrets {
				require.NotContains(t, got, s)
			}
		})
	}
}

// resolve parses args with the connection flags and resolves them against env.
func resolve(t *testing.T, args []string, env map[string]string) (cli.Connection, error) {
	t.Helper()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	var n cli.NATS
	n.Register(fs)
	require.NoError(t, fs.Parse(args))
	return n.Resolve(func(k string) string { return env[k] }, nil)
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

func TestSecretFiles_RefuseAFileOpenToGroupOrOthers(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name     string
		mode     os.FileMode
		insecure bool
		refused  bool
	}{
		{"owner only", 0o600, false, false},
		{"owner read only", 0o400, false, false},
		{"group may read", 0o640, false, true},
		{"others may read", 0o604, false, true},
		{"group may write", 0o620, false, true},
		{"everyone may read", 0o644, false, true},
		{"everyone may read, with --insecure-file-mode", 0o644, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_"))
			require.NoError(t, os.WriteFile(path, []byte("s3cr3t"), 0o600))
			require.NoError(t, os.Chmod(path, tc.mode))
			var logs bytes.Buffer
			err := cli.SecretFiles{Insecure: tc.insecure}.Check(slog.New(slog.NewTextHandler(&logs, nil)), "--keys-file", path)
			if !tc.refused {
				require.NoError(t, err)
				if tc.mode&0o077 != 0 {
					require.Contains(t, logs.String(), "chmod 600", "downgraded to a warning")
					require.Contains(t, logs.String(), path)
				}
				return
			}
			require.ErrorIs(t, err, cli.ErrFileMode)
			require.ErrorContains(t, err, "--keys-file "+path)
			require.ErrorContains(t, err, "run `chmod 600 "+path+"`")
			require.NotContains(t, err.Error(), "s3cr3t")
		})
	}
	missing := filepath.Join(dir, "missing")
	require.NoError(t, cli.SecretFiles{}.Check(nil, "--keys-file", missing), "left to the read, which names the error")
	odd := filepath.Join(dir, "it's mine")
	require.NoError(t, os.WriteFile(odd, []byte("x"), 0o644))
	require.ErrorContains(t, cli.SecretFiles{}.Check(nil, "--creds", odd), `chmod 600 '`+dir+`/it'\''s mine'`)
}

func TestResolve_RefusesSecretFilesOpenToOthersUnlessInsecureFileMode(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	dir := t.TempDir()
	open := func(name string) string {
		path := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(path, []byte("s3cr3t\n"), 0o600))
		require.NoError(t, os.Chmod(path, 0o644))
		return path
	}
	creds, nkey, pw, token, cert, key := open("u.creds"), open("u.nk"), open("pw"), open("token"), open("cert.pem"), open("key.pem")
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"creds", []string{"--creds", creds}, nil, "--creds " + creds},
		{"creds from the environment", nil, map[string]string{"NATS_CREDS": creds}, "$NATS_CREDS " + creds},
		{"nkey", []string{"--nkey", nkey}, nil, "--nkey " + nkey},
		{"password file", []string{"--user", "alice", "--password-file", pw}, nil, "--password-file " + pw},
		{"token file", []string{"--token-file", token}, nil, "--token-file " + token},
		{"TLS key", []string{"--tlscert", cert, "--tlskey", key}, nil, "--tlskey " + key},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := resolve(t, tc.args, tc.env)
			require.ErrorIs(t, err, cli.ErrFileMode)
			require.ErrorContains(t, err, tc.want)
			require.ErrorContains(t, err, "chmod 600")
			require.NotContains(t, err.Error(), "s3cr3t")

			if tc.name == "nkey" {
				return // the file is no seed: past the mode, NkeyOptionFromSeed refuses it
			}
			var logs bytes.Buffer
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			var n cli.NATS
			n.Register(fs)
			require.NoError(t, fs.Parse(append([]string{"--insecure-file-mode"}, tc.args...)))
			_, err = n.Resolve(func(k string) string { return tc.env[k] }, slog.New(slog.NewTextHandler(&logs, nil)))
			require.NoError(t, err)
			require.Contains(t, logs.String(), "chmod 600")
			require.NotContains(t, logs.String(), "s3cr3t")
		})
	}
}

func TestPrintable_EscapesWhatATerminalWouldObey(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"plain text is unchanged", "order-1 café ✓ 注文", "order-1 café ✓ 注文"},
		{"clear the screen", "id\x1b[2J", `id\x1b[2J`},
		{"line breaks and tabs", "a\nb\r\tc", `a\nb\r\tc`},
		{"NUL and DEL", "a\x00b\x7f", `a\x00b\x7f`},
		{"a C1 control (CSI)", "a\u009b31m", `a\u009b31m`},
		{"a lone byte that is not UTF-8", "a\x9b31m\xff", `a\x9b31m\xff`},
		{"right-to-left override", "txt\u202Egnp.exe", `txt\u202egnp.exe`},
		{"line separator", "a\u2028b", `a\u2028b`},
		{"a backslash stays", `C:\keys`, `C:\keys`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := cli.Printable(tc.in)
			require.Equal(t, tc.want, got)
			require.Equal(t, got, cli.Printable(got), "nothing left to escape")
		})
	}
}

func TestPrintableJSON_SameValueSafeOnATerminal(t *testing.T) {
	in := map[string]string{"id": "a\x1b[2J\x7f\u009b\u202e\u2028b", "ok": "café"}
	raw, err := json.MarshalIndent(in, "", "  ")
	require.NoError(t, err)
	safe := cli.PrintableJSON(raw)
	require.Equal(t, cli.Printable(string(safe)), strings.ReplaceAll(string(safe), "\n", `\n`), "nothing unprintable but the indentation's line breaks")
	var back map[string]string
	require.NoError(t, json.Unmarshal(safe, &back))
	require.Equal(t, in, back)
}

func TestExitCode_PrintsTheErrorPrintable(t *testing.T) {
	var out bytes.Buffer
	require.Equal(t, 1, cli.ExitCode("graveyard", errors.New("no such entry \x1b[2J\nsecond line"), &out))
	require.Equal(t, "graveyard: no such entry \\x1b[2J\nsecond line\n", out.String())
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
