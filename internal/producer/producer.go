// Package producer publishes requests to the requests stream, shaped like a chosen
// workload, without losing or doubling any.
//
// Every request is published with its id as the Nats-Msg-Id, so the stream stores a
// retried publish once and answers the retry as a duplicate. A publish the stream
// refuses because it is full, or does not answer (timeout, no responders, a
// disconnect), is retried with the same id after a pause shared by the whole
// producer, which doubles up to a cap while refusals go on. A request is never
// dropped silently: it ends stored (published, or duplicate when an earlier
// attempt had made it), or given up on and logged with its id: failed when it is
// not in the stream, unconfirmed when its last attempt got no answer and it may be.
//
// Publishing is asynchronous with a bounded number of requests out at once: the
// source is not read while MaxPending requests await their ack or their retry, so a
// slow stream slows the producer instead of growing a queue in memory.
//
// What to publish and when comes from a Source: a Generator timed by a Shape (the
// seed workload, a fixed rate, a Poisson process, bursts), or Lines read from a
// JSON-lines input. Shapes take the time as a parameter and never sleep; Run does
// the waiting.
package producer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ratefleet/ratefleet/wire"
)

// ErrNotStored is wrapped by the error Run returns when some requests ended failed
// or unconfirmed; the log names each one.
var ErrNotStored = errors.New("requests not stored")

// Config tunes a Producer. Start from DefaultConfig: a zero MaxPending, AckTimeout,
// MinBackoff, MaxBackoff or Grace takes the default, but a zero MaxRetries means no
// retries.
type Config struct {
	// MaxPending bounds the requests out at once: taken from the source and not
	// yet stored or given up on, whether awaiting an ack or a retry. It is also
	// the cap on the JetStream context's pending asynchronous publishes.
	MaxPending int
	// MaxRetries bounds the attempts after the first for one request; negative
	// retries until the run is interrupted.
	MaxRetries int
	// AckTimeout is how long an attempt waits for the stream's ack before it is
	// retried (the retry carries the same id, so it cannot be stored twice).
	AckTimeout time.Duration
	// MinBackoff and MaxBackoff bound the pause after a refusal or a missing
	// answer; the pause doubles from MinBackoff up to MaxBackoff.
	MinBackoff, MaxBackoff time.Duration
	// Grace bounds the wait for outstanding acks once the run is interrupted.
	Grace time.Duration
	// Count ends the run after this many requests; 0 for no limit.
	Count int64
	// Duration ends the run once the next request would be due this long after
	// the start; 0 for no limit. Requests out at that time still settle.
	Duration time.Duration
	// SkipBadLines passes over an input line that is not a valid request (it is
	// logged with its line number and counted) instead of ending the run.
	SkipBadLines bool
	// Progress is the interval between progress logs; 0 for none.
	Progress time.Duration
	// DuplicateWindow is the requests stream's duplicate_window: a retry with
	// the same id is stored once only within it. Once an attempt's fate is
	// unknown (its answer was lost), the request is retried only until this long
	// after that attempt, less a margin, and then given up as unconfirmed: a later
	// retry could store it a second time. DefaultDuplicateWindow when 0.
	DuplicateWindow time.Duration
	// IDs, when not nil, receives the id of every request the stream
	// acknowledged, stored or duplicate, one a line.
	IDs io.Writer
	// Now returns the current time; time.Now when nil.
	Now func() time.Time
	// Owner is the NATS user the requests are published as (wire.Owner): they
	// go to its requests subject, with its message ids. Anonymous by default.
	Owner wire.Owner
}

// DefaultConfig returns the defaults: 256 requests out at once, 1000 retries each,
// a 5 s ack timeout, pauses from 50 ms to 2 s, a 5 s shutdown grace, progress every
// 5 s, no bounds.
func DefaultConfig() Config {
	return Config{
		MaxPending: 256,
		MaxRetries: 1000,
		AckTimeout: 5 * time.Second,
		MinBackoff: 50 * time.Millisecond,
		MaxBackoff: 2 * time.Second,
		Grace:      5 * time.Second,
		Progress:   5 * time.Second,
	}
}

// DefaultDuplicateWindow is the duplicate window of the shipped streams.yaml.
const DefaultDuplicateWindow = 2 * time.Minute

// dedupeMargin is how long before the end of the duplicate window retries stop
// (a quarter of the window, at most 10 s): an attempt sent just in time must also
// be stored in time.
func dedupeMargin(window time.Duration) time.Duration { return min(10*time.Second, window/4) }

func (c Config) withDefaults() Config {
	def := DefaultConfig()
	if c.DuplicateWindow == 0 {
		c.DuplicateWindow = DefaultDuplicateWindow
	}
	if c.MaxPending == 0 {
		c.MaxPending = def.MaxPending
	}
	if c.AckTimeout == 0 {
		c.AckTimeout = def.AckTimeout
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = min(def.MinBackoff, max(c.MaxBackoff, time.Millisecond))
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = max(def.MaxBackoff, c.MinBackoff)
	}
	if c.Grace == 0 {
		c.Grace = def.Grace
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.MaxPending < 1:
		return fmt.Errorf("max pending %d: must be at least 1", c.MaxPending)
	case c.AckTimeout < 0, c.MinBackoff < 0, c.Grace < 0, c.Duration < 0, c.Progress < 0:
		return errors.New("ack timeout, backoff, grace, duration and progress must not be negative")
	case c.MinBackoff > c.MaxBackoff:
		return fmt.Errorf("min backoff %s is above max backoff %s", c.MinBackoff, c.MaxBackoff)
	case c.Count < 0:
		return fmt.Errorf("count %d: must not be negative (0 for no limit)", c.Count)
	}
	return nil
}

// Producer publishes the requests of a Source to the requests stream. Run it once
// at a time.
type Producer struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	subject string
	cfg     Config
	log     *slog.Logger

	current atomic.Pointer[run]
}

// New returns a producer publishing over nc on cfg.Owner's requests subject
// under subject (the requests stream's bare subject). It keeps its own JetStream
// context, whose pending acks are capped at MaxPending and time out after
// AckTimeout. A nil log discards the logs.
func New(nc *nats.Conn, subject string, cfg Config, log *slog.Logger) (*Producer, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("producer: %w", err)
	}
	if subject == "" {
		return nil, errors.New("producer: no subject to publish on")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(cfg.MaxPending),
		jetstream.WithPublishAsyncTimeout(cfg.AckTimeout))
	if err != nil {
		return nil, fmt.Errorf("producer: open JetStream: %w", err)
	}
	return &Producer{nc: nc, js: js, subject: subject, cfg: cfg, log: log}, nil
}

// Snapshot returns the counts of the run in progress, or of the last run once it
// has returned; zero before the first.
func (p *Producer) Snapshot() Summary {
	r := p.current.Load()
	if r == nil {
		return Summary{}
	}
	return r.snapshot()
}

// Run publishes the requests of src until src is done, a bound of the Config is
// reached or ctx ends, then waits for every request out to settle. Once ctx ends
// no request is made or retried: requests waiting for a retry are given up on,
// and those awaiting an ack get the grace period. It returns the summary in every case. The error is nil when every
// request was stored and the run ended by its bounds, by src or by ctx; it wraps
// ErrNotStored when some were not, and *BadLineError when a bad line stopped the run.
func (p *Producer) Run(ctx context.Context, src Source) (Summary, error) {
	r := p.newRun(ctx)
	p.current.Store(r)
	defer r.stopGen(nil)
	defer r.cancelSettle()

	done := make(chan struct{})
	var bg sync.WaitGroup
	bg.Go(func() { r.graceAfterStop(done) })
	if p.cfg.Progress > 0 {
		bg.Go(func() { r.reportProgress(done) })
	}
	genErr := r.generate(src)
	r.requests.Wait()
	close(done)
	bg.Wait()

	s := r.finish()
	errs := []error{genErr, r.fatalErr()}
	if n := s.Failed + s.Unconfirmed; n > 0 {
		errs = append(errs, fmt.Errorf("%w: %d of %d (%d failed, %d unconfirmed); the log names each",
			ErrNotStored, n, s.Requests, s.Failed, s.Unconfirmed))
	}
	errs = append(errs, r.ids.flush())
	return s, errors.Join(errs...)
}

// run is the state of one Run.
type run struct {
	p     *Producer
	start time.Time
	pause *backoff
	ids   *idWriter
	// slots holds a token for every request out; its capacity is MaxPending.
	slots    chan struct{}
	requests sync.WaitGroup

	// gen ends when the caller's context does or a fatal error stops the run: no
	// request is made or retried after it.
	gen     context.Context
	stopGen context.CancelCauseFunc
	// settle ends Grace after gen: no ack is awaited after it.
	settle       context.Context
	cancelSettle context.CancelFunc

	fatalMu sync.Mutex
	fatal   error

	tally tally
	final atomic.Pointer[Summary]
}

func (p *Producer) newRun(ctx context.Context) *run {
	r := &run{
		p:     p,
		start: p.cfg.Now(),
		pause: newBackoff(p.cfg.MinBackoff, p.cfg.MaxBackoff),
		ids:   newIDWriter(p.cfg.IDs),
		slots: make(chan struct{}, p.cfg.MaxPending),
	}
	r.gen, r.stopGen = context.WithCancelCause(ctx)
	r.settle, r.cancelSettle = context.WithCancel(context.WithoutCancel(ctx))
	return r
}

// generate takes requests from src and starts delivering each when it is due,
// until src is done, a bound is reached or gen ends. It returns the error that
// stopped it early, if any.
func (r *run) generate(src Source) error {
	cfg := r.p.cfg
	// The duration bound is checked against due times, by the configured clock,
	// so a run's length is exact in tests; a generator held back by a full stream
	// notices it once a slot frees.
	var end time.Time
	if cfg.Duration > 0 {
		end = r.start.Add(cfg.Duration)
	}
	for n := int64(0); cfg.Count == 0 || n < cfg.Count; {
		// A slot first: a request is made only once it can go out.
		select {
		case r.slots <- struct{}{}:
		case <-r.gen.Done():
			return nil
		}
		item, err := src.Next(cfg.Now())
		if err != nil {
			<-r.slots
			var bad *BadLineError
			switch {
			case errors.Is(err, io.EOF):
				return nil
			case errors.As(err, &bad) && cfg.SkipBadLines:
				r.tally.skipped.Add(1)
				r.p.log.Warn("skipping a bad input line", "input", bad.Input, "line", bad.Line, "err", bad.Err)
				continue
			case r.gen.Err() != nil:
				return nil // the input was closed to end the run
			default:
				return fmt.Errorf("read requests: %w", err)
			}
		}
		if !end.IsZero() && !item.Due.Before(end) {
			<-r.slots
			return nil
		}
		if !sleepUntil(r.gen, item.Due, cfg.Now) {
			<-r.slots
			return nil
		}
		n++
		r.tally.requests.Add(1)
		pr := r.prepare(item.Request)
		r.requests.Go(func() {
			defer func() { <-r.slots }()
			r.deliver(item.Request, pr)
		})
	}
	return nil
}

// coalesce is how early a request may go out: requests due within it of each
// other leave together, one wake-up and one write for several at high rates.
// At 2,200 requests a second, 10 ms instead of 1 took about a third off the
// producer's CPU a request (docs/benchmarks.md); a request is never more than
// that early, and --duration still counts by due times.
const coalesce = 10 * time.Millisecond

// sleepUntil waits until t by the clock now, less coalesce, and reports false if
// ctx ended first.
func sleepUntil(ctx context.Context, t time.Time, now func() time.Time) bool {
	d := t.Sub(now())
	if d <= coalesce {
		return ctx.Err() == nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}

// graceAfterStop ends settle Grace after gen ends, unless the run is done first.
func (r *run) graceAfterStop(done <-chan struct{}) {
	select {
	case <-r.gen.Done():
	case <-done:
		return
	}
	if out := r.snapshot().InFlight(); out > 0 {
		r.p.log.Info("stopping: waiting for outstanding acks", "in_flight", out, "grace", r.p.cfg.Grace)
	}
	t := time.NewTimer(r.p.cfg.Grace)
	defer t.Stop()
	select {
	case <-t.C:
		r.cancelSettle()
	case <-done:
	}
}

// reportProgress logs the counts every Progress until done.
func (r *run) reportProgress(done <-chan struct{}) {
	t := time.NewTicker(r.p.cfg.Progress)
	defer t.Stop()
	var last Summary
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		s := r.snapshot()
		rate := 0.0
		if d := (s.Elapsed - last.Elapsed).Seconds(); d > 0 {
			rate = float64(s.Published-last.Published) / d
		}
		r.p.log.Info("progress", "requests", s.Requests, "published", s.Published, "duplicates", s.Duplicates,
			"retries", s.Retries, "failed", s.Failed, "skipped", s.Skipped, "in_flight", s.InFlight(),
			"rate", fmt.Sprintf("%.1f/s", rate), "elapsed", s.Elapsed.Round(time.Second))
		last = s
	}
}

// abort stops the run for an error that every later publish would meet too.
func (r *run) abort(err error) {
	r.fatalMu.Lock()
	defer r.fatalMu.Unlock()
	if r.fatal == nil {
		r.fatal = fmt.Errorf("publishing stopped: %w", err)
		r.stopGen(r.fatal)
	}
}

func (r *run) fatalErr() error {
	r.fatalMu.Lock()
	defer r.fatalMu.Unlock()
	return r.fatal
}

func (r *run) snapshot() Summary {
	if s := r.final.Load(); s != nil {
		return *s
	}
	return r.tally.summary(r.p.cfg.Now().Sub(r.start))
}

func (r *run) finish() Summary {
	s := r.tally.summary(r.p.cfg.Now().Sub(r.start))
	r.final.Store(&s)
	return s
}
