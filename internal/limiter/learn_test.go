package limiter_test

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/bench/limitertest"
	"github.com/ratefleet/ratefleet/internal/limiter"
)

// wrongModel is a delay model the default L (50 ms) does not bound, run on a
// limiter started on the default L.
type wrongModel struct {
	name     string
	requests int
	delays   func(seed uint64) limitertest.Delays
	late     func(seed uint64) func(int) time.Duration // the client's own timer lateness
	// max400 bounds the 400s: those a model forces (a spike overtaken by the next
	// request) plus a few while the order rule's delay learns.
	max400 func(res limitertest.Result, spikes int) int
	// minRate is the least rate a key must keep, sends a second.
	minRate float64
	// cfg is the limiter's configuration; the defaults (a worker's) when zero.
	cfg limiter.Config
	// adjust, if not nil, makes the client and the upstream unkinder: timeouts,
	// slow departures, weights, a clock that steps, rules of its own.
	adjust func(seed uint64, r *limitertest.Run)
}

func wrongModels() []wrongModel {
	ms := time.Millisecond
	uniform := func(seed uint64) limitertest.Delays { return limitertest.Uniform(seed, L, ms) }
	few := func(limitertest.Result, int) int { return 20 }
	loaded := new(limiter.Lateness)
	// A spread several times L takes more 400s to learn, and its tail keeps making
	// some: at most 100 (0.5% of a full run), most of them while Lo learns.
	some := func(limitertest.Result, int) int { return 100 }
	return []wrongModel{
		{name: "spread wider than L: in 0..100 ms, out 0..50 ms", requests: 20_000,
			delays: func(seed uint64) limitertest.Delays { return limitertest.Asymmetric(seed, 2*L, L, ms) },
			max400: few, minRate: 13.0},
		{name: "spread wider than L both ways: 0..150 ms", requests: 20_000,
			delays: func(seed uint64) limitertest.Delays { return limitertest.Uniform(seed, 3*L, ms) },
			max400: some, minRate: 7.0},
		{name: "asymmetric, revealed by round trips: in 0..200 ms, out 0..20 ms", requests: 20_000,
			delays: func(seed uint64) limitertest.Delays { return limitertest.Asymmetric(seed, 4*L, 20*ms, ms) },
			max400: some, minRate: 5.0},
		{name: "rare spikes: 1% of requests 300 ms later in", requests: 40_000,
			delays: func(seed uint64) limitertest.Delays {
				return limitertest.WithSpikes(uniform(seed), seed, 0.01, 300*ms)
			},
			// A spike holds one slot of the window until its answer, not every
			// later send: 0.985 of the reference rate (19.05) in simulation.
			max400: func(_ limitertest.Result, spikes int) int { return spikes }, minRate: 0.98 * 19.05},
		{name: "delays drift up to 250 ms over the run", requests: 20_000,
			delays: func(seed uint64) limitertest.Delays {
				return limitertest.Drifting(uniform(seed), 10*time.Microsecond, 200*ms)
			},
			max400: few, minRate: 5.0},
		{name: "overloaded scheduler: client and upstream late by 0..40 ms", requests: 20_000,
			delays: func(seed uint64) limitertest.Delays { return registeredLate(uniform(seed), seed, 40*ms) },
			late:   func(seed uint64) func(int) time.Duration { return lateClient(seed, 40*ms) },
			max400: few, minRate: 10.0},
		// The upstream later than the client's own lateness shows.
		{name: "busy machine: client late by 0..8 ms, upstream registers arrivals 0..20 ms late", requests: 20_000,
			delays: func(seed uint64) limitertest.Delays { return registeredLate(uniform(seed), seed, 20*ms) },
			late:   func(seed uint64) func(int) time.Duration { return lateClient(seed, 8*ms) },
			max400: few, minRate: 17.0},
		// The process on time on a loaded machine, the upstream sharing it
		// late: the process's Lateness is told the machine is loaded at every
		// answer (a worker on one core of a busy machine).
		{name: "loaded machine: client on time, upstream registers arrivals 0..15 ms late", requests: 20_000,
			cfg:    limiter.Config{Lateness: loaded},
			delays: func(seed uint64) limitertest.Delays { return registeredLate(uniform(seed), seed, 15*ms) },
			adjust: func(_ uint64, r *limitertest.Run) { r.Pacer = onLoadedMachine{r.Pacer.(*limiter.Limiter), loaded} },
			max400: few, minRate: 17.0},
		// A slow tail, answered within the worker's timeout (10 s): each slow
		// request holds one place until its answer.
		{name: "slow tail: 1% of requests 2.5 s later in, answered", requests: 20_000,
			delays: func(seed uint64) limitertest.Delays {
				return limitertest.WithSpikes(uniform(seed), seed, 0.01, 2500*ms)
			},
			adjust: func(_ uint64, r *limitertest.Run) { r.GiveUp = 10 * time.Second },
			max400: func(_ limitertest.Result, spikes int) int { return spikes }, minRate: 0.9 * 19.05},
		// Past the timeout and the ceiling: given up at 2 s, it arrives at 12 s.
		{name: "slow tail past the timeout: 0.5% of requests 12 s later in, given up at 2 s", requests: 20_000,
			delays: func(seed uint64) limitertest.Delays {
				return limitertest.WithSpikes(uniform(seed), seed, 0.005, 12*time.Second)
			},
			adjust: func(_ uint64, r *limitertest.Run) { r.GiveUp = 2 * time.Second },
			max400: func(_ limitertest.Result, spikes int) int { return spikes }, minRate: 13.0},
		{name: "answers lost: 0.5% of requests arrive and are never answered, given up at 2 s", requests: 20_000,
			delays: func(seed uint64) limitertest.Delays { return limitertest.WithLoss(uniform(seed), seed, 0, 0.005) },
			adjust: func(_ uint64, r *limitertest.Run) { r.GiveUp = 2 * time.Second },
			max400: few, minRate: 13.0},
		{name: "leaving takes 0..20 ms: Wrote comes after Sent", requests: 20_000,
			delays: uniform,
			adjust: func(seed uint64, r *limitertest.Run) {
				rng := rand.New(rand.NewPCG(seed, 5))
				r.Leave = func(int) time.Duration { return time.Duration(rng.Int64N(21)) * ms }
			},
			max400: few, minRate: 17.0},
		// An answer stamped before its send (the step fell between them) is
		// distrusted: the request is taken as given up and holds its place for
		// the arrival horizon, which costs about a tenth of the rate here.
		{name: "a wall clock that steps back 300 ms every 20 s", requests: 20_000,
			delays: uniform,
			adjust: func(_ uint64, r *limitertest.Run) {
				start := simStart
				r.Start = start
				r.Clock = func(t time.Time) time.Time {
					return t.Add(-300 * ms * time.Duration(t.Sub(start)/(20*time.Second)))
				}
			},
			max400: few, minRate: 16.5},
		{name: "weights 1 to 5", requests: 10_000,
			delays: uniform,
			adjust: func(seed uint64, r *limitertest.Run) {
				rng := rand.New(rand.NewPCG(seed, 6))
				r.Weight = func(int) int { return 1 + rng.IntN(5) }
			},
			max400: few, minRate: 5.5},
		// Delays of 0..150 ms in, then the reference's: L rises on the spread and
		// comes back down while the slow requests still count in the 10 s window.
		{name: "a long window while L comes down: 100 per 10 s", requests: 3_000,
			cfg: limiter.Config{Rules: []limiter.Rule{{Limit: 100, Window: 10 * time.Second}}},
			delays: func(seed uint64) limitertest.Delays {
				slow, fast := limitertest.Asymmetric(seed, 3*L, 10*ms, ms), uniform(seed)
				return func(i int) limitertest.Trip {
					if i < 600 {
						return slow(i)
					}
					return fast(i)
				}
			},
			adjust: func(_ uint64, r *limitertest.Run) { r.Rules = []limiter.Rule{{Limit: 100, Window: 10 * time.Second}} },
			max400: some, minRate: 8.0},
		{name: "no nonce, 100 a second", requests: 40_000,
			cfg:    limiter.Config{Rules: []limiter.Rule{{Limit: 100, Window: time.Second}}, Unordered: true},
			delays: uniform,
			adjust: func(_ uint64, r *limitertest.Run) {
				r.Rules, r.Unordered = []limiter.Rule{{Limit: 100, Window: time.Second}}, true
			},
			max400: func(limitertest.Result, int) int { return 0 }, minRate: 0.99 * 100 / 1.0435},
	}
}

// run runs model m with seed on l, for scaled(m.requests) requests.
func (m wrongModel) run(l limitertest.Pacer, seed uint64) (res limitertest.Result, spikes int) {
	return m.runN(l, seed, scaled(m.requests))
}

// runN runs model m with seed on l, for n requests.
func (m wrongModel) runN(l limitertest.Pacer, seed uint64, n int) (res limitertest.Result, spikes int) {
	base := m.delays(seed)
	delays := func(i int) limitertest.Trip {
		tr := base(i)
		if tr.In >= 300*time.Millisecond {
			spikes++
		}
		return tr
	}
	run := limitertest.Run{Pacer: l, Requests: n, Delays: delays}
	if m.late != nil {
		run.Late = m.late(seed)
	}
	if m.adjust != nil {
		m.adjust(seed, &run)
	}
	return run.Execute(), spikes
}

// onLoadedMachine is a limiter whose machine's cores are busy whenever an
// answer comes back.
type onLoadedMachine struct {
	*limiter.Limiter
	x *limiter.Lateness
}

func (p onLoadedMachine) Answered(t limiter.Ticket, at time.Time) {
	p.x.Loaded(at)
	p.Limiter.Answered(t, at)
}

func (p onLoadedMachine) Inverted(t limiter.Ticket, at time.Time) {
	p.x.Loaded(at)
	p.Limiter.Inverted(t, at)
}

// registeredLate is d with every arrival registered up to most later, in whole
// milliseconds: an upstream on a busy machine.
func registeredLate(d limitertest.Delays, seed uint64, most time.Duration) limitertest.Delays {
	rng := rand.New(rand.NewPCG(seed, 3))
	return func(i int) limitertest.Trip {
		t := d(i)
		t.In += time.Duration(rng.Int64N(most.Milliseconds()+1)) * time.Millisecond
		return t
	}
}

// lateClient is a client whose timers fire up to most late, in whole
// milliseconds: an overloaded scheduler.
func lateClient(seed uint64, most time.Duration) func(int) time.Duration {
	rng := rand.New(rand.NewPCG(seed, 4))
	return func(int) time.Duration { return time.Duration(rng.Int64N(most.Milliseconds()+1)) * time.Millisecond }
}

func TestLimiter_LearnsFromEvidenceWithoutA429(t *testing.T) {
	for _, m := range wrongModels() {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			for seed := range uint64(3) {
				l := mustNew(t, m.cfg)
				res, spikes := m.run(l, seed)
				require.NoError(t, res.Err)
				ev := l.Evidence()
				assert.Zero(t, res.RateLimited, "seed %d: window violations; %+v", seed, ev)
				assert.LessOrEqual(t, res.BadNonce, m.max400(res, spikes), "seed %d: nonce inversions (%d spikes); %+v", seed, spikes, ev)
				assert.GreaterOrEqual(t, res.Rate(), m.minRate, "seed %d; %+v", seed, ev)
				t.Logf("seed %d: %.2f/s, %d × 400, %d spikes; %+v", seed, res.Rate(), res.BadNonce, spikes, ev)
			}
		})
	}
}

func TestLimiter_EvidenceCostsNothingAtTheReference(t *testing.T) {
	// With the reference delays no round trip exceeds 2 L + tolerance and no nonce
	// is inverted: L never moves and nothing is marked late.
	l := mustNew(t, limiter.Config{})
	res := limitertest.Run{Pacer: l, Requests: scaled(40_000), Delays: limitertest.Uniform(11, L, time.Millisecond)}.Execute()
	require.NoError(t, res.Err)
	ev := l.Evidence()
	assert.Zero(t, ev.Outliers)
	assert.Zero(t, ev.Inversions)
	assert.False(t, ev.Spread)
	assert.Equal(t, L, ev.MaxDelay)
	assert.Equal(t, L, ev.OrderDelay)
}

func TestLimiter_ALoneSpikeIsBoundByItsOwnAnswer(t *testing.T) {
	// small(): 3 per >100 ms, L = 10 ms, tolerance 10 ms: a round trip over 30 ms
	// proves one way took longer than L.
	cfg := small()
	runSteps(t, mustNew(t, cfg), []step{
		{at: 0, op: opSend, wantNext: 11},
		{at: 0, op: opWrote, n: 1, wantNext: 11},
		{at: 11, op: opSend, wantNext: 22},
		{at: 11, op: opWrote, n: 2, wantNext: 22},
		{at: 15, op: opAnswered, n: 2, wantNext: 16},
		// #1 is still unanswered: it may be on its way in until its answer, and
		// takes one of the 3 slots until then. #2 arrived by 15,
		// so #4 may leave once #2's arrival is 100 ms old: 15 + 101.
		{at: 16, op: opSend, wantNext: 116},
		{at: 16, op: opWrote, n: 3, wantNext: 116},
		{at: 20, op: opAnswered, n: 3, wantNext: 116},
		{at: 80, op: opAnswered, n: 1, wantNext: 116}, // rt 80 > 2·10 + 10: ub1 = 80, its own slot
		// #1 keeps one slot until 80 + 101; the order rule holds #5 until #4's
		// bound, and then #5 waits only for #3's arrival (by 20) to age: 121, not
		// the 181 that #1 would impose if a late request held up every later one.
		{at: 116, op: opSend, wantNext: 127},
		{at: 116, op: opWrote, n: 4, wantNext: 127},
		{at: 120, op: opAnswered, n: 4, wantNext: 121},
	})
	// One outlier alone does not move L.
	l := mustNew(t, cfg)
	tk, _ := l.Sent(ms(0))
	l.Wrote(tk, ms(0))
	l.Answered(tk, ms(80))
	assert.Equal(t, 10*time.Millisecond, l.MaxDelay())
	assert.Equal(t, 1, l.Evidence().Recent)
	assert.Equal(t, uint64(1), l.Evidence().Outliers)
}

func TestLimiter_ASpreadRaisesLAndNoEvidenceBringsItBack(t *testing.T) {
	cfg := small()
	l := mustNew(t, cfg)
	at := ms(0)
	exchange := func(rt int) {
		at = l.Next(at)
		tk, err := l.Sent(at)
		require.NoError(t, err)
		l.Wrote(tk, at)
		l.Answered(tk, at.Add(time.Duration(rt)*time.Millisecond))
	}
	exchange(45) // an outlier (> 30 ms) alone
	assert.Equal(t, 10*time.Millisecond, l.MaxDelay())
	exchange(20)
	exchange(60) // a second within the horizon: L covers the longest round trip
	assert.Equal(t, 60*time.Millisecond, l.MaxDelay())
	assert.True(t, l.Evidence().Spread)
	for range 64 { // a horizon of answers within the promise
		exchange(20)
	}
	assert.Equal(t, 10*time.Millisecond, l.MaxDelay())
	assert.False(t, l.Evidence().Spread)
}

func TestLimiter_InversionRaisesTheOrderDelay(t *testing.T) {
	cfg := small()
	l := mustNew(t, cfg)
	tk, _ := l.Sent(ms(0))
	l.Wrote(tk, ms(0))
	l.Inverted(tk, ms(25)) // rt 25 ≤ 2·10 + 10: not explained by its own lateness
	ev := l.Evidence()
	assert.Equal(t, 12500*time.Microsecond, ev.OrderDelay, "raised by a quarter")
	assert.Equal(t, 12500*time.Microsecond, ev.MaxDelay, "a lone 400 is not a spread: the window follows the order rule's delay only")
	assert.False(t, ev.Spread)
	// Its own request is bound by its answer: the next window partner waits for it.
	assert.Equal(t, ms(25).Add(time.Millisecond), l.Next(ms(25)), "the order rule waits for the late request's answer, not its left + L")
	assert.Equal(t, uint64(1), ev.Inversions)
}

func TestLimiter_TheOrderRuleEasesBackAfterACalmSpell(t *testing.T) {
	l := mustNew(t, small()) // L = 10 ms, τ = 10 ms
	at := ms(0)
	// send makes one send at its earliest and answers it rt later, or as a 400.
	send := func(rt time.Duration, inverted bool) {
		t.Helper()
		at = l.Next(at)
		tk, err := l.Sent(at)
		require.NoError(t, err)
		l.Wrote(tk, at)
		if inverted {
			l.Inverted(tk, at.Add(rt))
		} else {
			l.Answered(tk, at.Add(rt))
		}
		at = at.Add(rt)
	}
	orderDelay := func() time.Duration { return l.Evidence().OrderDelay }
	// Round trips of 20 ms: no evidence (under 2·10 + 10), and longer than any
	// order delay below, so they never bring it down by themselves, as at the
	// reference delays, where round trips reach 2L.
	const calm = 20 * time.Millisecond

	send(25*time.Millisecond, true) // rt 25 ≤ 2·10 + 10: a 400 its own round trip does not explain
	require.Equal(t, 12500*time.Microsecond, orderDelay(), "raised by a quarter")
	for range limiter.OrderCalm - 1 {
		send(calm, false)
	}
	require.Equal(t, 12500*time.Microsecond, orderDelay(), "not yet a calm spell")
	send(calm, false)
	require.Equal(t, 10*time.Millisecond, orderDelay(), "a fifth back, no lower than the base")
	assert.Equal(t, 12500*time.Microsecond, l.Evidence().MaxDelay, "the window keeps the delay the 400 proved")

	send(25*time.Millisecond, true)
	require.Equal(t, 12500*time.Microsecond, orderDelay(), "a 400 while eased: back to the delay proven")
	send(25*time.Millisecond, true)
	require.Equal(t, 15625*time.Microsecond, orderDelay(), "a 400 at the delay proven raises it")
	for range limiter.OrderCalm / 2 {
		send(calm, false)
	}
	send(45*time.Millisecond, true) // over 2·15.6 + 10: its own round trip explains it, and it raises nothing
	require.Equal(t, 15625*time.Microsecond, orderDelay())
	for range limiter.OrderCalm - 1 {
		send(calm, false)
	}
	require.Equal(t, 15625*time.Microsecond, orderDelay(), "a 400 starts the calm spell again")
	send(calm, false)
	require.Equal(t, 12500*time.Microsecond, orderDelay(), "a fifth back")
	for range limiter.OrderCalm {
		send(calm, false)
	}
	require.Equal(t, 10*time.Millisecond, orderDelay(), "back at the base")
	send(25*time.Millisecond, true)
	require.Equal(t, 15625*time.Microsecond, orderDelay(), "a 400 while eased: back to the delay proven, no higher")
}

func TestLimiter_LateProcessWidensItsDelays(t *testing.T) {
	cfg := small()
	l := mustNew(t, cfg)
	tk, _ := l.Sent(ms(0))
	l.Wrote(tk, ms(0))
	assert.Equal(t, ms(11), l.Next(ms(0)))
	l.Answered(tk, ms(5))
	require.Equal(t, ms(6), l.Next(ms(1)))
	for range 3 {
		require.Equal(t, ms(6), l.Next(ms(1)), "a peek records no lateness")
	}
	assert.Zero(t, l.Evidence().Lag)
	l.Late(ms(31), 25*time.Millisecond) // woke 25 ms after the 6 ms it was told: 15 ms beyond the tolerance
	_, err := l.Sent(ms(31))
	require.NoError(t, err)
	assert.Equal(t, 25*time.Millisecond, l.Evidence().Lag)
	st := l.State() // the send is not written yet: it may leave until now, and arrive by now + L + slack
	assert.Equal(t, ms(31+10+15), st.UpperBounds[len(st.UpperBounds)-1], "the window takes L + lag beyond the tolerance")
	assert.Equal(t, ms(31+10+1), l.Next(ms(31)), "the order rule takes L: an inversion costs a 400, which it learns from")
}

func TestLimiter_UndetectableDelaysAreCaughtByTheBanGuard(t *testing.T) {
	// All of the delay on the way in, changing slowly: the incoming delay follows
	// a wave from 0 to 2L over 40 sends and back, the outgoing one is what is left
	// of a 2L round trip. Every round trip is 2L, like the reference's longest;
	// consecutive requests never overtake each other, so no 400 either. Nothing a
	// client sees tells this from the reference, yet a window's slow first request
	// and fast last one break it. What protects the key is the ban guard: the 429s
	// double L, and the guard stops the key long before the upstream's tenth.
	wave := func(i int) limitertest.Trip {
		p := i % 40
		if p >= 20 {
			p = 40 - p
		}
		in := time.Duration(p) * 2 * L / 20
		return limitertest.Trip{In: in, Out: 2*L - in}
	}
	l := mustNew(t, limiter.Config{})
	res := limitertest.Run{Pacer: l, Requests: 5_000, Delays: wave}.Execute()
	require.NoError(t, res.Err)
	assert.Zero(t, l.Evidence().Outliers, "no round trip reveals it")
	assert.Zero(t, res.BadNonce, "no inversion reveals it")
	assert.Positive(t, res.RateLimited, "the upstream sees it")
	assert.Less(t, res.RateLimited, limiter.DefaultBanThreshold)
	t.Logf("%d × 429, L %v, quarantined %v", res.RateLimited, l.MaxDelay(), res.Quarantined)
}

func TestLimiter_NextIsAPureQuery(t *testing.T) {
	// A worker peeks at Next after every answer and while it waits; a peek must
	// change nothing: the same run with a peek at every event sends at the very
	// same instants.
	for _, m := range wrongModels() {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			var plain, peeked []time.Time
			for _, peek := range []bool{false, true} {
				rec := &plain
				if peek {
					rec = &peeked
				}
				adjust := m.adjust
				m.adjust = func(seed uint64, r *limitertest.Run) {
					if adjust != nil {
						adjust(seed, r)
					}
					r.Peek = peek
					r.OnSend = func(_ int, at time.Time) { *rec = append(*rec, at) }
				}
				res, _ := m.runN(mustNew(t, m.cfg), 7, scaled(m.requests)/4)
				require.NoError(t, res.Err)
				m.adjust = adjust
			}
			require.Equal(t, plain, peeked)
		})
	}
}

func TestLimiter_ARequestOverduePast2LIsEvidenceBeforeItsAnswer(t *testing.T) {
	// small(): L = 10 ms, τ = 10 ms: a request unanswered 30 ms after it left is
	// overdue. Two overdue at once are a spread: L rises to the longer age at
	// the next send, before either answer comes. A full horizon of quiet
	// answers comes first, so the notes are not the first 64.
	l := mustNew(t, small())
	at := ms(-100_000)
	for range 100 {
		at = l.Next(at)
		tk, err := l.Sent(at)
		require.NoError(t, err)
		l.Wrote(tk, at)
		l.Answered(tk, at)
	}
	require.Zero(t, l.Evidence().Recent)
	var tks []limiter.Ticket
	for _, at := range []int{0, 11} {
		tk, err := l.Sent(ms(at))
		require.NoError(t, err)
		l.Wrote(tk, ms(at))
		tks = append(tks, tk)
	}
	require.Equal(t, 10*time.Millisecond, l.MaxDelay())
	tk, err := l.Sent(ms(45)) // #1 is 45 ms old, #2 34 ms
	require.NoError(t, err)
	l.Wrote(tk, ms(45))
	ev := l.Evidence()
	assert.Equal(t, 45*time.Millisecond, ev.MaxDelay, "L follows the longest overdue age")
	assert.Equal(t, 2, ev.Recent)
	assert.True(t, ev.Spread)
	l.Answered(tks[0], ms(60))
	ev = l.Evidence()
	assert.Equal(t, 2, ev.Recent, "its answer updates its note, not a second one")
	assert.Equal(t, 60*time.Millisecond, ev.MaxDelay)
}

func TestLimiter_LComingDownLeavesEarlierBoundsAlone(t *testing.T) {
	// L = 10 ms, τ = 10 ms, no order rule, a long window that keeps every send.
	// A send every 50 ms. #1 and #2 take 40 ms (outliers: a spread, L = 40 ms);
	// #3 takes 25 ms, no evidence, answered under L = 40: its bound is
	// min(100 + 40, 125) = 125. 64 quiet answers (5 ms) bring L back to 10 ms;
	// #3's bound stays 125, not 100 + 10 = 110, which its arrival may be past.
	l := mustNew(t, limiter.Config{
		Rules:    []limiter.Rule{{Limit: 1000, Window: 10 * time.Second}},
		MaxDelay: 10 * time.Millisecond, Margin: limiter.NoMargin, Registration: limiter.NoRegistration, Unordered: true,
	})
	for k := range 67 {
		rt := 5 * time.Millisecond
		switch {
		case k < 2:
			rt = 40 * time.Millisecond
		case k == 2:
			rt = 25 * time.Millisecond
		}
		at := ms(50 * k)
		require.Equal(t, at, l.Next(at))
		tk, err := l.Sent(at)
		require.NoError(t, err)
		l.Wrote(tk, at)
		l.Answered(tk, at.Add(rt))
		if k == 2 {
			require.Equal(t, 40*time.Millisecond, l.MaxDelay(), "the spread")
		}
	}
	require.Equal(t, 10*time.Millisecond, l.MaxDelay(), "a quiet horizon brings L back")
	st := l.State()
	assert.Contains(t, st.UpperBounds, ms(125), "#3 keeps the L it was answered under")
	assert.NotContains(t, st.UpperBounds, ms(110))
}
