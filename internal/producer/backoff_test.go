package producer

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestBackoff_DoublesToTheCapAndCountsAHerdOnce(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	b := newBackoff(50*time.Millisecond, 300*time.Millisecond)

	type step struct {
		sent, now  int  // ms after t0
		ok         bool // an ack, not a failure
		wantPause  time.Duration
		wantChange pauseChange
		wantEnded  bool // for an ack: it ended the pause
	}
	steps := []step{
		{sent: 0, now: 1, wantPause: 50 * time.Millisecond, wantChange: pauseStarted},
		// Sent before the pause ended: the same refusal, no second raise.
		{sent: 0, now: 2, wantPause: 50 * time.Millisecond},
		{sent: 1, now: 3, wantPause: 50 * time.Millisecond},
		// Sent once the pause ended: the stream is still full, the pause doubles...
		{sent: 51, now: 52, wantPause: 100 * time.Millisecond, wantChange: pauseRaised},
		{sent: 152, now: 153, wantPause: 200 * time.Millisecond, wantChange: pauseRaised},
		// ...up to the cap.
		{sent: 353, now: 354, wantPause: 300 * time.Millisecond, wantChange: pauseRaised},
		{sent: 654, now: 655, wantPause: 300 * time.Millisecond, wantChange: pauseRaised},
		// An ack for an attempt sent during the pause does not end it.
		{sent: 600, now: 700, ok: true},
		{sent: 955, now: 956, wantPause: 300 * time.Millisecond, wantChange: pauseRaised},
		// An attempt sent once the pause ended that succeeds does.
		{sent: 1256, now: 1257, ok: true, wantEnded: true},
		{sent: 1257, now: 1258, ok: true},
		{sent: 1300, now: 1301, wantPause: 50 * time.Millisecond, wantChange: pauseStarted},
	}
	for i, s := range steps {
		if s.ok {
			require.Equal(t, s.wantEnded, b.succeeded(at(s.sent)), "step %d", i)
			continue
		}
		pause, change := b.failed(at(s.sent), at(s.now))
		require.Equal(t, s.wantPause, pause, "step %d", i)
		require.Equal(t, s.wantChange, change, "step %d", i)
	}
	require.Equal(t, 50*time.Millisecond, b.pausedFor(at(1301)))
	require.Equal(t, 20*time.Millisecond, b.pausedFor(at(1331)))
	require.Zero(t, b.pausedFor(at(1351)))
}
