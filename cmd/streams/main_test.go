package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/cli"
	"github.com/ratefleet/ratefleet/internal/embedded"
	"github.com/ratefleet/ratefleet/internal/fleet"
	"github.com/ratefleet/ratefleet/internal/natsconn"
	"github.com/ratefleet/ratefleet/internal/roles"
)

// secured starts a TLS server requiring client certificates, with one password
// user per role; streams.yaml is not applied yet.
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
	return s, acc
}

// runAs runs the streams command with env as its whole environment and returns
// its exit status, stdout and stderr as main would print them.
func runAs(t *testing.T, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	for _, name := range cli.EnvNames() {
		t.Setenv(name, env[name])
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out, errOut syncBuffer
	start := time.Now()
	code := cli.ExitCode("streams", run(ctx, args, strings.NewReader(""), &out, &errOut), &errOut)
	require.Less(t, time.Since(start), 10*time.Second, "fails fast instead of retrying")
	return code, out.String(), errOut.String()
}

// syncBuffer is written by the command and by the NATS client's callbacks.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// roleEnv returns the environment of role as fleet.Access gives it.
func roleEnv(acc *fleet.Access, role string) map[string]string {
	env := map[string]string{}
	for _, kv := range acc.Env(role) {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	return env
}

func TestStreams_OnlyTheAdminApplies(t *testing.T) {
	s, acc := secured(t)
	tls := acc.Args(roles.Worker) // the TLS files; passwords come from the environment
	url := s.ClientURL()

	code, _, stderr := runAs(t, roleEnv(acc, roles.Worker), append([]string{"check", "--nats", url}, tls...)...)
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "an admin applies them with `streams apply`", "drift names the way out")

	code, _, stderr = runAs(t, roleEnv(acc, roles.Worker), append([]string{"apply", "--nats", url}, tls...)...)
	require.Equal(t, 1, code)
	require.Contains(t, stderr, `Permissions Violation for Publish to "$JS.API.STREAM.CREATE.RATEFLEET_REQUESTS"`)
	require.Equal(t, 1, strings.Count(strings.TrimSpace(lastLine(stderr)), "\n")+1)

	code, stdout, stderr := runAs(t, roleEnv(acc, roles.Admin), append([]string{"apply", "--nats", url}, tls...)...)
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stdout, "applied to "+url)

	// With the keys file: a consumer for each of its routes, and not a word of
	// its secrets.
	const secret = "S3CRET-never-shown"
	keysFile := filepath.Join(t.TempDir(), "keys")
	require.NoError(t, os.WriteFile(keysFile, []byte("k1 secret="+secret+" account=main labels=spot\n"), 0o600))
	code, stdout, stderr = runAs(t, roleEnv(acc, roles.Admin), append([]string{"apply", "--nats", url, "--keys-file", keysFile, "--log-level", "debug"}, tls...)...)
	require.Equal(t, 0, code, stderr)
	require.NotContains(t, stdout+stderr, secret)
	require.Contains(t, stderr, "workers_batch_label-spot")
	code, _, stderr = runAs(t, roleEnv(acc, roles.Admin), append([]string{"apply", "--nats", url, "--keys-file", filepath.Join(t.TempDir(), "none")}, tls...)...)
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "read API keys")

	for _, role := range roles.Names() {
		code, stdout, stderr = runAs(t, roleEnv(acc, role), append([]string{"check", "-s", url}, tls...)...)
		require.Equal(t, 0, code, "%s: %s", role, stderr)
		require.Contains(t, stdout, "matches")
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

func TestStreams_BadCredentialsFailAtOnceWithOneLine(t *testing.T) {
	s, acc := secured(t)
	url := s.ClientURL()
	pki := acc.PKI()
	admin := roleEnv(acc, roles.Admin)
	expiredCert, expiredKey, err := pki.Issue("expired", false, time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour))
	require.NoError(t, err)
	other, err := embedded.NewPKI(t.TempDir())
	require.NoError(t, err)
	wrongPassword := map[string]string{"NATS_USER": "ratefleet-admin", "NATS_PASSWORD": "not-the-password"}
	tlsArgs := []string{"--tlsca", pki.CA, "--tlscert", pki.ClientCert, "--tlskey", pki.ClientKey}

	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want []string
	}{
		{"wrong password", wrongPassword, tlsArgs, []string{"Authorization Violation", "check --user/--password"}},
		{"expired client certificate", admin, []string{"--tlsca", pki.CA, "--tlscert", expiredCert, "--tlskey", expiredKey}, []string{"client certificate"}},
		{"client certificate of another CA", admin, []string{"--tlsca", pki.CA, "--tlscert", other.ClientCert, "--tlskey", other.ClientKey}, []string{"client certificate"}},
		{"server certificate not trusted", admin, []string{"--tlsca", other.CA, "--tlscert", pki.ClientCert, "--tlskey", pki.ClientKey}, []string{"not signed by a trusted authority", "--tlsca"}},
		{"missing creds file", map[string]string{"NATS_CREDS": filepath.Join(t.TempDir(), "missing.creds")}, tlsArgs, []string{"$NATS_CREDS", "missing.creds", "no such file"}},
		{"missing password file", nil, append([]string{"--user", "ratefleet-admin", "--password-file", "/nonexistent/pw"}, tlsArgs...), []string{"--password-file /nonexistent/pw", "no such file"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := runAs(t, tc.env, append([]string{"check", "--nats", url}, tc.args...)...)
			require.Equal(t, 1, code, stderr)
			line := strings.TrimSpace(stderr)
			require.NotContains(t, line, "\n", "one line")
			for _, w := range tc.want {
				require.Contains(t, line, w)
			}
			require.NotContains(t, line, "not-the-password")
			t.Logf("%s", line)
		})
	}
}

func TestStreams_URLPasswordNeverPrinted(t *testing.T) {
	code, _, stderr := runAs(t, nil, "check", "--nats", "nats://alice:s3cr3t@127.0.0.1:1")
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "nats://127.0.0.1:1")
	require.NotContains(t, stderr, "s3cr3t")
	require.NotContains(t, stderr, "alice")
}

func TestStreams_RolesPrintsEveryFormat(t *testing.T) {
	for _, format := range []string{"table", "server", "nsc"} {
		code, stdout, stderr := runAs(t, nil, "roles", "--format", format)
		require.Equal(t, 0, code, stderr)
		require.Contains(t, stdout, "ratefleet-worker")
		require.Contains(t, stdout, "$JS.API.CONSUMER.MSG.NEXT.RATEFLEET_REQUESTS.*")
	}
}

func TestStreams_NKeyUsersConnectByTheirSeedFile(t *testing.T) {
	cfg, err := natsconn.LoadStreams("")
	require.NoError(t, err)
	acc, err := fleet.NewAccess(cfg, t.TempDir(), true, false)
	require.NoError(t, err)
	users, err := acc.Users(cfg)
	require.NoError(t, err)
	s, err := embedded.Start(embedded.Options{Users: users})
	require.NoError(t, err)
	t.Cleanup(s.Shutdown)

	code, _, stderr := runAs(t, nil, append([]string{"apply", "--nats", s.ClientURL()}, acc.Args(roles.Admin)...)...)
	require.Equal(t, 0, code, stderr)
	code, stdout, stderr := runAs(t, map[string]string{"NATS_NKEY": acc.Args(roles.Monitor)[1]}, "check", "--nats", s.ClientURL())
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stdout, "matches")

	code, _, stderr = runAs(t, nil, "check", "--nats", s.ClientURL())
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "Authorization Violation", "no credentials, no entry")
}
