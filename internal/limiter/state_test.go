package limiter_test

import (
	"encoding/json"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/limiter"
)

func TestState_JSONShape(t *testing.T) {
	l := mustNew(t, small())
	runSteps(t, l, []step{
		{at: 0, op: opSend, wantNext: 11},
		{at: 0, op: opWrote, n: 1, wantNext: 11},
		{at: 5, op: opAnswered, n: 1, wantNext: 6},
		{at: 6, op: opSend, wantNext: 17},
		{at: 6, op: opWrote, n: 2, wantNext: 17},
		{at: 9, op: opRejected, n: 2, wantNext: 110},
		{at: 110, op: opSend, wantNext: 131},
		{at: 110, op: opWrote, n: 3, wantNext: 131}, // still in flight
	})
	// #3 is still in flight: the state takes it as given up now, so it may
	// arrive until it left plus the arrival horizon (30 s).
	data, err := l.Handoff()
	require.NoError(t, err)
	assert.JSONEq(t, `{
		"version": 1,
		"max_delay_ns": 20000000,
		"base_delay_ns": 20000000,
		"order_delay_ns": 20000000,
		"next_free": "2030-01-01T00:00:00.131Z",
		"upper_bounds": ["2030-01-01T00:00:00.005Z", "2030-01-01T00:00:00.009Z", "2030-01-01T00:00:30.11Z"],
		"sends": 3,
		"in_flight": 1,
		"pause_until": "2030-01-01T00:00:00.11Z",
		"rejections": 1,
		"last_rejection": {
			"at": "2030-01-01T00:00:00.009Z",
			"sent_at": "2030-01-01T00:00:00.006Z",
			"max_delay_before_ns": 10000000,
			"max_delay_ns": 20000000,
			"pause_until": "2030-01-01T00:00:00.11Z",
			"count": 1,
			"ban_threshold": 10
		}
	}`, string(data))

	var st limiter.State
	require.NoError(t, json.Unmarshal(data, &st))
	assert.Equal(t, l.State(), st)

	fresh, err := mustNew(t, limiter.Config{}).Handoff()
	require.NoError(t, err)
	assert.JSONEq(t, `{"version": 1, "max_delay_ns": 50000000, "base_delay_ns": 50000000, "order_delay_ns": 50000000, "next_free": "0001-01-01T00:00:00Z", "upper_bounds": [], "sends": 0}`, string(fresh))
}

func TestRestore_WaitsExactlyAsLongAsTheWindowRequires(t *testing.T) {
	// The previous holder sent 20 requests, answered 30 ms after each; the next
	// holder's first send leaves exactly 1000 + 1 + 1 ms after the first answer.
	old := mustNew(t, limiter.Config{})
	at := t0
	for range 20 {
		at = old.Next(at)
		tk, err := old.Sent(at)
		require.NoError(t, err)
		old.Wrote(tk, at)
		old.Answered(tk, at.Add(30*time.Millisecond))
	}
	data, err := old.Handoff()
	require.NoError(t, err)
	var st limiter.State
	require.NoError(t, json.Unmarshal(data, &st))

	l, err := limiter.Restore(limiter.Config{}, st)
	require.NoError(t, err)
	first := t0.Add(30*time.Millisecond + 1002*time.Millisecond)
	assert.Equal(t, first, l.Next(at))
	_, err = l.Sent(first.Add(-time.Nanosecond))
	require.ErrorIs(t, err, limiter.ErrTooEarly)
	_, err = l.Sent(first)
	require.NoError(t, err)
}

func TestRestore_ResumesWhereTheStateLeftOff(t *testing.T) {
	// Random histories under two rules: after a handoff (through JSON), the new
	// holder never allows a send earlier than the old one would have, now and for
	// every send that follows.
	cfg := limiter.Config{
		Rules:          []limiter.Rule{{Limit: 4, Window: 100 * time.Millisecond}, {Limit: 7, Window: 300 * time.Millisecond}},
		MaxDelay:       10 * time.Millisecond,
		GuardThreshold: 9,
		// Both holders send when the new one may, which can be after the old one's
		// Next: no lateness may widen the old one's delays for that.
		Tolerance: time.Second,
	}
	rng := rand.New(rand.NewPCG(7, 7))
	for run := range 200 {
		old := mustNew(t, cfg)
		at := t0
		for range rng.IntN(30) {
			if old.Quarantined() {
				break
			}
			at = old.Next(at.Add(time.Duration(rng.IntN(50)) * time.Millisecond))
			tk, err := old.Sent(at)
			require.NoError(t, err)
			old.Wrote(tk, at)
			switch rng.IntN(4) {
			case 0:
				old.Lost(tk, at.Add(time.Second))
			case 1:
				old.Rejected(tk, at.Add(time.Duration(rng.IntN(20))*time.Millisecond), 0)
			default:
				old.Answered(tk, at.Add(time.Duration(rng.IntN(20))*time.Millisecond))
			}
		}
		data, err := old.Handoff()
		require.NoError(t, err)
		var st limiter.State
		require.NoError(t, json.Unmarshal(data, &st))
		l, err := limiter.Restore(cfg, st)
		require.NoError(t, err)

		require.Equal(t, old.Quarantined(), l.Quarantined(), "run %d", run)
		require.Equal(t, old.MaxDelay(), l.MaxDelay(), "run %d", run)
		for k := range 10 {
			now := at.Add(time.Duration(k*37) * time.Millisecond)
			want := old.Next(now)
			got := l.Next(now)
			// The handoff carries each send's bound raised to those before it
			// (bounds that grow): a late request then also holds the sends after
			// it, which the old holder knew better. Never earlier, and only that.
			require.False(t, got.Before(want), "run %d, %d ms after the last send: %s before %s", run, k*37, got, want)
			if old.Quarantined() {
				continue
			}
			a, errOld := old.Sent(got)
			b, errNew := l.Sent(got)
			require.NoError(t, errOld)
			require.NoError(t, errNew)
			old.Answered(a, got.Add(3*time.Millisecond))
			l.Answered(b, got.Add(3*time.Millisecond))
		}
	}
}

func TestRestore_KeepsTheWidenedDelayThePauseAndThe429Count(t *testing.T) {
	st := limiter.State{
		Version: limiter.StateVersion, MaxDelay: 200 * time.Millisecond,
		PauseUntil: ms(5000), NextFree: ms(5000), Rejections: 2,
	}
	l, err := limiter.Restore(limiter.Config{}, st)
	require.NoError(t, err)
	assert.Equal(t, 200*time.Millisecond, l.MaxDelay())
	assert.Equal(t, ms(5000), l.Next(t0))
	assert.False(t, l.Quarantined())
	l.Rejected(limiter.Ticket{}, ms(6000), 0) // the key's third 429
	assert.True(t, l.Quarantined())

	// A state's delay above the new holder's ceiling is capped; one below its
	// starting delay is raised.
	l, err = limiter.Restore(limiter.Config{MaxDelayCeiling: 150 * time.Millisecond}, st)
	require.NoError(t, err)
	assert.Equal(t, 150*time.Millisecond, l.MaxDelay())
	st.MaxDelay = time.Millisecond
	l, err = limiter.Restore(limiter.Config{}, st)
	require.NoError(t, err)
	assert.Equal(t, 50*time.Millisecond, l.MaxDelay())
}

func TestRestore_AStateWithoutItsOtherDelaysTakesTheDelayForAll(t *testing.T) {
	// Written before the limiter learned from evidence: every delay it knew was
	// proven by a 429, so the base and the order rule's delay are L too.
	l, err := limiter.Restore(limiter.Config{}, limiter.State{Version: limiter.StateVersion, MaxDelay: 200 * time.Millisecond})
	require.NoError(t, err)
	ev := l.Evidence()
	assert.Equal(t, 200*time.Millisecond, ev.BaseDelay)
	assert.Equal(t, 200*time.Millisecond, ev.OrderDelay)
	// With them: each is kept, between the configured delay and L.
	l, err = limiter.Restore(limiter.Config{}, limiter.State{Version: limiter.StateVersion,
		MaxDelay: 200 * time.Millisecond, BaseDelay: 80 * time.Millisecond, OrderDelay: 120 * time.Millisecond})
	require.NoError(t, err)
	ev = l.Evidence()
	assert.Equal(t, 80*time.Millisecond, ev.BaseDelay)
	assert.Equal(t, 120*time.Millisecond, ev.OrderDelay)
}

func TestRestore_AKeyAtItsGuardIsQuarantined(t *testing.T) {
	// Three 429s in the key's life, the guard's threshold: the next holder
	// sends nothing, even from a state that does not say so.
	l, err := limiter.Restore(limiter.Config{}, limiter.State{Version: limiter.StateVersion, Rejections: limiter.DefaultGuardThreshold})
	require.NoError(t, err)
	assert.True(t, l.Quarantined())
	_, err = l.Sent(t0)
	assert.ErrorIs(t, err, limiter.ErrQuarantined)
	l, err = limiter.Restore(limiter.Config{}, limiter.State{Version: limiter.StateVersion, Rejections: limiter.DefaultGuardThreshold - 1})
	require.NoError(t, err)
	assert.False(t, l.Quarantined())
}

func TestRestore_TakesSendsMissingFromTheRecordAsLateAsTheOldest(t *testing.T) {
	// The old holder kept 3 sends (its rule was 3 per 100 ms) of 10; the new one
	// enforces 5 per 100 ms: sends 6 and 7, not recorded, count as arriving by
	// the oldest recorded bound.
	st := limiter.State{
		Version: limiter.StateVersion, MaxDelay: 10 * time.Millisecond, Sends: 10,
		UpperBounds: []time.Time{ms(40), ms(50), ms(60)},
	}
	cfg := limiter.Config{Rules: []limiter.Rule{{Limit: 5, Window: 100 * time.Millisecond}}, MaxDelay: 10 * time.Millisecond, Margin: limiter.NoMargin, Registration: limiter.NoRegistration}
	l, err := limiter.Restore(cfg, st)
	require.NoError(t, err)
	runSteps(t, l, []step{
		{at: 0, op: opNext, wantNext: 141}, // the 5th previous is missing: as late as 40
		{at: 141, op: opSend, wantNext: 152},
		{at: 141, op: opAnswered, n: 1, wantNext: 142}, // the next 5th previous: missing too
		{at: 142, op: opSend, wantNext: 153},
		{at: 142, op: opAnswered, n: 2, wantNext: 143}, // 40 + 101 = 141, so order binds
		{at: 143, op: opSend, wantNext: 154},
		{at: 143, op: opAnswered, n: 3, wantNext: 151}, // 50 + 101
	})
	assert.Equal(t, uint64(13), l.State().Sends, "the 10 before, and 3 more")

	// A fresh key's state records no sends: nothing to wait for.
	l, err = limiter.Restore(cfg, limiter.State{Version: limiter.StateVersion})
	require.NoError(t, err)
	assert.Equal(t, t0, l.Next(t0))
}

func TestRestore_RejectsAStateItCannotTrust(t *testing.T) {
	for _, tc := range []struct {
		name string
		st   limiter.State
		want string
	}{
		{"no version", limiter.State{}, "version 0, this limiter reads version 1"},
		{"future version", limiter.State{Version: 2}, "version 2"},
		{"bounds out of order", limiter.State{Version: 1, Sends: 2, UpperBounds: []time.Time{ms(10), ms(5)}}, "upper bound 2 (2030-01-01T00:00:00.005Z) is before the one before it"},
		{"sends without bounds", limiter.State{Version: 1, Sends: 4}, "4 sends but no upper bounds"},
		{"negative delay", limiter.State{Version: 1, MaxDelay: -1}, "negative max delay"},
		{"negative count", limiter.State{Version: 1, Rejections: -1}, "rejection count -1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := limiter.Restore(limiter.Config{}, tc.st)
			assert.Nil(t, l)
			require.ErrorIs(t, err, limiter.ErrInvalidState)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestNewFull_AssumesEveryWindowWasJustFilled(t *testing.T) {
	// After a crash, the previous holder's last request may have left as late as
	// the claim: it may arrive 50 ms later, and the window must pass after that.
	claimed := ms(0)
	l, err := limiter.NewFull(limiter.Config{Rules: []limiter.Rule{limiter.DefaultRule, {Limit: 100, Window: 10 * time.Second}}}, claimed)
	require.NoError(t, err)
	first := ms(50 + 10_000 + 1 + 1)
	assert.Equal(t, first, l.Next(claimed))
	st := l.State()
	assert.Len(t, st.UpperBounds, 100)
	assert.Equal(t, first, st.NextFree)
}
