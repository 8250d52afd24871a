package monitor

import (
	"context"
	"sync"
	"time"
)

// DefaultSampleEvery is how often a Sampler takes a snapshot: the throughput
// windows need a point a second.
const DefaultSampleEvery = time.Second

// historyLen bounds the history the page's charts start from: five minutes at one
// sample a second.
const historyLen = 300

// Sampler takes a snapshot of the collector at its own tick and keeps what needs
// a series of them: the throughput over the last 5 s, the last minute and since
// the first sample, the queue averages, and the page's history. Its figures
// depend on its tick only, never on how often anyone reads them. It is safe for
// concurrent use.
type Sampler struct {
	c     *Collector
	every time.Duration

	mu      sync.Mutex
	series  []point // successful totals over the last minute
	first   *point  // the first sample, for the since-start rate
	queues  queueSums
	latest  *Snapshot
	history []Point // the last historyLen samples, oldest first
}

type point struct {
	at time.Time
	ok uint64
}

type queueSums struct {
	n                    int
	waiting, dlq, graves float64
}

// Point is the part of a sample the page charts.
type Point struct {
	At         time.Time         `json:"at"`
	Rate5s     float64           `json:"rate_5s_per_second"`
	P50        int64             `json:"latency_p50_ms"`
	P99        int64             `json:"latency_p99_ms"`
	Waiting    uint64            `json:"waiting"`
	Redelivery int               `json:"retry"`
	Graveyard  uint64            `json:"graveyard"`
	KeyOK      map[string]uint64 `json:"key_ok"`
}

// NewSampler returns a sampler of c taking a sample every every
// (DefaultSampleEvery when 0).
func NewSampler(c *Collector, every time.Duration) *Sampler {
	if every <= 0 {
		every = DefaultSampleEvery
	}
	return &Sampler{c: c, every: every}
}

// Run takes a sample at every tick until ctx ends, and gives each to onSample
// (when not nil).
func (s *Sampler) Run(ctx context.Context, onSample func(Snapshot)) {
	t := time.NewTicker(s.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			snap := s.Sample(ctx)
			if onSample != nil {
				onSample(snap)
			}
		}
	}
}

// Sample takes a snapshot now, adds it to the series and returns it with the
// rates and averages filled in. Run calls it at every tick; call it directly
// only where the tick is yours (a test, a final sample).
func (s *Sampler) Sample(ctx context.Context) Snapshot {
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	snap := s.c.Snapshot(sctx)
	now := snap.At

	s.mu.Lock()
	defer s.mu.Unlock()
	s.series = append(s.series, point{at: now, ok: snap.Successful})
	for len(s.series) > 2 && now.Sub(s.series[1].at) > time.Minute {
		s.series = s.series[1:]
	}
	snap.Rate5s, snap.Rate1m = s.rate(now, 5*time.Second), s.rate(now, time.Minute)
	if s.first == nil {
		s.first = &point{at: now, ok: snap.Successful}
	}
	if dt := now.Sub(s.first.at).Seconds(); dt > 0 {
		snap.RateAll = float64(snap.Successful-s.first.ok) / dt
	}
	q := &s.queues
	q.n++
	q.waiting += float64(snap.Queue.Waiting)
	q.dlq += float64(snap.Queue.Redelivery)
	q.graves += float64(snap.Queue.Graveyard)
	snap.Queue.AvgWaiting, snap.Queue.AvgRedelivery, snap.Queue.AvgGraveyard = q.waiting/float64(q.n), q.dlq/float64(q.n), q.graves/float64(q.n)

	p := Point{At: snap.At, Rate5s: snap.Rate5s, P50: snap.LatencyP50, P99: snap.LatencyP99, Waiting: snap.Queue.Waiting,
		Redelivery: snap.Queue.Redelivery, Graveyard: snap.Queue.Graveyard, KeyOK: map[string]uint64{}}
	for _, k := range snap.Keys {
		p.KeyOK[k.Name] = k.OK
	}
	s.history = append(s.history, p)
	if len(s.history) > historyLen {
		s.history = s.history[len(s.history)-historyLen:]
	}
	s.latest = &snap
	return snap
}

// Latest returns the last sample, and false before the first.
func (s *Sampler) Latest() (Snapshot, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.latest == nil {
		return Snapshot{}, false
	}
	return *s.latest, true
}

// History returns the page's history: the last five minutes of samples, oldest
// first.
func (s *Sampler) History() []Point {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Point(nil), s.history...)
}

// rate returns the successful requests a second over the last window, from the
// series of totals: the difference between the newest point and the newest point
// at least window old (or the oldest).
func (s *Sampler) rate(now time.Time, window time.Duration) float64 {
	if len(s.series) < 2 {
		return 0
	}
	last := s.series[len(s.series)-1]
	base := s.series[0]
	for _, p := range s.series {
		if now.Sub(p.at) >= window {
			base = p
		}
	}
	dt := last.at.Sub(base.at).Seconds()
	if dt <= 0 {
		return 0
	}
	return float64(last.ok-base.ok) / dt
}
