package fleet_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/exchange"
	"github.com/ratefleet/ratefleet/internal/fleet"
	"github.com/ratefleet/ratefleet/internal/keys"
	"github.com/ratefleet/ratefleet/internal/roles"
)

// capture keeps every line the processes write, and passes warnings to the test
// log.
type capture struct {
	t   *testing.T
	mu  sync.Mutex
	buf bytes.Buffer
}

func (c *capture) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.buf.Write(p)
	c.mu.Unlock()
	return testWriter{c.t}.Write(p)
}

func (c *capture) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String()
}

// TestFleet_SecuredRunEachProcessOnItsOwnRole runs the fleet on a TLS server that
// requires client certificates, each process as its own role's user, and shows
// that every request is served and that no secret shows anywhere: output, logs,
// page, metrics, stats, graveyard, argv or --help.
func TestFleet_SecuredRunEachProcessOnItsOwnRole(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real processes")
	}
	port, err := freeLoopbackPort()
	require.NoError(t, err)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	ctx := context.Background()
	out := &capture{t: t}
	f, err := fleet.Up(ctx, fleet.Config{
		Bin: bin, Workers: 5, Duration: 6 * time.Second, Drain: 30 * time.Second, TLS: true,
		ProducerArgs: []string{"--shape", "rate", "--rate", "60", "--ttl", "1m", "--progress", "1s"},
		WorkerArgs:   []string{"--max-delay", "250ms", "--log-level", "debug"},
		Monitor:      true, MonitorInterval: 2 * time.Second, MonitorHTTP: addr,
		Out: out, Logs: out, Logger: slog.New(slog.NewTextHandler(out, nil)),
	})
	require.NoError(t, err)
	t.Cleanup(f.Down)
	start := time.Now()
	require.NoError(t, f.Produce(ctx))
	producing := time.Since(start)
	f.Drain(ctx)

	var corpus strings.Builder
	for _, path := range []string{"/", "/metrics", "/api/snapshot", "/api/history"} {
		resp, err := http.Get("http://" + addr + path)
		require.NoError(t, err)
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.NoError(t, err)
		corpus.Write(b)
	}
	// graveyard ls needs only the monitor's read rights.
	ls := runAs(t, f, roles.Monitor, "graveyard", "ls")
	require.Contains(t, ls, "0 entries")
	corpus.WriteString(ls)
	corpus.WriteString(runAs(t, f, roles.Graveyard, "streams", "check"))

	f.StopWorkers()
	sum, err := f.Summarize(ctx, producing)
	require.NoError(t, err)
	summary := fleet.FormatSummary(sum)
	t.Log(summary)
	corpus.WriteString(summary)
	require.Zero(t, sum.Lost(), "every request accounted for")
	require.Equal(t, sum.Published, sum.Successful, "every request served")
	require.Zero(t, sum.InQueue)
	require.Zero(t, sum.Buried)
	require.Zero(t, sum.Exchange.RateLimited, "no 429")
	require.Zero(t, sum.Exchange.BadNonce, "no 400")
	require.NotZero(t, sum.Published)

	reports, err := fleet.LastReports(ctx, f.Conn.JS, f.Conn.Streams.Stats.Stream.Name)
	require.NoError(t, err)
	b, err := json.Marshal(reports)
	require.NoError(t, err)
	corpus.Write(b)
	for _, p := range append([]*fleet.Proc{f.Producer, f.Monitor, f.Exchange}, f.Workers...) {
		corpus.WriteString(strings.Join(p.Args(), " ") + "\n")
	}

	// --help of every command, with every secret in its environment.
	secrets := f.Access.Secrets()
	for _, k := range exchange.DefaultKeys() {
		secrets = append(secrets, k.Secret())
	}
	for _, name := range []string{"producer", "worker", "monitor", "graveyard", "streams"} {
		args := []string{"--help"}
		if name == "graveyard" || name == "streams" {
			args = []string{map[string]string{"graveyard": "ls", "streams": "apply"}[name], "--help"}
		}
		cmd := exec.Command(filepath.Join(bin, name), args...)
		cmd.Env = append(os.Environ(), f.Access.Env(roles.Worker)...)
		cmd.Env = append(cmd.Env, "NATS_PASSWORD="+secrets[0], "NATS_TOKEN="+secrets[1], keys.EnvVar+"=key1="+secrets[len(secrets)-1])
		help, _ := cmd.CombinedOutput()
		require.Contains(t, string(help), "-tlsca", name)
		corpus.Write(help)
	}
	f.Down()
	corpus.WriteString(out.String())
	all := corpus.String()
	require.NotContains(t, all, "Permissions Violation", "every role had the permissions its job needs")
	require.Contains(t, all, "worker started")

	forms := 0
	hits := 0
	for _, s := range secrets {
		for form, v := range encodings(s) {
			forms++
			if strings.Contains(all, v) {
				hits++
				t.Errorf("a secret shows in its %s form", form)
			}
		}
	}
	t.Logf("secret grep: %d secrets in %d forms over %d bytes of output, argv, pages, metrics, stats and --help: %d hits",
		len(secrets), forms, len(all), hits)
}

// encodings returns s in every form a leak could take.
func encodings(s string) map[string]string {
	j, _ := json.Marshal(s)
	return map[string]string{
		"plain":         s,
		"url-query":     url.QueryEscape(s),
		"url-path":      url.PathEscape(s),
		"json":          strings.Trim(string(j), `"`),
		"base64":        base64.StdEncoding.EncodeToString([]byte(s)),
		"base64-raw":    base64.RawStdEncoding.EncodeToString([]byte(s)),
		"base64url":     base64.URLEncoding.EncodeToString([]byte(s)),
		"base64url-raw": base64.RawURLEncoding.EncodeToString([]byte(s)),
	}
}

// runAs runs a command of bin as role against the fleet's NATS and returns its
// output; it must succeed.
func runAs(t *testing.T, f *fleet.Fleet, role, name string, sub ...string) string {
	t.Helper()
	args := append(sub, f.RoleArgs(role)...)
	cmd := exec.Command(filepath.Join(bin, name), args...)
	cmd.Env = append(os.Environ(), f.Access.Env(role)...)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s %v as %s: %s", name, sub, role, out)
	return string(out)
}
