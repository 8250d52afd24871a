package limiter_test

import (
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/bench/limitertest"
	"github.com/ratefleet/ratefleet/internal/limiter"
)

// TestLimiter_EveryRuleIsNeeded switches each rule of the package doc off in
// turn and runs the model that needs it: the full limiter draws no 429 (and no
// more 400s than the model forces) on it; the limiter without the rule draws a
// 429, or for the order rule 400s beyond what the model forces.
func TestLimiter_EveryRuleIsNeeded(t *testing.T) {
	models := map[string]wrongModel{}
	for _, m := range wrongModels() {
		models[m.name] = m
	}
	ms := time.Millisecond
	// Own models, where the table's are too kind for one rule.
	models["reference delays"] = wrongModel{name: "reference delays", requests: 20_000,
		delays: func(seed uint64) limitertest.Delays { return limitertest.Uniform(seed, L, ms) },
		max400: func(limitertest.Result, int) int { return 0 }}
	models["arrivals on the bound, in whole ms"] = wrongModel{name: "arrivals on the bound, in whole ms", requests: 20_000,
		cfg: limiter.Config{Margin: limiter.NoMargin, Registration: limiter.NoRegistration},
		delays: func(uint64) limitertest.Delays {
			return limitertest.Blocks(20, limitertest.Trip{In: L}, limitertest.Trip{Out: L})
		},
		max400: func(limitertest.Result, int) int { return 0 }}
	// Another client uses the key: 15 requests at once every 20 s, which no
	// evidence of the limiter's shows. Its first 429 must stop the key until the
	// upstream has forgotten them: no widening of L covers them.
	models["another client's bursts on the key"] = wrongModel{name: "another client's bursts on the key", requests: 10_000,
		cfg:    limiter.Config{BanThreshold: 1000, GuardThreshold: 999},
		delays: func(seed uint64) limitertest.Delays { return limitertest.Uniform(seed, L, ms) },
		adjust: func(_ uint64, r *limitertest.Run) {
			r.Start = simStart
			for k := 1; k <= 20; k++ {
				for range 15 {
					r.Outside = append(r.Outside, simStart.Add(time.Duration(k)*20*time.Second))
				}
			}
		},
		max400: func(limitertest.Result, int) int { return 20 }}
	// Another client uses 30 % of the key, evenly spaced, seen only in the
	// upstream's usage reports.
	models["an outside client at 30 % of the key, in usage reports"] = wrongModel{name: "an outside client at 30 % of the key, in usage reports",
		requests: 4_000, cfg: reportedConfig(),
		delays: func(seed uint64) limitertest.Delays { return limitertest.Uniform(seed, L, ms) },
		adjust: func(_ uint64, r *limitertest.Run) {
			r.Start, r.Usage = simStart, true
			r.Outside = outsideCalls(simStart.Add(-5*time.Second), 5*time.Second+time.Duration(r.Requests/8)*time.Second, 0.3, 1)
		},
		max400: func(limitertest.Result, int) int { return 0 }}
	// Another client uses 32.5 % of the key in pairs 1 ms apart: a window
	// holds 6 or 8 of its calls, by where it starts, and reports of windows
	// that end close together show either.
	pairs := models["an outside client at 30 % of the key, in usage reports"]
	pairs.name = "an outside client at 32.5 % of the key in pairs, in usage reports"
	pairs.adjust = func(_ uint64, r *limitertest.Run) {
		r.Start, r.Usage = simStart, true
		r.Outside = outsideCalls(simStart.Add(-5*time.Second), 5*time.Second+time.Duration(r.Requests/8)*time.Second, 0.325, 2)
	}
	models[pairs.name] = pairs
	// The same share in bursts of 3, a third of a window apart: a window holds 6
	// or 9 of its calls by where it starts, and the reports prove it varies. The
	// full limiter may draw one 429 here (what it assumes of the other client
	// does not hold, see usage.go); without keeping the largest estimate it
	// draws one on every seed.
	threes := pairs
	threes.name = "an outside client at 32.5 % of the key in bursts of 3, in usage reports"
	threes.adjust = func(_ uint64, r *limitertest.Run) {
		r.Start, r.Usage = simStart, true
		r.Outside = outsideCalls(simStart.Add(-5*time.Second), 5*time.Second+time.Duration(r.Requests/8)*time.Second, 0.325, 3)
	}
	models[threes.name] = threes
	// Without a nonce no 400 teaches the order rule (which is off), so only the
	// round trips show the delays.
	noNonce := func(m wrongModel) wrongModel {
		m.cfg.Unordered = true
		adjust := m.adjust
		m.adjust = func(seed uint64, r *limitertest.Run) {
			r.Unordered = true
			if adjust != nil {
				adjust(seed, r)
			}
		}
		m.max400 = func(limitertest.Result, int) int { return 0 }
		return m
	}
	// Without 400s, nothing raises L: only the loaded machine's mark shows that
	// arrivals may be late.
	loaded := noNonce(models["loaded machine: client on time, upstream registers arrivals 0..15 ms late"])
	loaded.name = "no nonce: loaded machine, client on time, upstream registers arrivals 0..15 ms late"
	models[loaded.name] = loaded
	// An idle machine whose upstream registers a window of arrivals 5 ms past
	// L (its own scheduling: a request read late, a timer firing late), each
	// answered at once, then a window of fast ones: every round trip within 2 L,
	// so nothing the limiter sees shows it. The registration allowance covers
	// it exactly.
	models["no nonce: idle machine, a window registered 5 ms past L, then a fast one"] = noNonce(wrongModel{requests: 20_000,
		delays: func(uint64) limitertest.Delays {
			return limitertest.Blocks(20, limitertest.Trip{In: L + limiter.DefaultRegistration}, limitertest.Trip{Out: L})
		},
		max400: func(limitertest.Result, int) int { return 0 }})
	// Bursts of 20 ready together, each after the window frees: a spike in one
	// burst is answered before the next burst leaves, and is the 20th previous
	// arrival of the next burst's last send.
	models["no nonce: bursts of 20, 1% of requests 300 ms later in"] = noNonce(wrongModel{requests: 20_000,
		delays: func(seed uint64) limitertest.Delays {
			return limitertest.WithSpikes(limitertest.Uniform(seed, L, ms), seed, 0.01, 300*ms)
		},
		adjust: func(_ uint64, r *limitertest.Run) {
			r.Start = simStart
			r.Ready = func(i int) time.Time { return simStart.Add(time.Duration(i/20) * 1100 * ms) }
		}})
	models["no nonce: spread 0..150 ms both ways"] = noNonce(wrongModel{requests: 20_000,
		delays: func(seed uint64) limitertest.Delays { return limitertest.Uniform(seed, 3*L, ms) }})
	// The slow mode never comes back: only requests still unanswered past 2L + τ
	// show it; every answer that does come back is within 2 L + τ, and says
	// nothing of the incoming delays beyond L. The slow requests arrive within
	// the arrival horizon (1 s here) after the client gave them up.
	models["no nonce: in 0..100 ms, 10% stuck 800 ms and given up at 500 ms"] = noNonce(wrongModel{requests: 20_000,
		cfg: limiter.Config{MaxArrival: time.Second},
		delays: func(seed uint64) limitertest.Delays {
			return limitertest.WithSpikes(limitertest.Asymmetric(seed, 2*L, 10*ms, ms), seed, 0.1, 800*ms)
		},
		adjust: func(_ uint64, r *limitertest.Run) { r.GiveUp = 500 * ms }})
	// The rule kinds, without a nonce: a fixed window bursts at each interval's
	// start, a bucket sends at its rate.
	kind := func(rules []limiter.Rule, offset, upstream time.Duration, adjust func(*limitertest.Run)) wrongModel {
		return noNonce(wrongModel{requests: 4_000,
			cfg:    limiter.Config{Rules: rules, ClockOffset: offset},
			delays: func(seed uint64) limitertest.Delays { return limitertest.Uniform(seed, L, ms) },
			adjust: func(_ uint64, r *limitertest.Run) {
				r.Rules, r.Offset = rules, upstream
				if adjust != nil {
					adjust(r)
				}
			}})
	}
	fixed := []limiter.Rule{{Kind: limiter.Fixed, Limit: 20, Window: time.Second}}
	models["fixed, no nonce: the upstream's intervals start 25 ms after this clock's"] = kind(fixed, 30*ms, 25*ms, nil)
	// 20 requests ready in the second half of each second, the last just before
	// the next interval: their arrivals spill into it.
	models["fixed, no nonce: demand late in each interval"] = kind(fixed, 20*ms, 0, func(r *limitertest.Run) {
		r.Start = simStart
		r.Ready = func(i int) time.Time {
			return simStart.Add(time.Duration(i/20)*time.Second + 500*ms + time.Duration(i%20)*25*ms)
		}
	})
	bucket := []limiter.Rule{{Kind: limiter.Bucket, Limit: 10, Rate: 5}}
	models["bucket, no nonce: 10 slow arrivals, then 10 fast ones"] = kind(bucket, 0, 0, func(r *limitertest.Run) {
		r.Delays = limitertest.Blocks(10, limitertest.Trip{In: L}, limitertest.Trip{Out: L})
	})

	tests := []struct {
		rule, model string
		want        string // "429" or "400"
		max429      int    // 429s the full limiter may draw on the model (a model built to draw them)
	}{
		{rule: "every kept send counts", model: "slow tail: 1% of requests 2.5 s later in, answered", want: "429"},
		{rule: "in-flight hold", model: "slow tail: 1% of requests 2.5 s later in, answered", want: "429"},
		{rule: "lost hold", model: "slow tail past the timeout: 0.5% of requests 12 s later in, given up at 2 s", want: "429"},
		{rule: "bounds keep their L", model: "a long window while L comes down: 100 per 10 s", want: "429"},
		{rule: "order rule", model: "reference delays", want: "400"},
		{rule: "busy machine", model: "busy machine: client late by 0..8 ms, upstream registers arrivals 0..20 ms late", want: "429"},
		{rule: "loaded machine", model: "no nonce: loaded machine, client on time, upstream registers arrivals 0..15 ms late", want: "429"},
		{rule: "outlier bound", model: "no nonce: bursts of 20, 1% of requests 300 ms later in", want: "429"},
		{rule: "spread raises L", model: "no nonce: spread 0..150 ms both ways", want: "429"},
		// The answers alone show nothing here: before two slow requests are
		// overdue together, the full limiter may draw a 429 too.
		{rule: "overdue is evidence", model: "no nonce: in 0..100 ms, 10% stuck 800 ms and given up at 500 ms", want: "429", max429: 2},
		{rule: "window + 1 ms", model: "arrivals on the bound, in whole ms", want: "429"},
		{rule: "weight in the window", model: "weights 1 to 5", want: "429"},
		{rule: "pause after a 429", model: "another client's bursts on the key", want: "429", max429: 40},
		{rule: "fixed: the clock offset", model: "fixed, no nonce: the upstream's intervals start 25 ms after this clock's", want: "429"},
		{rule: "fixed: every interval the arrival may fall in", model: "fixed, no nonce: demand late in each interval", want: "429"},
		{rule: "bucket: units drain from their bounds", model: "bucket, no nonce: 10 slow arrivals, then 10 fast ones", want: "429"},
		{rule: "usage reservation", model: "an outside client at 30 % of the key, in usage reports", want: "429"},
		{rule: "usage: what the reports prove", model: "an outside client at 32.5 % of the key in pairs, in usage reports", want: "429"},
		{rule: "registration allowance", model: "no nonce: idle machine, a window registered 5 ms past L, then a fast one", want: "429"},
		{rule: "usage: the largest estimate", model: "an outside client at 32.5 % of the key in bursts of 3, in usage reports", want: "429", max429: 1},
	}
	var covered []string
	for _, tt := range tests {
		covered = append(covered, tt.rule)
		t.Run(tt.rule, func(t *testing.T) {
			t.Parallel()
			m, ok := models[tt.model]
			require.True(t, ok, "no model %q", tt.model)
			var fullBad, offBad int
			for seed := range uint64(3) {
				// Full counts, also under -short: a model needs its length to
				// draw what it is built to draw.
				n := m.requests
				if raceEnabled {
					n /= 2
				}
				full, spikes := m.runN(mustNew(t, m.cfg), seed, n)
				require.NoError(t, full.Err)
				require.LessOrEqual(t, full.RateLimited, tt.max429, "the full limiter, seed %d", seed)
				require.LessOrEqual(t, full.BadNonce, m.max400(full, spikes), "the full limiter, seed %d", seed)

				l, err := limiter.NewAblated(m.cfg, tt.rule)
				require.NoError(t, err)
				off, spikes := m.runN(l, seed, n)
				require.NoError(t, off.Err)
				fullBad += full.RateLimited
				switch tt.want {
				case "429":
					offBad += off.RateLimited
				case "400":
					offBad += max(off.BadNonce-m.max400(off, spikes), 0)
				}
				t.Logf("%s, seed %d: full %d × 429, %d × 400, %.2f/s; without the rule %d × 429, %d × 400, %.2f/s", tt.rule,
					seed, full.RateLimited, full.BadNonce, full.Rate(), off.RateLimited, off.BadNonce, off.Rate())
			}
			if tt.want == "429" {
				assert.Greater(t, offBad, fullBad, "without %q the model must draw more 429s", tt.rule)
			} else {
				assert.Positive(t, offBad, "without %q the model must draw 400s it does not force", tt.rule)
			}
		})
	}
	slices.Sort(covered)
	rules := limiter.AblationRules()
	slices.Sort(rules)
	assert.Equal(t, rules, covered, "every rule has a row")
}
