package natsconn_test

import (
	"context"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/natsconn"
)

// TestOpen_ErrorsNeverHoldTheURLsUserInformation connects to URLs that fail
// (nothing listens on port 1; some do not parse) and checks that the error names
// the server without its user, password or token, in every form nats.Connect
// takes.
func TestOpen_ErrorsNeverHoldTheURLsUserInformation(t *testing.T) {
	for _, tc := range []struct {
		name, url, shown string
		secrets          []string
	}{
		{"user and password", "nats://alice:s3cr3t@127.0.0.1:1", "nats://127.0.0.1:1", []string{"alice", "s3cr3t"}},
		{"no scheme", "alice:s3cr3t@127.0.0.1:1", "127.0.0.1:1", []string{"alice", "s3cr3t"}},
		{"a token", "tok3n@127.0.0.1:1", "127.0.0.1:1", []string{"tok3n"}},
		{"several", "127.0.0.1:1, nats://bob:p4ss@127.0.0.1:2", "127.0.0.1:1,nats://127.0.0.1:2", []string{"bob", "p4ss"}},
		{"a password url.Parse refuses", "nats://alice:s3/cr3t@127.0.0.1:1", "nats://127.0.0.1:1", []string{"alice", "s3", "cr3t"}},
		{"a password with a bad escape", "nats://alice:%zzs3cr3t@127.0.0.1:1", "nats://127.0.0.1:1", []string{"alice", "s3cr3t", "zz"}},
		{"a port that is a piece of the password", "nats://alice:s3cr3t@127.0.0.1:p4ss", "nats://REDACTED", []string{"alice", "s3cr3t", "p4ss"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := natsconn.Open(context.Background(), natsconn.Options{URL: tc.url, Logger: slog.New(slog.DiscardHandler)})
			require.Error(t, err)
			require.Contains(t, err.Error(), "connect to NATS at "+tc.shown)
			for _, s := range tc.secrets {
				require.NotContains(t, err.Error(), s)
			}
		})
	}
}
