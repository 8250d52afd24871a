package limiter_test

import (
	"cmp"
	"container/heap"
	"errors"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratefleet/ratefleet/internal/limiter"
)

func TestSet_EachDimensionCountsOnlyItsCosts(t *testing.T) {
	s, err := limiter.NewSet(limiter.SetConfig{
		Config: limiter.Config{MaxDelay: time.Millisecond, Margin: limiter.NoMargin, Registration: limiter.NoRegistration, Unordered: true},
		Dims: []limiter.Dimension{
			{Name: "weight", Rules: []limiter.Rule{{Limit: 10, Window: time.Second}}},
			{Name: "orders", Rules: []limiter.Rule{{Limit: 2, Window: time.Second}}},
		},
	})
	require.NoError(t, err)
	order := limiter.Cost{"weight": 1, "orders": 1}
	query := limiter.Cost{"weight": 1}
	now := t0
	for range 2 {
		tk, err := s.SentC(now, order)
		require.NoError(t, err)
		s.Wrote(tk, now)
		s.Answered(tk, now)
	}
	require.True(t, s.NextC(now, order).After(now), "a third order waits for the orders rule")
	require.Equal(t, now, s.NextC(now, query), "a call placing no order does not")
	for range 8 {
		tk, err := s.SentC(now, query)
		require.NoError(t, err)
		s.Answered(tk, now)
	}
	require.True(t, s.NextC(now, query).After(now), "the weight rule is full")

	require.ErrorIs(t, s.Check(limiter.Cost{"orders": 1}), limiter.ErrCost, "nothing in the first dimension")
	require.ErrorIs(t, s.Check(limiter.Cost{"weight": 1, "orders": 3}), limiter.ErrCost, "more orders than a window holds")
	require.NoError(t, s.Check(order))
}

func TestSet_UnitsScaleLargeLimits(t *testing.T) {
	s, err := limiter.NewSet(limiter.SetConfig{
		Config: limiter.Config{MaxDelay: time.Millisecond, Margin: limiter.NoMargin, Registration: limiter.NoRegistration, Unordered: true},
		Dims: []limiter.Dimension{
			{Name: "requests", Rules: []limiter.Rule{{Limit: 100, Window: time.Minute}}},
			{Name: "tokens", Unit: 40, Rules: []limiter.Rule{{Limit: 400_000, Window: time.Hour}}},
		},
	})
	require.NoError(t, err)
	// 400,000 tokens is 10,000 units of 40, less one for the running total the
	// charges follow: 3,960 calls of 101 tokens (399,960) fill it, within the
	// upstream's 400,000, where rounding each call up to 3 units would fill it
	// at 3,333.
	now := t0
	sent := 0
	for s.NextC(now, limiter.Cost{"requests": 1, "tokens": 101}).Equal(now) && sent < 10_000 {
		tk, err := s.SentC(now, limiter.Cost{"requests": 1, "tokens": 101})
		require.NoError(t, err)
		s.Answered(tk, now)
		sent++
		if sent%100 == 0 {
			now = now.Add(time.Minute + 2*time.Millisecond) // the requests rule's window passes, not the tokens' hour
		}
	}
	require.Equal(t, 3960, sent, "the running total is charged, never less")
}

// llmWorld is an upstream charging output tokens once it has answered, as LLM
// APIs do: requests in a sliding window, output tokens by a rule (a bucket or a
// sliding window) that admits a call while it has room for one token and is
// charged the call's output when the call completes, seconds after it arrived.
// With batch, calls complete together at the next multiple of batch after
// their work is done, as a batching inference server's do.
type llmWorld struct {
	rnd      *rand.Rand
	maxDelay time.Duration // each way
	maxWork  time.Duration // arrival to completion
	batch    time.Duration
	tail     time.Duration // reading an answer may take up to this much more (a long body)
	maxOut   int64
	full     bool // every answer uses all of maxOut
	// upfront: the upstream charges maxOut on arrival, admitting a call only
	// if that fits, and refunds what the answer did not use once it completes,
	// as Anthropic's output-token limit does.
	upfront bool

	reqLimit  int
	reqWindow time.Duration
	accepted  []time.Time
	out       limiter.Rule
	level     float64     // a bucket's counter
	levelAt   time.Time   // as of then
	charged   []time.Time // a sliding window's charges, one per token
	chargedN  []int64

	rejected, served int
	tokens           int64
}

func (w *llmWorld) drain(at time.Time) {
	if !w.levelAt.IsZero() {
		w.level = math.Max(0, w.level-w.out.Rate*at.Sub(w.levelAt).Seconds())
	}
	w.levelAt = at
}

// used returns the output tokens counted at at.
func (w *llmWorld) used(at time.Time) float64 {
	if w.out.Kind == limiter.Bucket {
		w.drain(at)
		return w.level
	}
	var n int64
	for i, c := range w.charged {
		if at.Sub(c) <= w.out.Window {
			n += w.chargedN[i]
		}
	}
	return float64(n)
}

// arrive reports whether the upstream admits a call arriving at at.
func (w *llmWorld) arrive(at time.Time) bool {
	at = at.Truncate(time.Millisecond)
	if n := len(w.accepted); n >= w.reqLimit && at.Sub(w.accepted[n-w.reqLimit]) <= w.reqWindow {
		return false
	}
	need := 1.0
	if w.upfront {
		need = float64(w.maxOut)
	}
	if w.used(at)+need > float64(w.out.Limit) {
		return false
	}
	w.accepted = append(w.accepted, at)
	if w.upfront {
		w.charge(at, w.maxOut)
	}
	return true
}

func (w *llmWorld) charge(at time.Time, n int64) {
	if w.out.Kind == limiter.Bucket {
		w.drain(at)
		w.level = math.Max(0, w.level+float64(n))
		return
	}
	w.charged, w.chargedN = append(w.charged, at), append(w.chargedN, n)
}

func (w *llmWorld) complete(at time.Time, out int64) {
	at = at.Truncate(time.Millisecond)
	if w.upfront {
		out -= w.maxOut // the refund, from now: a window that has aged the estimate out counts less, which is only kinder
	}
	w.charge(at, out)
	w.tokens += out
	if w.upfront {
		w.tokens += w.maxOut
	}
}

// done returns when a call arriving at at completes.
func (w *llmWorld) done(at time.Time) time.Time {
	t := at.Add(time.Duration(w.rnd.Int64N(int64(w.maxWork))))
	if w.batch > 0 {
		t = t.Truncate(w.batch).Add(w.batch)
	}
	return t
}

type event struct {
	at   time.Time
	kind int // arrive, complete, answer
	tk   limiter.Ticket
	out  int64
	ok   bool
}

type events []event

func (e events) Len() int           { return len(e) }
func (e events) Less(i, j int) bool { return e[i].at.Before(e[j].at) }
func (e events) Swap(i, j int)      { e[i], e[j] = e[j], e[i] }
func (e *events) Push(x any)        { *e = append(*e, x.(event)) }
func (e *events) Pop() any {
	old := *e
	x := old[len(old)-1]
	*e = old[:len(old)-1]
	return x
}

const (
	evArrive = iota
	evComplete
	evAnswer
)

// run sends n calls as fast as s allows through w, reporting each answer, and
// returns how long it took.
func (w *llmWorld) run(t *testing.T, s *limiter.Set, n int) time.Duration {
	t.Helper()
	var q events
	now := t0
	cost := limiter.Cost{"requests": 1, "output_tokens": w.maxOut}
	sent := 0
	for sent < n || q.Len() > 0 {
		next := s.NextC(now, cost)
		if q.Len() > 0 && (sent >= n || !q[0].at.After(next)) {
			e := heap.Pop(&q).(event)
			now = e.at
			switch e.kind {
			case evArrive:
				if !w.arrive(e.at) {
					w.rejected++
					heap.Push(&q, event{at: e.at.Add(w.delay()), kind: evAnswer, tk: e.tk})
					continue
				}
				out := 1 + w.rnd.Int64N(w.maxOut)
				if w.full {
					out = w.maxOut
				}
				heap.Push(&q, event{at: w.done(e.at), kind: evComplete, tk: e.tk, out: out})
			case evComplete:
				w.complete(e.at, e.out)
				read := e.at.Add(w.delay())
				if w.tail > 0 {
					read = read.Add(time.Duration(w.rnd.Int64N(int64(w.tail))))
				}
				heap.Push(&q, event{at: read, kind: evAnswer, tk: e.tk, out: e.out, ok: true})
			case evAnswer:
				if !e.ok {
					s.Rejected(e.tk, e.at, 0)
					continue
				}
				w.served++
				s.Used(e.tk, limiter.Cost{"output_tokens": e.out})
				s.Answered(e.tk, e.at)
			}
			continue
		}
		now = later(now, next)
		tk, err := s.SentC(now, cost)
		switch {
		case errors.Is(err, limiter.ErrQuarantined):
			sent = n // the guard stopped the key: the run is over
			continue
		case errors.Is(err, limiter.ErrTooEarly):
			continue // not a time the set allows, but one to look again at
		}
		require.NoError(t, err)
		s.Wrote(tk, now)
		heap.Push(&q, event{at: now.Add(w.delay()), kind: evArrive, tk: tk})
		sent++
	}
	return now.Sub(t0)
}

func (w *llmWorld) delay() time.Duration { return time.Duration(w.rnd.Int64N(int64(w.maxDelay) + 1)) }

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func TestSet_ACostKnownOnlyOnceAnsweredNeverDrawsA429(t *testing.T) {
	bucket := limiter.Rule{Kind: limiter.Bucket, Limit: 3000, Rate: 1000}
	window := limiter.Rule{Limit: 3000, Window: time.Second}
	window2 := limiter.Rule{Limit: 3000, Window: 2 * time.Second}
	tests := []struct {
		name    string
		out     limiter.Rule
		maxWork time.Duration
		batch   time.Duration
		tail    time.Duration
		maxOut  int64 // 512 when 0
		full    bool
		upfront bool
		ablate  string
		want429 bool
	}{
		{name: "bucket, answers within 100ms", out: bucket, maxWork: 100 * time.Millisecond},
		{name: "bucket, answers within 5s", out: bucket, maxWork: 5 * time.Second},
		{name: "bucket, answers in batches", out: bucket, maxWork: 3 * time.Second, batch: time.Second},
		{name: "window, answers within 5s", out: window, maxWork: 5 * time.Second},
		{name: "window, answers in batches", out: window, maxWork: 3 * time.Second, batch: time.Second},
		{name: "bucket, long answers in batches", out: bucket, maxWork: 3 * time.Second, batch: time.Second, tail: time.Second},
		{name: "window, short work", out: window, maxWork: 100 * time.Millisecond},
		{name: "window, small answers", out: window, maxWork: 500 * time.Millisecond, maxOut: 64},
		{name: "bucket, full answers", out: bucket, maxWork: 3 * time.Second, batch: time.Second, tail: time.Second, full: true},
		{name: "window, full answers", out: window2, maxWork: 3 * time.Second, batch: time.Second, tail: time.Second, full: true},
		{name: "bucket, charged up front", out: bucket, maxWork: 3 * time.Second, upfront: true},
		{name: "window, charged up front", out: window, maxWork: 3 * time.Second, upfront: true},
		{name: "without reservations", out: bucket, maxWork: 3 * time.Second, upfront: true, ablate: "reservations", want429: true},
		{name: "window of 2s, answers in batches", out: window2, maxWork: 3 * time.Second, batch: time.Second},
		{name: "charged at the send", out: window2, maxWork: 3 * time.Second, batch: time.Second, tail: time.Second, full: true, ablate: "charged at the answer", want429: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const l = 50 * time.Millisecond
			w := &llmWorld{rnd: rand.New(rand.NewPCG(7, 11)), maxDelay: l, maxWork: tt.maxWork, batch: tt.batch, tail: tt.tail, maxOut: cmp.Or(tt.maxOut, 512), full: tt.full, upfront: tt.upfront,
				reqLimit: 1000, reqWindow: time.Second, out: tt.out}
			s, err := limiter.NewSetAblated(limiter.SetConfig{
				Config: limiter.Config{MaxDelay: l, Unordered: true, BanThreshold: math.MaxInt32, GuardThreshold: math.MaxInt32 - 1},
				Dims: []limiter.Dimension{
					{Name: "requests", Rules: []limiter.Rule{{Limit: 1000, Window: time.Second}}},
					{Name: "output_tokens", Answered: true, Rules: []limiter.Rule{tt.out}},
				},
			}, tt.ablate)
			require.NoError(t, err)
			took := w.run(t, s, 800)
			t.Logf("%d served, %d tokens in %v, %d rejected", w.served, w.tokens, took, w.rejected)
			if tt.want429 {
				require.Positive(t, w.rejected, "switching the rule off draws 429s")
				return
			}
			require.Zero(t, w.rejected)
			if tt.maxWork < time.Second {
				// Answers come fast: the bucket's capacity, then its rate, is
				// what the run can use, and the limiter uses nearly all of it.
				bound := 3000 + 1000*took.Seconds()
				require.Greater(t, float64(w.tokens)/bound, 0.9)
			}
		})
	}
}

func TestSet_HandoffCarriesEveryDimension(t *testing.T) {
	cfg := limiter.SetConfig{
		Config: limiter.Config{MaxDelay: time.Millisecond, Margin: limiter.NoMargin, Registration: limiter.NoRegistration, Unordered: true},
		Dims: []limiter.Dimension{
			{Name: "weight", Rules: []limiter.Rule{{Limit: 100, Window: time.Second}}},
			{Name: "orders", Rules: []limiter.Rule{{Kind: limiter.Fixed, Limit: 3, Window: time.Hour}}},
		},
	}
	cfg.ClockOffset = limiter.NoClockOffset
	s, err := limiter.NewSet(cfg)
	require.NoError(t, err)
	now := t0.Add(time.Minute)
	order := limiter.Cost{"weight": 1, "orders": 1}
	for range 3 {
		tk, err := s.SentC(now, order)
		require.NoError(t, err)
		s.Answered(tk, now)
	}
	st := s.State()
	require.Contains(t, st.Dims, "orders")

	next, err := limiter.RestoreSet(cfg, st)
	require.NoError(t, err)
	later := now.Add(10 * time.Second)
	require.Equal(t, later, next.NextC(later, limiter.Cost{"weight": 1}), "the weight window has passed")
	require.Equal(t, t0.Add(time.Hour), next.NextC(later, order), "the hour's orders are spent until the next hour")

	// A state of one dimension only (an older holder's, or a crash's) takes
	// the others as full from its latest bound.
	st.Dims = nil
	next, err = limiter.RestoreSet(cfg, st)
	require.NoError(t, err)
	require.True(t, next.NextC(later, order).After(later))
}
