package producer

import (
	"context"
	"sync"
	"time"
)

// backoff is the pause every publish honours after the stream refused a request
// (full) or did not answer (timeout, no responders, disconnected). It is shared by
// all requests in flight, so the producer as a whole slows down instead of each
// request hammering a full stream on its own schedule.
//
// The pause doubles from min up to max with each failure of an attempt that honoured
// the pause in force (sent once it had ended); failures of attempts that were
// already on their way when it was raised do not raise it again, so a few hundred
// requests refused at once count as one refusal. A success of an attempt that
// honoured the pause ends it. Times are passed in; only wait uses a timer.
type backoff struct {
	min, max time.Duration

	mu    sync.Mutex
	delay time.Duration // 0 while publishes succeed
	until time.Time     // no attempt starts before this
}

func newBackoff(min, max time.Duration) *backoff {
	return &backoff{min: min, max: max}
}

// pauseChange says what a failure did to the pause.
type pauseChange int

const (
	pauseKept    pauseChange = iota // an attempt from before the pause: no change
	pauseRaised                     // the pause doubled (or stayed at the cap)
	pauseStarted                    // publishes were going through until now
)

// failed records that an attempt sent at sent failed at now with a retryable
// error. It returns the pause in force and what this failure did to it.
func (b *backoff) failed(sent, now time.Time) (time.Duration, pauseChange) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.delay > 0 && sent.Before(b.until) {
		return b.delay, pauseKept
	}
	change := pauseRaised
	if b.delay == 0 {
		change = pauseStarted
	}
	b.delay = min(max(2*b.delay, b.min), b.max)
	b.until = now.Add(b.delay)
	return b.delay, change
}

// succeeded records that an attempt sent at sent was acknowledged, and reports
// whether that ended a pause.
func (b *backoff) succeeded(sent time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.delay > 0 && !sent.Before(b.until) {
		b.delay = 0
		return true
	}
	return false
}

// pausedFor returns how long an attempt at now must still wait.
func (b *backoff) pausedFor(now time.Time) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	return max(b.until.Sub(now), 0)
}

// wait blocks until no pause is in force at the time now returns, or ctx ends.
// With no pause in force it returns nil at once, whatever ctx.
func (b *backoff) wait(ctx context.Context, now func() time.Time) error {
	for {
		d := b.pausedFor(now())
		if d <= 0 {
			return nil
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}
