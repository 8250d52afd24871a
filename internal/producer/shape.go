package producer

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"time"
)

// Shape says when each generated request is due. Shapes are pure: they read no
// clock and never sleep; the producer passes the current time in and waits. A shape
// is used by one goroutine at a time.
type Shape interface {
	// Next returns when the next request is due, given the time now, and false
	// once the shape has no more requests. The first request of every shape is due
	// at the now of the first call.
	Next(now time.Time) (time.Time, bool)
}

// SeedMaxGap is the longest pause of the seed workload between two requests.
const SeedMaxGap = 21 * time.Millisecond

// Seed is the seed client's workload: make one request, pause a whole number of
// milliseconds drawn uniformly from 0 to 21, repeat; about 95 requests a second.
//
// The pause counts from when the previous request was due, so the time a timer
// oversleeps does not add up and the rate stays at 95 a second. A producer held
// back for longer than a pause (by a full stream) starts counting again from when
// it goes on: like the seed's loop, it never bursts to catch up.
type Seed struct {
	rng     *rand.Rand
	prev    time.Time
	started bool
}

// NewSeed returns the seed workload drawing its pauses from rng.
func NewSeed(rng *rand.Rand) *Seed { return &Seed{rng: rng} }

// Next returns now for the first request; then the previous due time plus the
// next pause, counted from now instead if now is more than SeedMaxGap late.
func (s *Seed) Next(now time.Time) (time.Time, bool) {
	switch {
	case !s.started:
		s.started, s.prev = true, now
		return now, true
	case now.Sub(s.prev) > SeedMaxGap:
		s.prev = now // held back: no catching up
	}
	s.prev = s.prev.Add(s.Gap())
	return s.prev, true
}

// Gap draws one pause: a whole number of milliseconds from 0 to SeedMaxGap.
func (s *Seed) Gap() time.Duration {
	return time.Duration(s.rng.IntN(int(SeedMaxGap/time.Millisecond)+1)) * time.Millisecond
}

// Rate is a fixed rate: request k (from 0) is due at start + k/rate, where start is
// the time of the first call. The schedule is absolute, so rounding never
// accumulates and a producer held back catches up at once (an open loop: the
// requests it owes are created at the times they were due).
type Rate struct {
	perSecond float64
	start     time.Time
	n         int64
}

// NewRate returns a shape of perSecond requests a second.
func NewRate(perSecond float64) (*Rate, error) {
	if err := checkRate(perSecond); err != nil {
		return nil, err
	}
	return &Rate{perSecond: perSecond}, nil
}

// Next returns the due time of the next request on the fixed schedule.
func (r *Rate) Next(now time.Time) (time.Time, bool) {
	if r.n == 0 {
		r.start = now
	}
	due := r.start.Add(time.Duration(float64(r.n) * float64(time.Second) / r.perSecond))
	r.n++
	return due, true
}

// Poisson is a Poisson process: the gaps between due times are drawn from an
// exponential distribution of mean 1/rate. Like Rate it is an open loop: each due
// time follows the previous due time, not the time the previous request went out.
type Poisson struct {
	perSecond float64
	rng       *rand.Rand
	prev      time.Time
	started   bool
}

// NewPoisson returns a Poisson process of perSecond requests a second on average,
// drawing from rng.
func NewPoisson(perSecond float64, rng *rand.Rand) (*Poisson, error) {
	if err := checkRate(perSecond); err != nil {
		return nil, err
	}
	return &Poisson{perSecond: perSecond, rng: rng}, nil
}

// Next returns now for the first request, then the previous due time plus an
// exponential gap.
func (p *Poisson) Next(now time.Time) (time.Time, bool) {
	if !p.started {
		p.started, p.prev = true, now
		return now, true
	}
	p.prev = p.prev.Add(p.Gap())
	return p.prev, true
}

// Gap draws one exponential gap of mean 1/rate.
func (p *Poisson) Gap() time.Duration {
	return time.Duration(p.rng.ExpFloat64() * float64(time.Second) / p.perSecond)
}

// Burst makes size requests due at once; with a positive every it repeats the burst
// every that long (burst k at start + k*every), otherwise it ends after one burst.
type Burst struct {
	size  int
	every time.Duration
	start time.Time
	n     int64
}

// NewBurst returns bursts of size requests, repeated every every (0: one burst).
func NewBurst(size int, every time.Duration) (*Burst, error) {
	if size < 1 {
		return nil, fmt.Errorf("burst size %d: must be at least 1", size)
	}
	if every < 0 {
		return nil, fmt.Errorf("burst interval %s: must not be negative", every)
	}
	return &Burst{size: size, every: every}, nil
}

// Next returns the start of the burst the next request belongs to.
func (b *Burst) Next(now time.Time) (time.Time, bool) {
	if b.n == 0 {
		b.start = now
	}
	burst := b.n / int64(b.size)
	if burst > 0 && b.every == 0 {
		return time.Time{}, false
	}
	b.n++
	return b.start.Add(time.Duration(burst) * b.every), true
}

// MinRate is the lowest rate Rate and Poisson accept: one request every 1000 s.
const MinRate = 0.001

var errBadRate = errors.New("rate must be a number of requests a second, at least 0.001")

func checkRate(perSecond float64) error {
	if !(perSecond >= MinRate) || math.IsInf(perSecond, 0) {
		return fmt.Errorf("rate %v: %w", perSecond, errBadRate)
	}
	return nil
}
