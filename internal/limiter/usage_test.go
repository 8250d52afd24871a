package limiter_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/bench/limitertest"
	"github.com/ratefleet/ratefleet/internal/limiter"
)

// outsideCalls returns the arrivals of another client using share of a key's
// 20 per 1001 ms for span, from before: evenly spaced, or in bursts of burst
// calls 1 ms apart at the same average rate (one burst a window for a burst of
// the share's 20ths).
func outsideCalls(from time.Time, span time.Duration, share float64, burst int) []time.Time {
	rate := share * 20 / 1.001 // calls a second
	var out []time.Time
	if burst <= 1 {
		every := time.Duration(float64(time.Second) / rate)
		for t := from; t.Before(from.Add(span)); t = t.Add(every) {
			out = append(out, t)
		}
		return out
	}
	every := time.Duration(float64(burst) * float64(time.Second) / rate)
	for t := from; t.Before(from.Add(span)); t = t.Add(every) {
		for k := range burst {
			out = append(out, t.Add(time.Duration(k)*time.Millisecond))
		}
	}
	return out
}

// usageRun is a saturated key at the reference's delays, sharing the key with
// an outside client that has been calling for 5 s before it starts, with
// usage reports on its answers.
func usageRun(p limitertest.Pacer, seed uint64, n int, share float64, burst int) limitertest.Result {
	return limitertest.Run{
		Pacer: p, Requests: n, Start: simStart, Usage: true,
		Delays:  limitertest.Uniform(seed, L, time.Millisecond),
		Outside: outsideCalls(simStart.Add(-5*time.Second), 5*time.Second+time.Duration(n/8)*time.Second, share, burst),
	}.Execute()
}

func reportedConfig() limiter.Config {
	return limiter.Config{Rules: []limiter.Rule{limiter.DefaultRule}, Reported: []limiter.Rule{limiter.DefaultRule},
		BanThreshold: 1000, GuardThreshold: 999}
}

// TestLimiter_UsageReportsLeaveAnOutsideClientItsShare: another client uses
// 10, 30 or 50 % of the key, evenly or in one burst a window, seen only in the upstream's
// usage reports: the key draws no 429, the other client loses no call to the
// key (its calls find room), and the key still sends most of what is left.
func TestLimiter_UsageReportsLeaveAnOutsideClientItsShare(t *testing.T) {
	n := 6000
	if testing.Short() || raceEnabled {
		n = 2000
	}
	for _, share := range []float64{0.1, 0.3, 0.5} {
		for _, burst := range []int{1, int(share * 20)} {
			name := fmt.Sprintf("%.0f%%, bursts of %d", 100*share, burst)
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				left := (1 - share) * 20 / 1.001
				for seed := range uint64(3) {
					res := usageRun(mustNew(t, reportedConfig()), seed, n, share, burst)
					require.NoError(t, res.Err)
					t.Logf("%s, seed %d: %d × 429, %.2f/s of %.2f left (%.0f%%), outside refused %d",
						name, seed, res.RateLimited, res.Rate(), left, 100*res.Rate()/left, res.OutsideRejected)
					assert.Zero(t, res.RateLimited, "seed %d", seed)
					assert.Zero(t, res.OutsideRejected, "seed %d: the other client's calls find room", seed)
					assert.Greater(t, res.Rate(), 0.88*left, "seed %d: the key serves", seed)
				}
			})
		}
	}
}

// TestLimiter_WithoutTheReservationAnOutsideClientDraws429s is the ablation:
// the same 30 % client, the same reports, no reservation.
func TestLimiter_WithoutTheReservationAnOutsideClientDraws429s(t *testing.T) {
	for _, burst := range []int{1, 6} {
		t.Run(fmt.Sprintf("bursts of %d", burst), func(t *testing.T) {
			l, err := limiter.NewAblated(reportedConfig(), "usage reservation")
			require.NoError(t, err)
			res := usageRun(l, 0, 2000, 0.3, burst)
			require.NoError(t, res.Err)
			t.Logf("without the reservation: %d × 429, %d accepted, %.2f/s, outside refused %d", res.RateLimited, res.Accepted, res.Rate(), res.OutsideRejected)
			assert.Positive(t, res.RateLimited)
		})
	}
}

// TestLimiter_ObservedEstimatesErringHigh steps through reports on an injected
// clock, with the values worked out in the comments.
func TestLimiter_ObservedEstimatesErringHigh(t *testing.T) {
	ms := time.Millisecond
	rule := limiter.DefaultRule
	at := func(d time.Duration) time.Time { return simStart.Add(d) }
	type step struct {
		send    time.Duration // a send at t0 + send, written at once
		answer  time.Duration // its answer then, 0 for none yet
		refused bool          // a 429
		used    int           // the report with it; -1 none
		reserve int           // the reservation after it
	}
	tests := []struct {
		name  string
		steps []step
		next  time.Duration // Next after the steps, from t0 + the last answer
	}{
		{name: "before any report, one send a window", steps: nil, next: 0},
		{name: "one send, its report shows 7 others: 7 kept",
			// own: the send itself (1); outside 8 − 1 = 7, and at least 7 (no
			// other send of the key may be in the count): no spread, 7 kept.
			steps: []step{{send: 0, answer: 40 * ms, used: 8, reserve: 7}}},
		{name: "a send answered before the other left counts as own",
			// The second report: the first send (sent at 0, bound min(0+L, 40) = 40
			// ≤ the second's departure at 100) and the second itself: own 2,
			// outside 9 − 2 = 7, as the first showed: 7 kept.
			steps: []step{{send: 0, answer: 40 * ms, used: 8, reserve: 7}, {send: 100 * ms, answer: 150 * ms, used: 9, reserve: 7}}},
		{name: "a send still in flight around the report is not taken as own",
			// A first report shows no one else (own 1, used 1). Then the third's
			// report comes at 170; the second, sent at 100, was answered at 180,
			// after the third left at 110: its bound min(100+50, 180) = 150 is
			// after 110, so it may not have arrived by the count: own 2 (the first,
			// bound 40, and the third), outside 11 − 2 = 9; and at least
			// 11 − 3 = 8, all three sends perhaps counted. Every report is of the
			// same group (answers before 500): its tightest bound 0 (the first
			// report), but 8 proven, and the count seen to differ by 8 − 0 = 8
			// between spans: 8 + 8 = 16 kept.
			steps: []step{{send: 0, answer: 40 * ms, used: 1, reserve: 0}, {send: 100 * ms, answer: 0, used: -1},
				{send: 110 * ms, answer: 170 * ms, used: 11, reserve: 16}}},
		{name: "a 429 is not counted as own",
			// The 429's report: it did not count, outside 20 − 0 = 20 (the limit): kept 20,
			// so every send waits for a window that holds one.
			steps: []step{{send: 0, answer: 40 * ms, refused: true, used: 20, reserve: 20}}},
		{name: "no outside usage: nothing kept",
			steps: []step{{send: 0, answer: 40 * ms, used: 1, reserve: 0}, {send: 50 * ms, answer: 90 * ms, used: 2, reserve: 0}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := reportedConfig()
			cfg.Unordered = true // no order rule: the steps' sends may leave close together
			l := mustNew(t, cfg)
			var open []limiter.Ticket
			for i, s := range tt.steps {
				tk, err := l.Sent(at(s.send))
				require.NoError(t, err, "step %d", i)
				l.Wrote(tk, at(s.send))
				open = append(open, tk)
				if s.answer == 0 {
					continue
				}
				// Answer the earlier ones still open first, at the same instant
				// minus nothing: they came back with this one.
				for _, o := range open[:len(open)-1] {
					l.Answered(o, at(s.answer+10*ms))
					// Its report: the same count, of which it knows one unit
					// less as its own (the later send's, still in flight).
					l.Observed(o, rule, s.used)
				}
				if s.refused {
					l.Rejected(tk, at(s.answer), 0)
				} else {
					l.Answered(tk, at(s.answer))
				}
				open = open[:0]
				if s.used >= 0 {
					l.Observed(tk, rule, s.used)
				}
				got, ok := l.Reservation(rule)
				require.True(t, ok)
				assert.Equal(t, s.reserve, got, "step %d", i)
			}
			if len(tt.steps) == 0 {
				// One send, no report yet: the next waits for its answer, and then,
				// with no report, for its bound + W + 1 ms + margin.
				tk, err := l.Sent(simStart)
				require.NoError(t, err)
				l.Wrote(tk, simStart)
				assert.True(t, l.Next(simStart).After(simStart.Add(time.Hour)), "in flight: it holds the one place")
				l.Answered(tk, simStart.Add(40*ms))
				assert.Equal(t, simStart.Add(40*ms+time.Second+2*ms), l.Next(simStart.Add(40*ms)))
				got, _ := l.Reservation(rule)
				assert.Equal(t, rule.Limit, got)
			}
		})
	}
}

// TestLimiter_TheReservationShrinksTheWindow: with 7 kept of 20, 13 sends fit
// in a window, the 14th waits for the first's bound + W + 1 ms + margin.
func TestLimiter_TheReservationShrinksTheWindow(t *testing.T) {
	ms := time.Millisecond
	cfg := reportedConfig()
	cfg.Unordered = true // no order rule: sends may leave together
	l := mustNew(t, cfg)
	tk, err := l.Sent(simStart)
	require.NoError(t, err)
	l.Wrote(tk, simStart)
	l.Answered(tk, simStart.Add(40*ms))
	l.Observed(tk, limiter.DefaultRule, 8) // outside 7, kept 7: 13 for the key
	now := simStart.Add(40 * ms)
	for i := 2; i <= 13; i++ {
		require.Equal(t, now, l.Next(now), "send %d fits", i)
		tk, err := l.Sent(now)
		require.NoError(t, err)
		l.Wrote(tk, now)
	}
	// The 14th needs the 13th latest bound, the first's (40: its answer), + 1001 + 1.
	assert.Equal(t, simStart.Add(40*ms+time.Second+2*ms), l.Next(now))
}

// TestLimiter_TheReservationDecaysWithoutOutsideUsage: once four windows of
// reports show no other client, nothing is kept; until then the other client's
// count is seen to change (7, then 0), and that spread is kept on top.
func TestLimiter_TheReservationDecaysWithoutOutsideUsage(t *testing.T) {
	ms := time.Millisecond
	l := mustNew(t, reportedConfig())
	report := func(at time.Time, used int) int {
		tk, err := l.Sent(at)
		require.NoError(t, err)
		l.Wrote(tk, at)
		l.Answered(tk, at.Add(40*ms))
		l.Observed(tk, limiter.DefaultRule, used)
		got, _ := l.Reservation(limiter.DefaultRule)
		return got
	}
	require.Equal(t, 7, report(simStart, 8))
	// One send a window, alone in it: its report shows only itself. Kept: the
	// most seen, 7, plus the spread 7 − 0.
	for k := 1; k <= 3; k++ {
		assert.Equal(t, 14, report(simStart.Add(time.Duration(k)*2*time.Second), 1), "window %d: still kept", k)
	}
	assert.Equal(t, 0, report(simStart.Add(8*time.Second), 1), "four windows without: gone")
}

// TestLimiter_ObservedChecksItsRules: Config.Reported names rules of Rules,
// and no bucket; Observed ignores a rule the limiter does not enforce.
func TestLimiter_ObservedChecksItsRules(t *testing.T) {
	_, err := limiter.New(limiter.Config{Reported: []limiter.Rule{{Limit: 5, Window: time.Second}}})
	require.ErrorIs(t, err, limiter.ErrInvalidConfig)
	assert.Contains(t, err.Error(), "not among the rules")
	b := limiter.Rule{Kind: limiter.Bucket, Limit: 15, Rate: 1}
	_, err = limiter.New(limiter.Config{Rules: []limiter.Rule{b}, Reported: []limiter.Rule{b}})
	require.ErrorIs(t, err, limiter.ErrInvalidConfig)
	assert.Contains(t, err.Error(), "bucket")

	l := mustNew(t, limiter.Config{})
	tk, err := l.Sent(simStart)
	require.NoError(t, err)
	l.Answered(tk, simStart.Add(40*time.Millisecond))
	l.Observed(tk, limiter.Rule{Limit: 7, Window: time.Second}, 7)
	_, ok := l.Reservation(limiter.Rule{Limit: 7, Window: time.Second})
	assert.False(t, ok)
	got, ok := l.Reservation(limiter.DefaultRule)
	assert.True(t, ok)
	assert.Zero(t, got, "reports are read only for the rules enforced")
}

// TestLimiter_UsageReportsOfAFixedWindow: 100 per calendar 10 s, the
// upstream's intervals 40 ms off this clock (within the 100 ms offset
// allowed), another client at 30 % evenly or in one burst an interval: no 429.
func TestLimiter_UsageReportsOfAFixedWindow(t *testing.T) {
	rule := limiter.Rule{Kind: limiter.Fixed, Limit: 100, Window: 10 * time.Second}
	cfg := limiter.Config{Rules: []limiter.Rule{rule}, Reported: []limiter.Rule{rule}, ClockOffset: 100 * time.Millisecond,
		Unordered: true, BanThreshold: 1000, GuardThreshold: 999}
	n := 3000
	if testing.Short() || raceEnabled {
		n = 1500
	}
	rate := 0.3 * 100 / 10.0 // the other client's calls a second
	for _, burst := range []int{1, 30} {
		t.Run(fmt.Sprintf("bursts of %d", burst), func(t *testing.T) {
			for seed := range uint64(2) {
				var outside []time.Time
				every := time.Duration(float64(burst) * float64(time.Second) / rate)
				for at := simStart.Add(-30 * time.Second); at.Before(simStart.Add(time.Duration(n) * time.Second / 5)); at = at.Add(every) {
					for k := range burst {
						outside = append(outside, at.Add(time.Duration(k)*time.Millisecond+3*time.Second))
					}
				}
				run := func(l limitertest.Pacer) limitertest.Result {
					return limitertest.Run{Pacer: l, Rules: []limiter.Rule{rule}, Requests: n, Start: simStart, Usage: true,
						Unordered: true, Offset: 40 * time.Millisecond, Outside: outside,
						Delays: limitertest.Uniform(seed, L, time.Millisecond)}.Execute()
				}
				res := run(mustNew(t, cfg))
				require.NoError(t, res.Err)
				off, err := limiter.NewAblated(cfg, "usage reservation")
				require.NoError(t, err)
				ab := run(off)
				t.Logf("seed %d: %d × 429, %.2f/s of 7 left; without the reservation %d × 429", seed, res.RateLimited, res.Rate(), ab.RateLimited)
				assert.Zero(t, res.RateLimited, "seed %d", seed)
				assert.Greater(t, res.Rate(), 0.6*7, "seed %d: the key serves", seed)
				assert.Positive(t, ab.RateLimited, "seed %d: without the reservation", seed)
			}
		})
	}
	_, err := limiter.New(limiter.Config{Rules: []limiter.Rule{rule}, Reported: []limiter.Rule{rule}, ClockOffset: 5 * time.Second})
	require.ErrorIs(t, err, limiter.ErrInvalidConfig)
	assert.Contains(t, err.Error(), "covers every alignment")
}

// TestLimiter_TheFirstReportFreesTheRuleAtOnce: a key that looked at Next
// before the first report (held to one send) may send at once after a report
// that shows no one else.
func TestLimiter_TheFirstReportFreesTheRuleAtOnce(t *testing.T) {
	ms := time.Millisecond
	cfg := reportedConfig()
	cfg.Unordered = true
	l := mustNew(t, cfg)
	tk, err := l.Sent(simStart)
	require.NoError(t, err)
	l.Wrote(tk, simStart)
	now := simStart.Add(40 * ms)
	l.Answered(tk, now)
	require.True(t, l.Next(now).After(now), "no report yet: one send a window")
	l.Observed(tk, limiter.DefaultRule, 1)
	assert.Equal(t, now, l.Next(now), "the report shows no one else")
}

// TestLimiter_ASlowAnswerIsNotTakenAsOwn: a send whose answer came more than W
// after it left may have arrived before the span its count was read over.
func TestLimiter_ASlowAnswerIsNotTakenAsOwn(t *testing.T) {
	cfg := reportedConfig()
	l := mustNew(t, cfg)
	tk, err := l.Sent(simStart)
	require.NoError(t, err)
	l.Wrote(tk, simStart)
	l.Answered(tk, simStart.Add(1500*time.Millisecond))
	l.Observed(tk, limiter.DefaultRule, 3) // own 0: outside 3 (at least 2), kept 3
	got, _ := l.Reservation(limiter.DefaultRule)
	assert.Equal(t, 3, got)
}

// TestLimiter_ObservedKeepsTheTightestBoundOfAGroup steps through reports whose
// answers come within one group (W/2) of each other, on an injected clock: the
// reservation keeps their smallest upper bound of the other client's units,
// never below what any report proves, plus the spread the reports prove.
func TestLimiter_ObservedKeepsTheTightestBoundOfAGroup(t *testing.T) {
	ms := time.Millisecond
	rule := limiter.DefaultRule
	at := func(d time.Duration) time.Time { return simStart.Add(d) }
	type report struct {
		send    int           // the send (by its index) the report came with
		answer  time.Duration // its answer, at t0 + answer
		used    int
		reserve int // the reservation after it
	}
	tests := []struct {
		name    string
		sends   []time.Duration // sends at t0 + each, written at once
		reports []report
	}{
		{name: "reports that err high by a send in flight do not raise what the group keeps",
			// The other client holds 6 throughout. The first send's report (7):
			// own 1, outside 6, at least 6: 6 kept (the old rule: 6 + 1). Sends
			// at 100 and 110; the first's count (9) holds both, but the second is
			// still open: own 2 (the send at 0, bound 40, and itself), outside 7,
			// at least 9 − 3 = 6. The second's report (9): the send at 100 has
			// bound min(100 + 50, 160) = 150, after 110: own 2, outside 7, at
			// least 6. All in one group (answers before 500): its tightest bound
			// 6, nothing proves more: 6 kept (the old rule: 7 + 1).
			sends: []time.Duration{0, 100 * ms, 110 * ms},
			reports: []report{{send: 0, answer: 40 * ms, used: 7, reserve: 6}, {send: 1, answer: 160 * ms, used: 9, reserve: 6},
				{send: 2, answer: 170 * ms, used: 9, reserve: 6}}},
		{name: "a later group that shows more: the most, and the spread",
			// As above (6 kept), then a send at 600, answered at 650, in the
			// next group (answers from 500): 11 counted, 4 own: outside 7, at
			// least 7. The most is 7, and one span held 6 at most where another
			// held 7 at least: 7 + 1 kept.
			sends: []time.Duration{0, 100 * ms, 110 * ms, 600 * ms},
			reports: []report{{send: 0, answer: 40 * ms, used: 7, reserve: 6}, {send: 1, answer: 160 * ms, used: 9, reserve: 6},
				{send: 2, answer: 170 * ms, used: 9, reserve: 6}, {send: 3, answer: 650 * ms, used: 11, reserve: 8}}},
		{name: "what a report proves is kept, whatever a tighter bound of the group says",
			// The first report: 3 counted, own 1: outside 2, at least 2. The
			// second, at 140 in the same group: 10 counted, 2 own: outside 8,
			// and at least 8 (no other send may be in it). The tightest bound
			// is 2, but 8 are proven, and the spans differ by 8 − 2 = 6: 14
			// kept. Keeping only the tightest bound (2) would leave 18 to a key
			// whose window already holds 8 of the other client's.
			sends:   []time.Duration{0, 100 * ms},
			reports: []report{{send: 0, answer: 40 * ms, used: 3, reserve: 2}, {send: 1, answer: 140 * ms, used: 10, reserve: 14}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := reportedConfig()
			cfg.Unordered = true // no nonces: only the bounds place the sends
			l := mustNew(t, cfg)
			tks := make([]limiter.Ticket, len(tt.sends))
			next := 0 // the next send
			for i, r := range tt.reports {
				for ; next < len(tt.sends) && tt.sends[next] < r.answer; next++ {
					tk, err := l.Sent(at(tt.sends[next]))
					require.NoError(t, err, "send %d", next)
					l.Wrote(tk, at(tt.sends[next]))
					tks[next] = tk
				}
				l.Answered(tks[r.send], at(r.answer))
				l.Observed(tks[r.send], rule, r.used)
				got, ok := l.Reservation(rule)
				require.True(t, ok)
				assert.Equal(t, r.reserve, got, "report %d", i)
			}
		})
	}
}
