package main

import (
	"bytes"
	"context"
	"flag"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/cli"
	"github.com/ratefleet/ratefleet/internal/embedded"
	"github.com/ratefleet/ratefleet/internal/natsconn"
	"github.com/ratefleet/ratefleet/wire"
)

func startNATS(t *testing.T) string {
	t.Helper()
	ns, err := embedded.Start(embedded.Options{})
	require.NoError(t, err)
	t.Cleanup(ns.Shutdown)
	// The producer only checks the declarations; the admin applies them.
	c, err := natsconn.Open(context.Background(), natsconn.Options{URL: ns.ClientURL(), Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	c.Close()
	return ns.ClientURL()
}

func runProducer(t *testing.T, stdin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	err = run(ctx, args, strings.NewReader(stdin), &out, &errOut)
	return out.String(), errOut.String(), err
}

func TestRun_BurstWritesSummaryAndIDs(t *testing.T) {
	url := startNATS(t)
	idsFile := filepath.Join(t.TempDir(), "ids.txt")
	stdout, stderr, err := runProducer(t, "", "--nats", url, "--shape", "burst", "--burst", "25",
		"--payload", `{"symbol":"BTC"}`, "--ids-out", idsFile, "--progress", "0")
	require.NoError(t, err, stderr)
	require.Contains(t, stdout, "requests     25\n")
	require.Contains(t, stdout, "published    25\n")
	require.Contains(t, stdout, "failed       0\n")
	ids, err := os.ReadFile(idsFile)
	require.NoError(t, err)
	require.Len(t, strings.Fields(string(ids)), 25)
	require.Equal(t, 0, cli.ExitCode("producer", nil, &bytes.Buffer{}))
}

func TestRun_SeedShapeStopsAtCount(t *testing.T) {
	url := startNATS(t)
	stdout, stderr, err := runProducer(t, "", "--nats", url, "--count", "12", "--seed", "42")
	require.NoError(t, err, stderr)
	require.Contains(t, stdout, "published    12\n")
	require.Contains(t, stderr, "shape=seed")
	require.Contains(t, stderr, "seed=42")
}

func TestRun_LinesFromStdin(t *testing.T) {
	url := startNATS(t)
	input := "{\"id\":\"a\"}\n{\"id\":\"b\",\"ttl_ms\":-1}\n{\"id\":\"c\"}\n"

	stdout, stderr, err := runProducer(t, input, "--nats", url, "--file", "-", "--on-bad-line", "skip", "--progress", "0")
	require.NoError(t, err, stderr)
	require.Contains(t, stdout, "published    2\n")
	require.Contains(t, stdout, "skipped      1 bad lines\n")
	require.Contains(t, stderr, "line=2")

	_, _, err = runProducer(t, input, "--nats", url, "--shape", "file", "--file", "-", "--progress", "0")
	require.ErrorContains(t, err, "stdin line 2: ttl_ms -1: must be positive")
	var msg bytes.Buffer
	require.Equal(t, 1, cli.ExitCode("producer", err, &msg))
	require.Contains(t, msg.String(), "producer: read requests: stdin line 2")
}

func TestRun_UsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--shape", "square"}, `--shape "square": use one of seed, rate, poisson, burst, file`},
		{[]string{"--shape", "file"}, "--shape file needs --file"},
		{[]string{"--shape", "rate", "--file", "x.jsonl"}, "--file goes with --shape file"},
		{[]string{"--on-bad-line", "maybe"}, "--on-bad-line \"maybe\": use stop or skip"},
		{[]string{"--payload", "{oops"}, "not valid JSON"},
		{[]string{"--ttl", "0s"}, "--ttl 0s: must be at least 1ms"},
		{[]string{"--max-pending", "0"}, "--max-pending 0"},
		{[]string{"extra"}, `unexpected argument "extra"`},
		{[]string{"--no-such-flag"}, "flag provided but not defined"},
		{[]string{"--method", "POST"}, "give its --path too"},
		{[]string{"--path", "//other.example/x"}, "must not start with //"},
		{[]string{"--path", "/x", "--header", "Host: evil"}, `call header "Host" may not be set`},
		{[]string{"--path", "/x", "--body", "a=1"}, "call body on a GET"},
		{[]string{"--path", "/x", "--query", "novalue"}, "want name=value"},
		{[]string{"--weight", "-1"}, "--weight -1"},
		{[]string{"--label", "spot", "--key", "k1"}, "names more than one of key, account and label"},
		{[]string{"--priority", "high"}, `priority "high": want urgent or batch`},
		{[]string{"--label", "a.b"}, `label: name "a.b" may hold only letters`},
		{[]string{"--file", "x.jsonl", "--priority", "urgent"}, "a file's lines name their own"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			_, _, err := runProducer(t, "", tt.args...)
			require.ErrorContains(t, err, tt.want)
			var msg bytes.Buffer
			require.Equal(t, 2, cli.ExitCode("producer", err, &msg))
			require.Equal(t, "producer: "+err.Error()+"\nRun 'producer --help' for the usage.\n", msg.String(), "the error once, then the hint")
		})
	}
}

func TestRun_Help(t *testing.T) {
	stdout, _, err := runProducer(t, "", "--help")
	require.ErrorIs(t, err, flag.ErrHelp)
	require.Equal(t, 0, cli.ExitCode("producer", err, &bytes.Buffer{}))
	require.Contains(t, stdout, "Usage: producer [flags]")
	require.Contains(t, stdout, "-max-pending")
}

func TestRun_NoNATS(t *testing.T) {
	_, _, err := runProducer(t, "", "--nats", "nats://127.0.0.1:1", "--count", "1")
	require.ErrorContains(t, err, "connect to NATS at nats://127.0.0.1:1")
	require.Equal(t, 1, cli.ExitCode("producer", err, &bytes.Buffer{}))
}

func TestRun_RoutedRequestsAreStoredOnTheirRouteAndCancelledByID(t *testing.T) {
	url := startNATS(t)
	idsFile := filepath.Join(t.TempDir(), "ids.txt")
	_, stderr, err := runProducer(t, "", "--nats", url, "--shape", "burst", "--burst", "3", "--label", "spot", "--priority", "urgent",
		"--ttl", "1m", "--ids-out", idsFile, "--progress", "0")
	require.NoError(t, err, stderr)
	ids, err := os.ReadFile(idsFile)
	require.NoError(t, err)
	list := strings.Fields(string(ids))
	require.Len(t, list, 3)

	c, err := natsconn.Open(context.Background(), natsconn.Options{URL: url, CheckOnly: true, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	defer c.Close()
	ctx := context.Background()
	st, err := c.JS.Stream(ctx, c.Streams.Requests.Stream.Name)
	require.NoError(t, err)
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(">"))
	require.NoError(t, err)
	require.Equal(t, map[string]uint64{"ratefleet.requests.urgent.label-spot": 3}, info.State.Subjects)

	_, _, err = runProducer(t, "", "cancel", "--nats", url)
	require.ErrorContains(t, err, "producer cancel needs ID...")
	stdout, stderr, err := runProducer(t, "", "cancel", "--nats", url, list[0], list[2])
	require.NoError(t, err, stderr)
	require.Contains(t, stdout, list[0]+": cancel mark written")
	require.Contains(t, stdout, list[2]+": cancel mark written")
	kv, err := c.JS.KeyValue(ctx, c.Streams.KV.Cancels.Bucket)
	require.NoError(t, err)
	for i, id := range list {
		_, err := kv.Get(ctx, wire.CancelKey(wire.Anonymous, id))
		if i == 1 {
			require.ErrorIs(t, err, jetstream.ErrKeyNotFound, "not named, not marked")
			continue
		}
		require.NoError(t, err, id)
	}
}
