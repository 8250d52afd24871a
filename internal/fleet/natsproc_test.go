package fleet_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/fleet"
)

func TestFleet_NATSInAProcessOfItsOwnServesTheFleet(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real processes")
	}
	ctx := context.Background()
	f, err := fleet.Up(ctx, fleet.Config{
		Bin: bin, Workers: 1, Duration: 2 * time.Second, Drain: 30 * time.Second, NATSProcess: true,
		ProducerArgs: []string{"--shape", "rate", "--rate", "10", "--ttl", "1m", "--progress", "0"},
		WorkerArgs:   []string{"--max-delay", "250ms"},
		Logs:         testWriter{t}, Logger: slog.New(slog.DiscardHandler),
	})
	require.NoError(t, err)
	t.Cleanup(f.Down)
	require.Nil(t, f.NATS, "no NATS inside the runner")
	require.NotNil(t, f.NATSProc)
	require.True(t, strings.HasPrefix(f.URL(), "nats://127.0.0.1:"), f.URL())
	require.Contains(t, strings.Join(f.NATSProc.Args(), " "), "nats --port")

	require.NoError(t, f.Produce(ctx))
	f.Drain(ctx)
	f.StopWorkers()
	sum, err := f.Summarize(ctx, 2*time.Second)
	require.NoError(t, err)
	require.Positive(t, sum.Published)
	require.Equal(t, sum.Published, sum.Exchange.Distinct, "every request served: %s", fleet.FormatSummary(sum))
	require.Zero(t, sum.Lost())

	// The NATS process did the serving: it has used CPU of its own.
	require.Positive(t, f.NATSProc.CPU(), "CPU of the NATS process")
	f.Down()
	select {
	case <-f.NATSProc.Done():
	default:
		t.Fatalf("the NATS process (pid %d) still runs after Down", f.NATSProc.PID())
	}
}
