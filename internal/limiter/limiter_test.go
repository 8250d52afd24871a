package limiter_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/limiter"
)

// t0 is where every step table starts; at is in milliseconds from it.
var t0 = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

func ms(at int) time.Time { return t0.Add(time.Duration(at) * time.Millisecond) }

type op int

const (
	opNext op = iota // only check Next
	opSend
	opWrote
	opAnswered
	opLost
	opRejected
)

func (o op) String() string {
	return [...]string{"next", "send", "wrote", "answered", "lost", "rejected"}[o]
}

// step is one call at t0 + at ms: n names the send it reports on (1-based, in the
// order of the table's successful sends), retry is the Retry-After of a 429, and
// wantNext is Next(t0 + at) afterwards, in ms from t0.
type step struct {
	at       int
	op       op
	n        int
	retry    time.Duration
	wantErr  error
	wantNext int
}

func runSteps(t *testing.T, l *limiter.Limiter, steps []step) {
	t.Helper()
	var tickets []limiter.Ticket
	for i, s := range steps {
		at := ms(s.at)
		ticket := func() limiter.Ticket {
			require.Positive(t, s.n, "step %d: %v needs n", i, s.op)
			return tickets[s.n-1]
		}
		switch s.op {
		case opNext:
		case opSend:
			tk, err := l.Sent(at)
			if s.wantErr != nil {
				require.ErrorIs(t, err, s.wantErr, "step %d", i)
				break
			}
			require.NoError(t, err, "step %d", i)
			tickets = append(tickets, tk)
		case opWrote:
			l.Wrote(ticket(), at)
		case opAnswered:
			l.Answered(ticket(), at)
		case opLost:
			l.Lost(ticket(), at)
		case opRejected:
			l.Rejected(ticket(), at, s.retry)
		}
		got := l.Next(at)
		assert.Equal(t, ms(s.wantNext), got, "step %d (%v at %d ms): Next is %v ms, want %d ms",
			i, s.op, s.at, float64(got.Sub(t0))/float64(time.Millisecond), s.wantNext)
	}
}

func mustNew(t *testing.T, cfg limiter.Config) *limiter.Limiter {
	t.Helper()
	l, err := limiter.New(cfg)
	require.NoError(t, err)
	return l
}

// small is a rule small enough to follow by hand: 3 requests per more than 100 ms,
// delays up to 10 ms, no margin.
func small() limiter.Config {
	return limiter.Config{
		Rules:    []limiter.Rule{{Limit: 3, Window: 100 * time.Millisecond}},
		MaxDelay: 10 * time.Millisecond,
		Margin:   limiter.NoMargin, Registration: limiter.NoRegistration,
	}
}

func TestLimiter_Steps(t *testing.T) {
	// Window: send k waits until ub(k-3) + 100 ms + 1 ms. Order: send k waits until
	// ub(k-1) + 1 ms. ub = min(left + 10 ms, answer); while a send is not yet
	// written it may still leave at any moment, so ub = now + 10 ms.
	runSteps(t, mustNew(t, small()), []step{
		{at: 0, op: opNext, wantNext: 0},
		{at: 0, op: opSend, wantNext: 11},          // #1 not written yet: 0 + 10 + 1
		{at: 2, op: opNext, wantNext: 13},          // ... and may leave at 2: 2 + 10 + 1
		{at: 2, op: opWrote, n: 1, wantNext: 13},   // ub1 = 12
		{at: 5, op: opAnswered, n: 1, wantNext: 6}, // ub1 = 5: the slot moves earlier
		{at: 5, op: opSend, wantErr: limiter.ErrTooEarly, wantNext: 6},
		{at: 6, op: opSend, wantNext: 17},             // #2
		{at: 6, op: opWrote, n: 2, wantNext: 17},      // ub2 = 16
		{at: 17, op: opSend, wantNext: 106},           // #3; the window: ub1 + 101
		{at: 17, op: opWrote, n: 3, wantNext: 106},    // ub3 = 27
		{at: 25, op: opAnswered, n: 3, wantNext: 106}, // ub3 = 25
		{at: 30, op: opAnswered, n: 2, wantNext: 106}, // rt 24 ≤ 2L + τ: ub2 = min(16, 30) = 16
		{at: 105, op: opSend, wantErr: limiter.ErrTooEarly, wantNext: 106},
		{at: 106, op: opSend, wantNext: 117},           // #4; ub2 + 101 = 117 = 106 + 11
		{at: 106, op: opWrote, n: 4, wantNext: 117},    // ub4 = 116
		{at: 110, op: opAnswered, n: 4, wantNext: 117}, // ub4 = 110; the window still says 117
		{at: 117, op: opSend, wantNext: 128},           // #5 open: 128; window ub3 + 101 = 126
		{at: 118, op: opWrote, n: 5, wantNext: 129},    // left late: ub5 = 128
		{at: 120, op: opAnswered, n: 5, wantNext: 126}, // ub5 = 120; the window binds
		{at: 126, op: opSend, wantNext: 211},           // #6; ub4 + 101
		{at: 126, op: opAnswered, n: 6, wantNext: 211}, // ub6 = 126
		{at: 211, op: opSend, wantNext: 222},           // #7 open: 222; window ub5 + 101 = 221
		{at: 300, op: opLost, n: 7, wantNext: 311},     // never written: it may have left at 300 (order: 300 + 10 + 1)
		{at: 300, op: opWrote, n: 7, wantNext: 311},    // after it ended: ignored
		{at: 311, op: opSend, wantNext: 322},           // #8; window ub6 + 101 = 227
	})
}

func TestLimiter_MarginWidensEveryWindow(t *testing.T) {
	cfg := small()
	cfg.Margin = 2 * time.Millisecond
	steps := []step{
		{at: 0, op: opSend, wantNext: 11},
		{at: 0, op: opAnswered, n: 1, wantNext: 1},
		{at: 1, op: opSend, wantNext: 12},
		{at: 1, op: opAnswered, n: 2, wantNext: 2},
		{at: 2, op: opSend, wantNext: 103}, // ub1 + 100 + 1 + 2
		{at: 2, op: opAnswered, n: 3, wantNext: 103},
	}
	runSteps(t, mustNew(t, cfg), steps)

	cfg.Margin = 0 // the default, 1 ms
	steps[len(steps)-2].wantNext = 102
	steps[len(steps)-1].wantNext = 102
	runSteps(t, mustNew(t, cfg), steps)
}

func TestLimiter_EnforcesEveryRule(t *testing.T) {
	// 2 per more than 10 ms, and 3 per more than 100 ms; every answer comes back at
	// once, so ub = send.
	l := mustNew(t, limiter.Config{
		Rules: []limiter.Rule{
			{Limit: 3, Window: 100 * time.Millisecond},
			{Limit: 2, Window: 10 * time.Millisecond},
		},
		MaxDelay: time.Millisecond,
		Margin:   limiter.NoMargin, Registration: limiter.NoRegistration,
	})
	runSteps(t, l, []step{
		{at: 0, op: opSend, wantNext: 2},
		{at: 0, op: opAnswered, n: 1, wantNext: 1},     // order only
		{at: 1, op: opSend, wantNext: 11},              // 2 per 10: ub1 + 11
		{at: 1, op: opAnswered, n: 2, wantNext: 11},    //
		{at: 11, op: opSend, wantNext: 101},            // 3 per 100: ub1 + 101
		{at: 11, op: opAnswered, n: 3, wantNext: 101},  //
		{at: 101, op: opSend, wantNext: 103},           // open: 101 + 1 + 1
		{at: 101, op: opAnswered, n: 4, wantNext: 102}, // 3 per 100: ub2 + 101; 2 per 10: ub3 + 11 = 22
		{at: 102, op: opSend, wantNext: 112},           // both: ub4 + 11 = ub3 + 101 = 112
		{at: 102, op: opAnswered, n: 5, wantNext: 112},
	})
}

func TestLimiter_RejectionPausesTheKeyForAFullWindowAndWidensMaxDelay(t *testing.T) {
	l := mustNew(t, small())
	runSteps(t, l, []step{
		{at: 0, op: opSend, wantNext: 11},
		{at: 0, op: opWrote, n: 1, wantNext: 11},
		{at: 8, op: opRejected, n: 1, wantNext: 109}, // paused to 8 + 100 + 1
		{at: 108, op: opSend, wantErr: limiter.ErrTooEarly, wantNext: 109},
		{at: 109, op: opSend, wantNext: 130},        // L is now 20: open, 109 + 20 + 1
		{at: 109, op: opWrote, n: 2, wantNext: 130}, // ub2 = 129
	})
	assert.Equal(t, 20*time.Millisecond, l.MaxDelay())
	rej, ok := l.LastRejection()
	require.True(t, ok)
	assert.Equal(t, limiter.Rejection{
		At: ms(8), SentAt: ms(0), MaxDelayBefore: 10 * time.Millisecond, MaxDelay: 20 * time.Millisecond,
		PauseUntil: ms(109), Count: 1, BanThreshold: 10,
	}, rej)
	assert.False(t, l.Quarantined())
}

func TestLimiter_RejectionHonoursRetryAfter(t *testing.T) {
	for _, tc := range []struct {
		name      string
		retry     time.Duration
		wantPause int
	}{
		{"none", 0, 8 + 101},
		{"shorter than the window", 50 * time.Millisecond, 8 + 101},
		{"longer than the window", 2 * time.Second, 8 + 2000},
		{"negative, as none", -time.Second, 8 + 101},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := mustNew(t, small())
			runSteps(t, l, []step{
				{at: 0, op: opSend, wantNext: 11},
				{at: 8, op: opRejected, n: 1, retry: tc.retry, wantNext: tc.wantPause},
			})
		})
	}
}

func TestLimiter_RejectionWidensMaxDelayOncePerIncident(t *testing.T) {
	cfg := small()
	cfg.MaxDelayCeiling = 35 * time.Millisecond
	cfg.GuardThreshold = 5
	l := mustNew(t, cfg)
	runSteps(t, l, []step{
		{at: 0, op: opSend, wantNext: 11},
		{at: 0, op: opWrote, n: 1, wantNext: 11},
		{at: 11, op: opSend, wantNext: 22},
		{at: 11, op: opWrote, n: 2, wantNext: 22},
		{at: 15, op: opRejected, n: 1, wantNext: 116}, // L 10 -> 20
		{at: 22, op: opRejected, n: 2, wantNext: 123}, // sent before the first 429 came back: L stays 20
	})
	assert.Equal(t, 20*time.Millisecond, l.MaxDelay())
	runSteps(t, l, []step{ // this table's sends are numbered afresh
		{at: 123, op: opSend, wantNext: 123 + 21},
		{at: 130, op: opRejected, n: 1, wantNext: 231}, // sent after them: L 20 -> 35, the ceiling
	})
	assert.Equal(t, 35*time.Millisecond, l.MaxDelay())
}

func TestLimiter_BanGuardTripsBeforeTheUpstreamBlocksTheKey(t *testing.T) {
	for _, tc := range []struct {
		name  string
		guard int
		ban   int
		want  int // the 429 that trips the guard
	}{
		{"defaults: 3 of 10", 0, 0, 3},
		{"configured", 5, 10, 5},
		{"strictest", 1, 10, 1},
		{"default capped below a low ban threshold", 0, 2, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := small()
			cfg.GuardThreshold, cfg.BanThreshold = tc.guard, tc.ban
			l := mustNew(t, cfg)
			at := t0
			for i := 1; i <= tc.want; i++ {
				require.False(t, l.Quarantined(), "before 429 number %d", i)
				at = l.Next(at)
				tk, err := l.Sent(at)
				require.NoError(t, err)
				l.Rejected(tk, at.Add(time.Millisecond), 0)
			}
			assert.True(t, l.Quarantined())
			rej, ok := l.LastRejection()
			require.True(t, ok)
			assert.Equal(t, tc.want, rej.Count)
			assert.True(t, rej.Quarantined)

			later := at.Add(time.Hour)
			assert.Equal(t, later, l.Next(later), "a quarantined key's Next is now, so the caller learns at once")
			_, err := l.Sent(later)
			assert.ErrorIs(t, err, limiter.ErrQuarantined)
		})
	}
}

func TestLimiter_UnwrittenRequestHoldsTheKey(t *testing.T) {
	// A request that has not finished leaving may arrive as late as now + L, for
	// any now: nothing may leave after it until it is reported written or ended.
	l := mustNew(t, small())
	tk, err := l.Sent(ms(0))
	require.NoError(t, err)
	for _, at := range []int{0, 11, 50, 1000} {
		assert.Equal(t, ms(at+11), l.Next(ms(at)), "at %d ms", at)
		_, err := l.Sent(ms(at + 10))
		assert.ErrorIs(t, err, limiter.ErrTooEarly)
	}
	l.Wrote(tk, ms(1000))
	assert.Equal(t, ms(1011), l.Next(ms(1000)))
	l.Wrote(tk, ms(900)) // a second report never moves the bound earlier
	assert.Equal(t, ms(1011), l.Next(ms(1000)))
}

func TestLimiter_TicketsItDoesNotKnowChangeNothing(t *testing.T) {
	cfg := small()
	other := mustNew(t, cfg)
	foreign, err := other.Sent(ms(0))
	require.NoError(t, err)

	l := mustNew(t, cfg)
	tk, err := l.Sent(ms(0))
	require.NoError(t, err)
	l.Wrote(tk, ms(0))
	require.Equal(t, ms(11), l.Next(ms(0)))
	for _, x := range []limiter.Ticket{{}, foreign} {
		l.Answered(x, ms(1))
		l.Lost(x, ms(1))
		l.Wrote(x, ms(5))
		assert.Equal(t, ms(11), l.Next(ms(0)))
	}
}

func TestLimiter_TicketOfAForgottenSendChangesNothing(t *testing.T) {
	// small(): 3 per >100 ms. #1 is answered at 1; once every later send is
	// more than a window past it, it can bound no send and is forgotten: a
	// second report on it changes nothing.
	l := mustNew(t, small())
	first, err := l.Sent(ms(0))
	require.NoError(t, err)
	l.Wrote(first, ms(0))
	l.Answered(first, ms(1))
	at := ms(1)
	for range 200 {
		at = l.Next(at)
		tk, err := l.Sent(at)
		require.NoError(t, err)
		l.Wrote(tk, at)
		l.Answered(tk, at)
	}
	want := l.Next(at)
	l.Rejected(first, at, 0)
	_, ok := l.LastRejection()
	require.True(t, ok, "a 429 pauses the key whatever its ticket")
	rej, _ := l.LastRejection()
	assert.True(t, rej.SentAt.IsZero(), "the forgotten send is not found")
	assert.True(t, l.Next(at).After(want), "the pause still holds")
}

func TestLimiter_AnswerBeforeItsSendIsDistrusted(t *testing.T) {
	l := mustNew(t, small())
	tk, err := l.Sent(ms(10))
	require.NoError(t, err)
	l.Answered(tk, ms(5)) // the clock went back: keep the bound that needs no answer
	assert.Equal(t, ms(21), l.Next(ms(10)))
}

func TestLimiter_RejectedWithUnknownTicketStillPausesAndCounts(t *testing.T) {
	l := mustNew(t, small())
	l.Rejected(limiter.Ticket{}, ms(50), 0)
	assert.Equal(t, ms(151), l.Next(ms(50)))
	assert.Equal(t, 20*time.Millisecond, l.MaxDelay())
	rej, ok := l.LastRejection()
	require.True(t, ok)
	assert.True(t, rej.SentAt.IsZero())
	assert.Equal(t, 1, rej.Count)
}

func TestNew_RejectsInvalidConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  limiter.Config
		want string
	}{
		{"zero limit", limiter.Config{Rules: []limiter.Rule{{Limit: 0, Window: time.Second}}}, "rule 1 (0 per 1s): limit must be between 1 and 10000"},
		{"huge limit", limiter.Config{Rules: []limiter.Rule{{Limit: limiter.MaxLimit + 1, Window: time.Second}}}, "limit must be between 1 and 10000"},
		{"no window", limiter.Config{Rules: []limiter.Rule{{Limit: 20}}}, "rule 1 (20 per 0s): window must be at least 1ms"},
		{"fractional window", limiter.Config{Rules: []limiter.Rule{limiter.DefaultRule, {Limit: 5, Window: 1500 * time.Microsecond}}}, "rule 2 (5 per 1.5ms): window must be a whole number of milliseconds"},
		{"negative delay", limiter.Config{MaxDelay: -time.Millisecond}, "max delay -1ms is negative"},
		{"negative ceiling", limiter.Config{MaxDelayCeiling: -1}, "max delay ceiling -1ns is negative"},
		{"ceiling below delay", limiter.Config{MaxDelay: 50 * time.Millisecond, MaxDelayCeiling: 40 * time.Millisecond}, "max delay ceiling 40ms is below the max delay 50ms"},
		{"negative ban", limiter.Config{BanThreshold: -1}, "ban threshold -1 is negative"},
		{"ban of 1", limiter.Config{BanThreshold: 1}, "ban threshold 1 leaves the ban guard no room"},
		{"negative guard", limiter.Config{GuardThreshold: -2}, "guard threshold -2 is negative"},
		{"guard at ban", limiter.Config{GuardThreshold: 10}, "guard threshold 10 must be below the ban threshold 10"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := limiter.New(tc.cfg)
			assert.Nil(t, l)
			require.ErrorIs(t, err, limiter.ErrInvalidConfig)
			assert.Contains(t, err.Error(), tc.want)

			_, err = limiter.Restore(tc.cfg, limiter.State{Version: limiter.StateVersion})
			assert.ErrorIs(t, err, limiter.ErrInvalidConfig)
			_, err = limiter.NewFull(tc.cfg, t0)
			assert.ErrorIs(t, err, limiter.ErrInvalidConfig)
		})
	}
}

func TestNew_DefaultsFollowTheReferenceUpstream(t *testing.T) {
	l := mustNew(t, limiter.Config{})
	assert.Equal(t, 50*time.Millisecond, l.MaxDelay())
	// 20 sends answered at once, then the 21st waits for the first + 1000 + 1 + 1 ms.
	at := t0
	for range 20 {
		at = l.Next(at)
		tk, err := l.Sent(at)
		require.NoError(t, err)
		l.Answered(tk, at)
	}
	assert.Equal(t, t0.Add(1002*time.Millisecond), l.Next(at))
}

func ExampleLimiter() {
	l, err := limiter.New(limiter.Config{}) // the reference upstream: 20 per 1000 ms, L = 50 ms
	if err != nil {
		fmt.Println(err)
		return
	}
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	for range 3 {
		now = l.Next(now) // the caller waits until then
		t, err := l.Sent(now)
		if err != nil {
			fmt.Println(err)
			return
		}
		l.Wrote(t, now)                             // the request has left
		l.Answered(t, now.Add(30*time.Millisecond)) // its answer came back
		fmt.Println(now.Format("15:04:05.000"))
	}
	_, err = l.Sent(now)
	fmt.Println(errors.Is(err, limiter.ErrTooEarly))
	// Output:
	// 00:00:00.000
	// 00:00:00.031
	// 00:00:00.062
	// true
}

func TestLimiter_ZeroValueIsTheReferenceLimiter(t *testing.T) {
	var zero limiter.Limiter
	want := mustNew(t, limiter.Config{})
	at := t0
	for i := range 45 {
		require.Equal(t, want.Next(at), zero.Next(at), "send %d", i)
		at = zero.Next(at)
		a, err := zero.Sent(at)
		require.NoError(t, err)
		b, err := want.Sent(at)
		require.NoError(t, err)
		zero.Answered(a, at.Add(20*time.Millisecond))
		want.Answered(b, at.Add(20*time.Millisecond))
	}
	var fresh limiter.Limiter
	fresh.Rejected(limiter.Ticket{}, t0, 0)
	assert.False(t, fresh.Quarantined())
	assert.Equal(t, 100*time.Millisecond, fresh.MaxDelay())
	assert.Equal(t, limiter.StateVersion, new(limiter.Limiter).State().Version)
}
