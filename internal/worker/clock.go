package worker

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// DefaultClockSkew is Config.ClockSkew's default.
const DefaultClockSkew = 500 * time.Millisecond

// clockCheckEvery is how often a worker compares its clock with the server's.
const clockCheckEvery = time.Minute

// clockWatch warns when the worker's clock and the NATS server's disagree by more
// than the bound: a request's time to live is judged on the worker's clock against
// the server's stored time, so a worker ahead buries requests early and one behind
// sends them late.
type clockWatch struct {
	// Set once.
	js     jetstream.JetStream
	stream string
	bound  time.Duration
	now    func() time.Time
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
}

func newClockWatch(w *Worker) *clockWatch {
	ctx, cancel := context.WithCancel(context.Background())
	return &clockWatch{
		js: w.js, stream: w.cfg.Streams.Requests.Stream.Name, bound: w.cfg.ClockSkew, now: w.cfg.Now, log: w.log,
		ctx: ctx, cancel: cancel, done: make(chan struct{}),
	}
}

func (c *clockWatch) start(wg *sync.WaitGroup) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(c.done)
		t := time.NewTicker(clockCheckEvery)
		defer t.Stop()
		for {
			c.check(c.ctx)
			select {
			case <-c.ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
}

func (c *clockWatch) shutdown() {
	c.cancel()
	<-c.done
}

// check compares the clocks once and logs a warning beyond the bound.
func (c *clockWatch) check(ctx context.Context) {
	off, err := ClockOffset(ctx, c.js, c.stream, c.now)
	if err != nil {
		if ctx.Err() == nil {
			c.log.Debug("could not compare the clock with the server's", "err", err)
		}
		return
	}
	if off.Beyond(c.bound) {
		c.log.Warn("this worker's clock and the NATS server's disagree: requests may be buried early (clock ahead) or sent late (behind); synchronise the clocks (NTP)",
			"offset", off.Offset, "uncertainty", off.Uncertainty, "bound", c.bound)
	}
}

// Offset is how far a clock is ahead of the server's (negative: behind), within
// plus or minus Uncertainty.
type Offset struct {
	Offset, Uncertainty time.Duration
}

// Beyond reports whether the clocks surely disagree by more than bound.
func (o Offset) Beyond(bound time.Duration) bool {
	return o.Offset-o.Uncertainty > bound || o.Offset+o.Uncertainty < -bound
}

// ClockOffset measures the clock now against the server's, from the time stamp the
// server puts in a stream's information: the server read its clock between the
// request and the answer, so the offset is known within half the round trip.
func ClockOffset(ctx context.Context, js jetstream.JetStream, stream string, now func() time.Time) (Offset, error) {
	sent := now()
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return Offset{}, fmt.Errorf("read stream %s for the server's time: %w", stream, err)
	}
	got := now()
	server := st.CachedInfo().TimeStamp
	if server.IsZero() {
		return Offset{}, fmt.Errorf("stream %s: the server sent no time stamp (nats-server 2.10 or later does)", stream)
	}
	half := got.Sub(sent) / 2
	return Offset{Offset: sent.Add(half).Sub(server), Uncertainty: half}, nil
}
