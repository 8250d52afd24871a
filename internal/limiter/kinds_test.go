package limiter_test

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/bench/limitertest"
	"github.com/ratefleet/ratefleet/internal/limiter"
)

// smallFixed is a fixed window to follow by hand: 3 per 100 ms interval, the
// upstream's intervals within 5 ms of this clock's, delays up to 10 ms, no
// margin, no nonce. t0 is a multiple of 100 ms: the intervals are [0, 100),
// [100, 200), ... ms, give or take 5 ms.
func smallFixed() limiter.Config {
	return limiter.Config{
		Rules:       []limiter.Rule{{Kind: limiter.Fixed, Limit: 3, Window: 100 * time.Millisecond}},
		MaxDelay:    10 * time.Millisecond,
		ClockOffset: 5 * time.Millisecond,
		Margin:      limiter.NoMargin, Registration: limiter.NoRegistration,
		Unordered: true,
	}
}

func TestLimiter_FixedWindowSteps(t *testing.T) {
	// A send at s with bound ub falls in the intervals ⌊(s − 5)/100⌋ to
	// ⌊(ub + 5)/100⌋; one in flight in every interval from the first on. A send
	// at t falls in ⌊(t − 5)/100⌋ or later: it may leave 5 ms after the start of
	// the interval that follows the last one holding 3, or when the sliding
	// window (the 3rd latest bound + 101 ms) allows, whichever is earlier.
	runSteps(t, mustNew(t, smallFixed()), []step{
		{at: 0, op: opSend, wantNext: 0},
		{at: 0, op: opWrote, n: 1, wantNext: 0},
		{at: 20, op: opAnswered, n: 1, wantNext: 20}, // ub 10: intervals -1 and 0
		{at: 20, op: opSend, wantNext: 20},
		{at: 20, op: opWrote, n: 2, wantNext: 20},
		{at: 25, op: opAnswered, n: 2, wantNext: 25}, // ub 25: interval 0
		// #3 may leave until now, arrive by 35: interval 0 holds 3. Fixed: 100 +
		// 5; sliding: 10 + 101 = 111.
		{at: 25, op: opSend, wantNext: 105},
		{at: 25, op: opWrote, n: 3, wantNext: 105}, // in flight: interval 0 and every later one
		{at: 40, op: opAnswered, n: 3, wantNext: 105},
		{at: 105, op: opSend, wantNext: 105},
		{at: 105, op: opWrote, n: 4, wantNext: 105},
		{at: 105, op: opSend, wantNext: 105}, // interval 1 holds 2 (#5 in flight too): room for one
		{at: 105, op: opWrote, n: 5, wantNext: 105},
		{at: 110, op: opAnswered, n: 4, wantNext: 110},
		{at: 110, op: opAnswered, n: 5, wantNext: 110},
		// #6 from 190 may arrive by 200 + 5: intervals 1 (now 3) and 2. Fixed:
		// 205; sliding: 110 + 101 = 211.
		{at: 190, op: opSend, wantNext: 205},
		{at: 190, op: opWrote, n: 6, wantNext: 205},
		{at: 198, op: opAnswered, n: 6, wantNext: 205},
		{at: 205, op: opSend, wantNext: 205}, // interval 2 holds #6 and #7
		{at: 205, op: opWrote, n: 7, wantNext: 205},
		{at: 210, op: opAnswered, n: 7, wantNext: 210},
		// #8 makes interval 2 hold 3: fixed, 305; but the sliding window allows
		// 198 + 101 = 299, and is safe for any interval: the earlier.
		{at: 210, op: opSend, wantNext: 299},
	})
}

// smallBucket is a bucket to follow by hand: 3 units, falling 10 a second (one
// unit every 100 ms), delays up to 10 ms, no margin, no nonce.
func smallBucket() limiter.Config {
	return limiter.Config{
		Rules:    []limiter.Rule{{Kind: limiter.Bucket, Limit: 3, Rate: 10}},
		MaxDelay: 10 * time.Millisecond,
		Margin:   limiter.NoMargin, Registration: limiter.NoRegistration,
		Unordered: true,
	}
}

func TestLimiter_BucketSteps(t *testing.T) {
	// The counter, had every unit arrived on its bound, plus the units that may
	// still arrive (in flight) and the new one, must stay within 3 at t − 1 ms.
	runSteps(t, mustNew(t, smallBucket()), []step{
		{at: 0, op: opSend, wantNext: 0},
		{at: 0, op: opWrote, n: 1, wantNext: 0},
		{at: 0, op: opSend, wantNext: 0},
		{at: 0, op: opWrote, n: 2, wantNext: 0}, // two in flight and one more: 3
		{at: 20, op: opAnswered, n: 1, wantNext: 20},
		{at: 20, op: opAnswered, n: 2, wantNext: 20}, // two on 10
		// #3 may leave until now, arrive by 30: 2 at 10, 1.8 at 30, 2.8 with it;
		// 2 at 110, room for one: 111.
		{at: 20, op: opSend, wantNext: 111},
		{at: 20, op: opWrote, n: 3, wantNext: 111}, // in flight: 2 at 10, 1 at 110, 2 with it
		{at: 25, op: opAnswered, n: 3, wantNext: 111},
		// Then one unit every 100 ms: the counter is full and falls at its rate.
		{at: 111, op: opSend, wantNext: 211},
		{at: 111, op: opWrote, n: 4, wantNext: 211},
		{at: 115, op: opAnswered, n: 4, wantNext: 211},
	})
}

func TestRestore_ABucketStartsFullAtTheOldestBound(t *testing.T) {
	// The state carries the latest 3 bounds (10, 25, 115 after the steps above),
	// not the counter: the counter may have been full at 10. Then 25 and 115
	// count on top: 3 − 0.15 + 1 at 25, 3.95 at 115, 2 at 310: the first send
	// at 311, later than the old holder's 211, never earlier.
	old := mustNew(t, smallBucket())
	for _, s := range []struct{ sent, answered int }{{0, 10}, {0, 10}, {25, 25}, {111, 115}} {
		tk, err := old.Sent(ms(s.sent))
		require.NoError(t, err)
		old.Wrote(tk, ms(s.sent))
		old.Answered(tk, ms(s.answered))
	}
	require.Equal(t, ms(211), old.Next(ms(115)))
	data, err := old.Handoff()
	require.NoError(t, err)
	var st limiter.State
	require.NoError(t, json.Unmarshal(data, &st))
	l, err := limiter.Restore(smallBucket(), st)
	require.NoError(t, err)
	assert.Equal(t, ms(311), l.Next(ms(115)))

	// A holder that knows nothing takes the counter full at lastLeft + L.
	full, err := limiter.NewFull(smallBucket(), ms(0))
	require.NoError(t, err)
	assert.Equal(t, ms(111), full.Next(ms(0)))
	fixed, err := limiter.NewFull(smallFixed(), ms(0))
	require.NoError(t, err)
	assert.Equal(t, ms(105), fixed.Next(ms(0)), "intervals up to 0 taken as full")
}

func TestNew_RejectsInvalidRulesOfEachKind(t *testing.T) {
	bucket := func(limit int, rate float64, step time.Duration) limiter.Config {
		return limiter.Config{Rules: []limiter.Rule{{Kind: limiter.Bucket, Limit: limit, Rate: rate, Window: step}}}
	}
	for _, tc := range []struct {
		name string
		cfg  limiter.Config
		want string
	}{
		{"bucket without a rate", bucket(10, 0, 0), "rule 1 (bucket of 10 falling 0/s): rate 0: a bucket needs the rate its counter falls by"},
		{"bucket with a negative rate", bucket(10, -1, 0), "rate -1: a bucket needs"},
		{"bucket with a rate not a number", bucket(10, math.NaN(), 0), "rate NaN: a bucket needs"},
		{"bucket with an endless rate", bucket(10, math.Inf(1), 0), "rate +Inf: a bucket needs"},
		{"bucket draining for years", bucket(10, 1e-9, 0), "a full bucket would take 10000000000 s to drain, more than 720h0m0s"},
		{"bucket with a negative step", bucket(10, 1, -time.Second), "a bucket's window is the step of its decay"},
		{"bucket without capacity", bucket(0, 1, 0), "rule 1 (bucket of 0 falling 1/s): capacity (limit) must be between 1 and 10000"},
		{"fixed without a window", limiter.Config{Rules: []limiter.Rule{{Kind: limiter.Fixed, Limit: 5}}}, "rule 1 (5 per fixed 0s): window must be at least 1ms"},
		{"fixed with a rate", limiter.Config{Rules: []limiter.Rule{{Kind: limiter.Fixed, Limit: 5, Window: time.Minute, Rate: 2}}}, "rate 2: only a bucket rule has a rate; a fixed window counts limit per window"},
		{"sliding with a rate", limiter.Config{Rules: []limiter.Rule{{Limit: 5, Window: time.Second, Rate: 2}}}, "only a bucket rule has a rate; a sliding window"},
		{"unknown kind", limiter.Config{Rules: []limiter.Rule{{Kind: 7, Limit: 5, Window: time.Second}}}, "rule 1 (kind(7): 5 per 1s): kind 7: use Sliding, Fixed or Bucket"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := limiter.New(tc.cfg)
			assert.Nil(t, l)
			require.ErrorIs(t, err, limiter.ErrInvalidConfig)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestRuleKind_ReadsAndWritesItsName(t *testing.T) {
	for _, k := range []limiter.RuleKind{limiter.Sliding, limiter.Fixed, limiter.Bucket} {
		got, err := limiter.ParseRuleKind(k.String())
		require.NoError(t, err)
		assert.Equal(t, k, got)
	}
	got, err := limiter.ParseRuleKind("")
	require.NoError(t, err)
	assert.Equal(t, limiter.Sliding, got, "no kind is a sliding window")
	_, err = limiter.ParseRuleKind("tumbling")
	require.ErrorIs(t, err, limiter.ErrInvalidConfig)

	data, err := json.Marshal([]limiter.Rule{limiter.DefaultRule, {Kind: limiter.Bucket, Limit: 15, Rate: 0.33}})
	require.NoError(t, err)
	assert.JSONEq(t, `[{"limit":20,"window_ns":1000000000},{"kind":"bucket","limit":15,"window_ns":0,"rate":0.33}]`, string(data))
	var back []limiter.Rule
	require.NoError(t, json.Unmarshal(data, &back))
	assert.Equal(t, []limiter.Rule{limiter.DefaultRule, {Kind: limiter.Bucket, Limit: 15, Rate: 0.33}}, back)
}

// kindModel is a run of the simulated upstream under rules of every kind.
type kindModel struct {
	name     string
	rules    []limiter.Rule
	offset   time.Duration // the limiter's ClockOffset; the upstream's is drawn within it
	requests int
	ordered  bool // the upstream takes a nonce
	delays   func(seed uint64) limitertest.Delays
	adjust   func(seed uint64, r *limitertest.Run)
}

var (
	fixedRule  = limiter.Rule{Kind: limiter.Fixed, Limit: 20, Window: time.Second}
	bucketRule = limiter.Rule{Kind: limiter.Bucket, Limit: 10, Rate: 5}
)

func kindModels() []kindModel {
	ms := time.Millisecond
	uniform := func(seed uint64) limitertest.Delays { return limitertest.Uniform(seed, L, ms) }
	anyInstant := func(seed uint64) limitertest.Delays { return limitertest.Uniform(seed, L, time.Nanosecond) }
	spikes := func(share float64, extra time.Duration) func(seed uint64) limitertest.Delays {
		return func(seed uint64) limitertest.Delays {
			return limitertest.WithSpikes(uniform(seed), seed, share, extra)
		}
	}
	lost := func(seed uint64) limitertest.Delays { return limitertest.WithLoss(uniform(seed), seed, 0.1, 0.1) }
	giveUp := func(d time.Duration) func(uint64, *limitertest.Run) {
		return func(_ uint64, r *limitertest.Run) { r.GiveUp = d }
	}
	weights := func(most int) func(uint64, *limitertest.Run) {
		return func(seed uint64, r *limitertest.Run) {
			rng := rand.New(rand.NewPCG(seed, 6))
			r.Weight = func(int) int { return 1 + rng.IntN(most) }
		}
	}
	// Blocks of slow arrivals and of fast ones, n each.
	blocks := func(n int) func(uint64) limitertest.Delays {
		return func(uint64) limitertest.Delays {
			return limitertest.Blocks(n, limitertest.Trip{In: L}, limitertest.Trip{Out: L})
		}
	}
	// 20 requests ready in the second half of each second, the last ones just
	// before the next interval starts: their arrivals spill into it.
	lateDemand := func(_ uint64, r *limitertest.Run) {
		r.Start = simStart
		r.Ready = func(i int) time.Time {
			return simStart.Add(time.Duration(i/20)*time.Second + 500*ms + time.Duration(i%20)*25*ms)
		}
	}
	fixed, bucket := []limiter.Rule{fixedRule}, []limiter.Rule{bucketRule}
	e := 20 * ms
	return []kindModel{
		{name: "fixed: reference delays, no nonce", rules: fixed, offset: e, requests: 20_000, delays: uniform},
		{name: "fixed: reference delays, nonce", rules: fixed, offset: e, requests: 20_000, ordered: true, delays: uniform},
		{name: "fixed: a window of slow arrivals, then a window of fast ones", rules: fixed, offset: e, requests: 20_000, delays: blocks(20)},
		{name: "fixed: demand late in each interval", rules: fixed, offset: e, requests: 20_000, delays: uniform, adjust: lateDemand},
		{name: "fixed: 1% of requests 300 ms later in", rules: fixed, offset: e, requests: 20_000, ordered: true, delays: spikes(0.01, 300*ms)},
		{name: "fixed: slow tail, 1% 2.5 s later in, answered", rules: fixed, offset: e, requests: 20_000, delays: spikes(0.01, 2500*ms), adjust: giveUp(10 * time.Second)},
		{name: "fixed: 0.5% 12 s later in, given up at 2 s", rules: fixed, offset: e, requests: 20_000, delays: spikes(0.005, 12*time.Second), adjust: giveUp(2 * time.Second)},
		{name: "fixed: 10% dropped, 10% never answered", rules: fixed, offset: e, requests: 20_000, delays: lost},
		{name: "fixed: weights 1 to 5", rules: fixed, offset: e, requests: 10_000, delays: uniform, adjust: weights(5)},
		{name: "fixed: exact clocks, any instant", rules: fixed, offset: limiter.NoClockOffset, requests: 20_000, delays: anyInstant,
			adjust: func(_ uint64, r *limitertest.Run) { r.Start = simStart.Add(700 * time.Microsecond) }},
		{name: "fixed: any alignment (offset of a whole window)", rules: fixed, offset: time.Second, requests: 20_000, delays: uniform},
		{name: "fixed: 100 per 10 s, the default offset", rules: []limiter.Rule{{Kind: limiter.Fixed, Limit: 100, Window: 10 * time.Second}},
			requests: 10_000, delays: uniform},
		{name: "bucket: reference delays, no nonce", rules: bucket, requests: 10_000, delays: uniform},
		{name: "bucket: reference delays, nonce", rules: bucket, requests: 10_000, ordered: true, delays: uniform},
		{name: "bucket: a bucket of slow arrivals, then one of fast ones", rules: bucket, requests: 10_000, delays: blocks(10)},
		{name: "bucket: 1% of requests 300 ms later in", rules: bucket, requests: 10_000, ordered: true, delays: spikes(0.01, 300*ms)},
		{name: "bucket: slow tail, 1% 2.5 s later in, answered", rules: bucket, requests: 10_000, delays: spikes(0.01, 2500*ms), adjust: giveUp(10 * time.Second)},
		{name: "bucket: 0.5% 12 s later in, given up at 2 s", rules: bucket, requests: 10_000, delays: spikes(0.005, 12*time.Second), adjust: giveUp(2 * time.Second)},
		{name: "bucket: 10% dropped, 10% never answered", rules: bucket, requests: 10_000, delays: lost},
		{name: "bucket: weights 1 to 3", rules: bucket, requests: 5_000, delays: uniform, adjust: weights(3)},
		{name: "bucket: falling in steps of 1 s", rules: []limiter.Rule{{Kind: limiter.Bucket, Limit: 10, Rate: 5, Window: time.Second}},
			offset: time.Second, requests: 10_000, delays: uniform},
		{name: "bucket: any instant", rules: bucket, requests: 10_000, delays: anyInstant},
		{name: "bucket: bursts of 30 after idle", rules: bucket, requests: 10_000, delays: uniform,
			adjust: func(_ uint64, r *limitertest.Run) {
				r.Start = simStart
				r.Ready = func(i int) time.Time { return simStart.Add(time.Duration(i/30) * 5 * time.Second) }
			}},
		{name: "every kind at once", requests: 10_000, offset: e, delays: lost,
			rules: []limiter.Rule{limiter.DefaultRule, {Kind: limiter.Fixed, Limit: 100, Window: 10 * time.Second}, {Kind: limiter.Bucket, Limit: 30, Rate: 12}}},
	}
}

// run runs m with seed on a limiter of cfg (m's rules and offset, no margin,
// delays up to L), the upstream's calendar off by a draw within the offset
// (each end on seeds 0 and 1).
func (m kindModel) run(t *testing.T, seed uint64, n int, cfg limiter.Config) (res limitertest.Result, spikes int) {
	t.Helper()
	cfg.Rules, cfg.ClockOffset, cfg.Unordered = m.rules, m.offset, !m.ordered
	l, err := limiter.New(cfg)
	require.NoError(t, err)
	e := m.offset
	if e == 0 {
		e = limiter.DefaultClockOffset
	}
	off := time.Duration(0)
	switch {
	case e < 0:
	case seed == 0:
		off = -e
	case seed == 1:
		off = e
	default:
		off = time.Duration(rand.New(rand.NewPCG(seed, 9)).Int64N(int64(2*e)+1)) - e
	}
	base := m.delays(seed)
	run := limitertest.Run{Pacer: l, Rules: m.rules, Requests: n, Unordered: !m.ordered, Offset: off,
		Delays: func(i int) limitertest.Trip {
			tr := base(i)
			if tr.In >= 300*time.Millisecond {
				spikes++
			}
			return tr
		}}
	if m.adjust != nil {
		m.adjust(seed, &run)
	}
	return run.Execute(), spikes
}

func TestLimiter_FixedAndBucketRulesHoldUnderAdversarialDelays(t *testing.T) {
	// Without margin: the arithmetic alone must hold, for every offset of the
	// upstream's calendar within the one configured.
	seeds := uint64(8)
	if testing.Short() || raceEnabled {
		seeds = 4
	}
	for _, m := range kindModels() {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			for seed := range seeds {
				n := scaled(m.requests)
				res, spikes := m.run(t, seed, n, limiter.Config{MaxDelay: L, Margin: limiter.NoMargin, Registration: limiter.NoRegistration})
				require.NoError(t, res.Err)
				assert.Equal(t, n, res.Sent, "seed %d", seed)
				assert.Zero(t, res.RateLimited, "seed %d: rejections", seed)
				assert.LessOrEqual(t, res.BadNonce, spikes, "seed %d: nonce inversions beyond the spikes", seed)
				if seed == 0 {
					t.Logf("%d sent, %.2f/s, %d × 400, %d spikes", res.Sent, res.Rate(), res.BadNonce, spikes)
				}
			}
		})
	}
}

// saturated runs a saturating load, without a nonce, of rule through the
// simulated upstream with the reference delays.
func saturated(t *testing.T, rule limiter.Rule, offset time.Duration, seed uint64, n int) limitertest.Result {
	t.Helper()
	l := mustNew(t, limiter.Config{Rules: []limiter.Rule{rule}, ClockOffset: offset, Unordered: true})
	res := limitertest.Run{Pacer: l, Rules: []limiter.Rule{rule}, Requests: n, Unordered: true,
		Delays: limitertest.Uniform(seed, L, time.Millisecond)}.Execute()
	require.NoError(t, res.Err)
	require.Zero(t, res.RateLimited)
	return res
}

func TestLimiter_AFixedWindowSendsItsLimitEveryInterval(t *testing.T) {
	// A fixed window of N per W lets a perfect client send N at the start of each
	// interval: N per W. Where 2e + L fits in W (e the offset and margin), the
	// limiter sends every interval's N at its start plus e: over k intervals,
	// (kN − 1) sends in (k − 1) W, just above N per W. The sliding window's cycle
	// is W + 1 ms + M + E[min(L, in + out)]: 1043.5 ms for 20 (19.17 a second).
	n := scaled(20_000)
	for seed := range uint64(3) {
		fx := saturated(t, fixedRule, 20*time.Millisecond, seed, n)
		sl := saturated(t, limiter.DefaultRule, 0, seed, n)
		bound := float64(fixedRule.Limit) / fixedRule.Window.Seconds()
		intervals := float64(n) / float64(fixedRule.Limit)
		assert.GreaterOrEqual(t, fx.Rate(), bound, "seed %d", seed)
		assert.LessOrEqual(t, fx.Rate(), bound*intervals/(intervals-1), "seed %d: the upstream's own ceiling", seed)
		assert.Greater(t, fx.Rate(), 1.04*sl.Rate(), "seed %d: faster than the sliding window", seed)
		t.Logf("seed %d: fixed %.3f/s (%.4f of %v per %v), sliding %.3f/s", seed, fx.Rate(), fx.Rate()/bound,
			fixedRule.Limit, fixedRule.Window, sl.Rate())
	}
}

func TestLimiter_AFixedWindowIsNeverSlowerThanTheSlidingOne(t *testing.T) {
	// Whatever the offset, the fixed rule allows a send when the sliding window
	// does: with an offset too wide for the intervals (2e + L beyond W, the
	// default 1 s on a 1 s window) it paces as the sliding window.
	n := scaled(20_000)
	sl := saturated(t, limiter.DefaultRule, 0, 5, n)
	for _, e := range []time.Duration{limiter.NoClockOffset, 20 * time.Millisecond, 300 * time.Millisecond, 0, 10 * time.Second} {
		fx := saturated(t, fixedRule, e, 5, n)
		assert.GreaterOrEqual(t, fx.Rate(), sl.Rate(), "offset %v", e)
		t.Logf("offset %v: fixed %.3f/s, sliding %.3f/s", e, fx.Rate(), sl.Rate())
	}
}

func TestLimiter_ABucketSendsItsRate(t *testing.T) {
	// Over a run of T, a bucket of C falling R a second takes at most C + R·T
	// units (and the simulated upstream refuses more). The limiter keeps its
	// worst case counter full and the counter falls at R: after the first C, R
	// a second, the delays only shift the sends.
	for _, tc := range []struct {
		name    string
		ordered bool
	}{{"no nonce", false}, {"nonce", true}} {
		t.Run(tc.name, func(t *testing.T) {
			for seed := range uint64(3) {
				l := mustNew(t, limiter.Config{Rules: []limiter.Rule{bucketRule}, Unordered: !tc.ordered})
				res := limitertest.Run{Pacer: l, Rules: []limiter.Rule{bucketRule}, Requests: scaled(10_000), Unordered: !tc.ordered,
					Delays: limitertest.Uniform(seed, L, time.Millisecond)}.Execute()
				require.NoError(t, res.Err)
				require.Zero(t, res.RateLimited)
				span := res.LastSend.Sub(res.FirstSend).Seconds()
				reached := float64(res.Sent-bucketRule.Limit) / (bucketRule.Rate * span)
				assert.GreaterOrEqual(t, reached, 0.99, "seed %d", seed)
				t.Logf("seed %d: %d sent in %.1f s: %.4f of C + R·T", seed, res.Sent, span,
					float64(res.Sent)/(float64(bucketRule.Limit)+bucketRule.Rate*span))
			}
		})
	}
}

func TestLimiter_ABucketFoldsWhatItForgets(t *testing.T) {
	// A busy bucket's counter never empties, yet the limiter keeps only the
	// sends of the last few windows: what it forgets stays in the counter.
	l := mustNew(t, limiter.Config{Rules: []limiter.Rule{bucketRule}, Unordered: true})
	most := 0
	res := limitertest.Run{Pacer: l, Rules: []limiter.Rule{bucketRule}, Requests: scaled(20_000), Unordered: true,
		Delays: limitertest.Uniform(3, L, time.Millisecond), OnSend: func(int, time.Time) { most = max(most, l.Kept()) }}.Execute()
	require.NoError(t, res.Err)
	require.Zero(t, res.RateLimited)
	// A bucket's sends count for C / R = 2 s, plus the ceiling (1 s): 15 sends,
	// doubled before compaction.
	assert.LessOrEqual(t, most, 2*16+16)
	t.Logf("%d sends, at most %d records kept", res.Sent, most)
}

// handoffs is a Pacer that hands the key to a new limiter (through State, as
// JSON, and Restore) once every few sends, when no send is in flight, as a
// worker does when it drains and its lease moves; reports go to every limiter,
// each of which ignores the tickets of the others.
type handoffs struct {
	t     *testing.T
	cfg   limiter.Config
	every int
	since int
	all   []*limiter.Limiter
}

func (h *handoffs) cur() *limiter.Limiter { return h.all[len(h.all)-1] }

// Next hands the key over first when it is time.
func (h *handoffs) Next(now time.Time) time.Time {
	if h.since >= h.every && h.cur().State().InFlight == 0 {
		data, err := h.cur().Handoff()
		require.NoError(h.t, err)
		var st limiter.State
		require.NoError(h.t, json.Unmarshal(data, &st))
		l, err := limiter.Restore(h.cfg, st)
		require.NoError(h.t, err)
		h.all, h.since = append(h.all, l), 0
	}
	return h.cur().Next(now)
}

func (h *handoffs) Sent(now time.Time) (limiter.Ticket, error) {
	h.since++
	return h.cur().Sent(now)
}
func (h *handoffs) Late(at time.Time, d time.Duration) { h.cur().Late(at, d) }
func (h *handoffs) Quarantined() bool                  { return h.cur().Quarantined() }
func (h *handoffs) Wrote(t limiter.Ticket, at time.Time) {
	for _, l := range h.all {
		l.Wrote(t, at)
	}
}
func (h *handoffs) Answered(t limiter.Ticket, at time.Time) {
	for _, l := range h.all {
		l.Answered(t, at)
	}
}
func (h *handoffs) Inverted(t limiter.Ticket, at time.Time) {
	for _, l := range h.all {
		l.Inverted(t, at)
	}
}
func (h *handoffs) Lost(t limiter.Ticket, at time.Time) {
	for _, l := range h.all {
		l.Lost(t, at)
	}
}
func (h *handoffs) Rejected(t limiter.Ticket, at time.Time, ra time.Duration) {
	for _, l := range h.all {
		l.Rejected(t, at, ra)
	}
}

func TestRestore_EveryKindSurvivesHandoffs(t *testing.T) {
	// The next holder of a key knows only the State: the latest bounds, not the
	// fixed intervals' counts or the bucket's counter. It must still draw no
	// rejection, whatever the delays.
	for _, m := range kindModels() {
		if m.adjust != nil || m.ordered {
			continue // the plain models suffice here
		}
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			for seed := range uint64(2) {
				cfg := limiter.Config{Rules: m.rules, ClockOffset: m.offset, Unordered: true, MaxDelay: L, Margin: limiter.NoMargin, Registration: limiter.NoRegistration}
				l0, err := limiter.New(cfg)
				require.NoError(t, err)
				n := max(scaled(m.requests)/2, 600)
				h := &handoffs{t: t, cfg: cfg, every: max(5, n/100), all: []*limiter.Limiter{l0}}
				res := limitertest.Run{Pacer: h, Rules: m.rules, Requests: n, Unordered: true, Delays: m.delays(seed)}.Execute()
				require.NoError(t, res.Err)
				assert.Equal(t, n, res.Sent)
				assert.Zero(t, res.RateLimited, "seed %d, %d handoffs", seed, len(h.all)-1)
				assert.Greater(t, len(h.all), 1, "seed %d: handed off", seed)
				if seed == 0 {
					t.Logf("%d sent, %.2f/s, %d handoffs", res.Sent, res.Rate(), len(h.all)-1)
				}
			}
		})
	}
}
