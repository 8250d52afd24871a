package monitor

import "time"

// Throughput windows.
const (
	shortWindow = 5 * time.Second
	longWindow  = time.Minute
)

// point is the successful total at one instant.
type point struct {
	at time.Time
	ok uint64
}

// throughputSeries keeps the successful totals of the last minute (and the newest
// point older than that, the minute window's base) and the first point, and turns
// them into rates. Rates come from totals, so a missed snapshot widens a window's
// ends instead of skewing an average.
type throughputSeries struct {
	first  *point
	points []point
}

// add records the total at at; points must come in time order.
func (s *throughputSeries) add(at time.Time, ok uint64) {
	p := point{at: at, ok: ok}
	if s.first == nil {
		s.first = &p
	}
	if n := len(s.points); n > 0 && !at.After(s.points[n-1].at) {
		s.points[n-1] = point{at: s.points[n-1].at, ok: ok}
		return
	}
	s.points = append(s.points, p)
	// Drop the points the minute window no longer needs: keep one at or before
	// its start.
	cut := 0
	for i := 1; i < len(s.points) && !s.points[i].at.After(at.Add(-longWindow)); i++ {
		cut = i
	}
	s.points = s.points[cut:]
}

// throughput returns the rates as of the newest point.
func (s *throughputSeries) throughput() Throughput {
	if len(s.points) == 0 {
		return Throughput{}
	}
	last := s.points[len(s.points)-1]
	return Throughput{
		Last5s:     rate(s.base(last.at.Add(-shortWindow)), last),
		LastMinute: rate(s.base(last.at.Add(-longWindow)), last),
		SinceStart: rate(*s.first, last),
	}
}

// base returns the newest point at or before start, or the oldest point when the
// series does not reach back that far.
func (s *throughputSeries) base(start time.Time) point {
	b := s.points[0]
	for _, p := range s.points {
		if p.at.After(start) {
			break
		}
		b = p
	}
	return b
}

func rate(from, to point) float64 {
	dt := to.at.Sub(from.at).Seconds()
	if dt <= 0 || to.ok < from.ok {
		return 0
	}
	return float64(to.ok-from.ok) / dt
}

// queueAverager keeps time-weighted averages of the queue sizes: the area under
// the piecewise-linear curve through the samples, divided by the time they span.
// With a single sample the average is that sample.
type queueAverager struct {
	n          int
	first      time.Time
	lastAt     time.Time
	last, area [4]float64
}

// add records the sizes at at and returns the averages since the first sample.
func (a *queueAverager) add(at time.Time, q Queue) QueueAverage {
	v := [4]float64{float64(q.Waiting), float64(q.AwaitingAck), float64(q.Redelivery), float64(q.Graveyard)}
	switch {
	case a.n == 0:
		a.first = at
	case at.After(a.lastAt):
		dt := at.Sub(a.lastAt).Seconds()
		for i := range v {
			a.area[i] += (a.last[i] + v[i]) / 2 * dt
		}
	}
	if a.n == 0 || at.After(a.lastAt) {
		a.lastAt = at
	}
	a.n++
	a.last = v
	return a.averages()
}

// averages returns the averages so far.
func (a *queueAverager) averages() QueueAverage {
	avg := a.last
	if span := a.lastAt.Sub(a.first).Seconds(); span > 0 {
		for i := range avg {
			avg[i] = a.area[i] / span
		}
	}
	return QueueAverage{Waiting: avg[0], AwaitingAck: avg[1], Redelivery: avg[2], Graveyard: avg[3]}
}
