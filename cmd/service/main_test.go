package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/cli"
	"github.com/ratefleet/ratefleet/internal/testenv"
)

// The program serves once it printed its endpoints, answers a submit, and on
// its context's end (SIGINT or SIGTERM) stops the service and returns nil.
func TestRun_ServesUntilStopped(t *testing.T) {
	env := testenv.Start(t, testenv.Options{})
	url := env.NATS.ClientURL()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out, w := io.Pipe()
	var stderr bytes.Buffer
	done := make(chan error, 1)
	go func() {
		err := run(ctx, []string{"--nats", url, "--max-waiting", "8", "--grace", "1s"}, w, &stderr)
		w.CloseWithError(errors.New("run returned"))
		done <- err
	}()
	line, err := bufio.NewReader(out).ReadString('\n')
	require.NoError(t, err, "the endpoints on stdout")
	require.Equal(t, "serving ratefleet.api.submit ratefleet.api.await ratefleet.api.do\n", line)
	go func() { _, _ = io.Copy(io.Discard, out) }()

	nc, err := nats.Connect(url)
	require.NoError(t, err)
	defer nc.Close()
	msg, err := nc.Request("ratefleet.api.submit", []byte(`{"id":"from-main"}`), 10*time.Second)
	require.NoError(t, err)
	require.JSONEq(t, `{"id":"from-main"}`, string(msg.Data))

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err, stderr.String())
	case <-time.After(20 * time.Second):
		t.Fatal("run did not return after its context ended")
	}
	require.Contains(t, stderr.String(), "service started")
	require.Contains(t, stderr.String(), "max_waiting=8")
	_, err = nc.Request("ratefleet.api.submit", []byte(`{}`), 5*time.Second)
	require.ErrorIs(t, err, nats.ErrNoResponders)
}

func TestRun_RefusesAMaxWaitingBelowOne(t *testing.T) {
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"--max-waiting", "0"}, &stdout, &stderr)
	var usage cli.UsageError
	require.ErrorAs(t, err, &usage)
	require.ErrorContains(t, err, "--max-waiting 0: must be at least 1")
}
