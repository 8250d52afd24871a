package limiter_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/limiter"
)

func TestLateness_RemembersTheLongestLatenessForAboutTwoSeconds(t *testing.T) {
	var x limiter.Lateness
	x.Add(ms(0), 3*time.Millisecond)
	x.Add(ms(300), 7*time.Millisecond)
	x.Add(ms(900), 2*time.Millisecond)
	for _, c := range []struct {
		at   int
		want time.Duration
	}{
		// Lateness is kept in 250 ms slots (here from 0), for 8 slots.
		{at: 0, want: 3 * time.Millisecond},
		{at: 249, want: 3 * time.Millisecond},
		{at: 250, want: 7 * time.Millisecond}, // the slot of 300 has begun
		{at: 2000, want: 7 * time.Millisecond},
		{at: 2249, want: 7 * time.Millisecond},
		{at: 2250, want: 2 * time.Millisecond}, // it has left; the slot of 900 is there
		{at: 2749, want: 2 * time.Millisecond},
		{at: 2750, want: 0},
	} {
		assert.Equal(t, c.want, x.Max(ms(c.at)), "at %d ms", c.at)
	}
}

func TestLateness_RemembersALoadedMachineForAboutTwoSeconds(t *testing.T) {
	var x limiter.Lateness
	x.Add(ms(0), 3*time.Millisecond)
	x.Loaded(ms(300))
	for _, c := range []struct {
		at   int
		want bool
	}{
		{at: 0, want: false},
		{at: 249, want: false},
		{at: 250, want: true}, // the slot of 300 has begun
		{at: 2249, want: true},
		{at: 2250, want: false}, // it has left
	} {
		assert.Equal(t, c.want, x.WasLoaded(ms(c.at)), "at %d ms", c.at)
	}
	assert.Equal(t, 3*time.Millisecond, x.Max(ms(249)), "a mark of load is no lateness")
}

func TestLimiter_OnABusyMachineAnswersBoundTheWindow(t *testing.T) {
	// small(): 3 per >100 ms, L = 10 ms, tolerance 10 ms. Another key of the same
	// process was late; this key's own sends were on time. Its first request
	// comes back after 25 ms, within 2 L + tolerance: no outlier. On a busy
	// machine (lateness over half the tolerance) the upstream may have registered
	// it as late as its answer, and the fourth send waits for that; otherwise
	// left + L bounds it.
	// A machine whose cores were busy (Loaded, from internal/host) is busy too,
	// whatever this process's timers show. The answers that came while the
	// machine counted as busy are counted (Evidence.Busy): they tell why a key
	// runs below its bound.
	for _, c := range []struct {
		name   string
		late   time.Duration
		loaded int    // ms at which the machine's cores were busy; -1 never
		want   int    // ms of the fourth send
		busy   uint64 // answers counted as on a busy machine
	}{
		{name: "quiet machine", late: 4 * time.Millisecond, loaded: -1, want: 10 + 100 + 1},
		{name: "busy machine", late: 6 * time.Millisecond, loaded: -1, want: 25 + 100 + 1, busy: 3},
		{name: "loaded machine, the process on time", loaded: 20, want: 25 + 100 + 1, busy: 3},
		{name: "loaded machine more than 2 s before", loaded: 25 - 2250, want: 10 + 100 + 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := small()
			cfg.Lateness = new(limiter.Lateness)
			if c.loaded != -1 {
				cfg.Lateness.Loaded(ms(c.loaded))
			}
			other := mustNew(t, cfg)
			tk, err := other.Sent(ms(0))
			require.NoError(t, err)
			other.Wrote(tk, ms(0))
			require.Equal(t, ms(11), other.Next(ms(0)))
			other.Late(ms(11).Add(c.late), c.late) // its timer fired late
			_, err = other.Sent(ms(11).Add(c.late))
			require.NoError(t, err)

			l := mustNew(t, cfg)
			var tks []limiter.Ticket
			for _, at := range []int{0, 11, 22} {
				require.Equal(t, ms(at), l.Next(ms(at)))
				tk, err := l.Sent(ms(at))
				require.NoError(t, err)
				l.Wrote(tk, ms(at))
				tks = append(tks, tk)
			}
			l.Answered(tks[0], ms(25))
			l.Answered(tks[1], ms(30))
			l.Answered(tks[2], ms(35))
			assert.Equal(t, ms(c.want), l.Next(ms(40)))
			ev := l.Evidence()
			assert.Zero(t, ev.Outliers)
			assert.Equal(t, uint64(3), ev.Answers)
			assert.Equal(t, c.busy, ev.Busy, "answers on a busy machine")
		})
	}
}
