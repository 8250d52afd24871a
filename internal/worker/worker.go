// Package worker is the worker process: it claims API keys through leases, pulls
// requests from the shared durable consumers its keys may serve and sends each through its key's
// limiter to the upstream, then acknowledges, retries or buries it.
//
// Where each part lives:
//
//   - worker.go: configuration, and Run, which starts the background duties in
//     order and stops them in the reverse order.
//   - claimer.go: holds the worker lease (one renewal per worker, whatever its
//     number of keys), claims an even share of the keys under it and runs a
//     session for each.
//   - table.go: watches the lease bucket, so the claimer learns of releases, lapses
//     and new workers at once without polling keys.
//   - fetcher.go: the consumers of the requests stream (one per priority and
//     route) and, per session, the order it pulls from those its key may serve:
//     urgent first, a batch request at least once every wire.BatchEvery.
//   - reporter.go: publishes the worker's stats every StatsInterval, and a last
//     report at the end.
//   - keeper.go: runs the graveyard keeper (requests the server gave up on, and
//     expired ones while no key is held anywhere).
//   - clock.go: warns when the worker's clock and the server's disagree.
//   - session.go: one held key: claim, lease renewal, pulling, handoff, release.
//   - handle.go: the life of one request, top to bottom: decode, time to live,
//     the gate, the send, the answer, ack / NAK / bury.
//   - cancel.go: the route and cancel checks of a request before it is sent.
//   - outcome.go: the one table of what each answer class means for the limiter,
//     the stats, the key and the message.
//   - gate.go: one key's sends in order: the limiter's wait, the nonce, the lease
//     check, then the send.
//   - nonces.go: a key's nonce sequence, reserved in key state ahead of time.
//   - pacer.go: the limiter of a newly claimed key, from what the fleet knows.
//   - usage.go: passes what an answer's usage headers report to the limiter.
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ratefleet/ratefleet/internal/keys"
	"github.com/ratefleet/ratefleet/internal/keystate"
	"github.com/ratefleet/ratefleet/internal/lease"
	"github.com/ratefleet/ratefleet/internal/limiter"
	"github.com/ratefleet/ratefleet/internal/profile"
	"github.com/ratefleet/ratefleet/internal/settle"
	"github.com/ratefleet/ratefleet/internal/stats"
	"github.com/ratefleet/ratefleet/internal/streams"
	"github.com/ratefleet/ratefleet/internal/upstream"
)

// Config configures a worker.
type Config struct {
	// ID names the worker in leases, stats and logs; unique in the fleet.
	ID string
	// Keys the worker may claim.
	Keys []keys.Key
	// MaxKeys is how many leases the worker holds at once; 1 when 0.
	MaxKeys int
	// Upstream sends the requests.
	Upstream *upstream.Client
	// Streams is the applied streams.yaml.
	Streams *streams.Config
	// NewPacer makes each key's limiter.
	NewPacer PacerFactory
	// MaxInFlight bounds the requests one key holds at once, waiting or sending;
	// 16 when 0.
	MaxInFlight int
	// NonceBlock is how many nonces a holder reserves at a time; 1000 when 0.
	NonceBlock int64
	// StatsInterval is how often stats are published; 1 s when 0.
	StatsInterval time.Duration
	// ClaimRetry is how often a standby worker retries claiming; 1 s when 0.
	ClaimRetry time.Duration
	// GatewayHold is how long after a gateway's answer (a proxy's 502, 503 or 504,
	// or any answer not in the upstream's format) the request may still reach the
	// upstream; the key's next send waits for it. DefaultGatewayHold when 0.
	GatewayHold time.Duration
	// Retry overrides the upstream profile's retry policy (profile.Retry) when
	// set.
	Retry *profile.Retry
	// Keeper also runs the graveyard keeper, which buries requests the server
	// gave up on without a worker seeing it; safe in every worker.
	Keeper bool
	// NoKeyStall is how long no key may be held anywhere in the fleet before the
	// keeper buries expired requests as key_unusable: longer than a failover.
	// 15 s when 0.
	NoKeyStall time.Duration
	// Checkpoint is how often a holder writes its limiter's state to key state,
	// so that should it crash the next holder resumes from it rather than
	// waiting out the longest window; it sends nothing more than twice that
	// after its latest checkpoint. DefaultCheckpoint when 0; negative for none.
	Checkpoint time.Duration
	// ClockSkew is how far the worker's clock may be from the NATS server's
	// before it warns; DefaultClockSkew when 0.
	ClockSkew time.Duration
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// Logger; slog.Default() when nil.
	Logger *slog.Logger
}

// DefaultCheckpoint is Config.Checkpoint's default: a key state write every 10 s
// per key held.
const DefaultCheckpoint = 10 * time.Second

// DefaultGatewayHold is Config.GatewayHold's default: how long after its answer
// a gateway (a proxy's 502, 503 or 504) may still pass a request on. It holds
// that request's place in the key's windows, not the key.
const DefaultGatewayHold = 2 * time.Second

// DefaultRequestTimeout is how long one attempt may take by default before it
// counts as a timeout: long enough that a slow tail of several seconds is
// answered (its answer then bounds it) rather than given up (it then keeps its
// place for the arrival horizon, and is sent again).
const DefaultRequestTimeout = 10 * time.Second

// ErrTimeouts is wrapped by the error CheckTimeouts returns.
var ErrTimeouts = errors.New("request timeout and limiter delays do not fit together")

// CheckTimeouts checks that an attempt's timeout fits the limiter's delays: a
// timeout no longer than a round trip at the assumed delay (2 L plus the
// tolerance) gives every ordinary request up, and one past the arrival horizon
// waits for answers to requests the limiter already takes as gone. Each is
// refused with the flag that fixes it.
func CheckTimeouts(timeout time.Duration, cfg limiter.Config) error {
	l, err := limiter.New(cfg)
	if err != nil {
		return err
	}
	ev := l.Evidence()
	rt := 2*ev.MaxDelay + ev.Tolerance
	switch {
	case timeout <= rt:
		return fmt.Errorf("%w: --request-timeout %v is no longer than a round trip at the assumed delay (2 × %v + %v): every request would time out; raise it above %v",
			ErrTimeouts, timeout, ev.MaxDelay, ev.Tolerance, rt)
	case timeout > ev.MaxArrival:
		return fmt.Errorf("%w: --request-timeout %v is longer than --max-arrival %v, the longest a request may take to arrive: lower the timeout or raise --max-arrival to at least it",
			ErrTimeouts, timeout, ev.MaxArrival)
	}
	return nil
}

// Worker is one worker process's state.
type Worker struct {
	cfg     Config
	js      jetstream.JetStream
	log     *slog.Logger
	rec     *stats.Recorder
	cons    *consumers
	cancels jetstream.KeyValue
	marks   *marks
	settler *settle.Settler
	state   *keystate.Store
	leases  jetstream.KeyValue
	keeper  *settle.Keeper // nil unless Config.Keeper
	live    liveSessions
}

// liveSessions are the sessions whose limiters a report reads.
type liveSessions struct {
	mu sync.Mutex
	m  map[*session]struct{}
}

func (l *liveSessions) add(s *session) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil {
		l.m = map[*session]struct{}{}
	}
	l.m[s] = struct{}{}
}

func (l *liveSessions) remove(s *session) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.m, s)
}

func (l *liveSessions) list() []*session {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]*session, 0, len(l.m))
	for s := range l.m {
		out = append(out, s)
	}
	return out
}

// New checks the configuration and opens what the worker needs in NATS.
func New(ctx context.Context, js jetstream.JetStream, cfg Config) (*Worker, error) {
	if cfg.ID == "" || len(cfg.Keys) == 0 || cfg.Upstream == nil || cfg.Streams == nil || cfg.NewPacer == nil {
		return nil, errors.New("worker: ID, Keys, Upstream, Streams and NewPacer are required")
	}
	cfg.MaxKeys = max(cfg.MaxKeys, 1)
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 16
	}
	if cfg.NonceBlock <= 0 {
		cfg.NonceBlock = 1000
	}
	if cfg.StatsInterval <= 0 {
		cfg.StatsInterval = time.Second
	}
	if cfg.ClaimRetry <= 0 {
		cfg.ClaimRetry = time.Second
	}
	if cfg.GatewayHold <= 0 {
		cfg.GatewayHold = DefaultGatewayHold
	}
	if cfg.ClockSkew <= 0 {
		cfg.ClockSkew = DefaultClockSkew
	}
	if cfg.Checkpoint == 0 {
		cfg.Checkpoint = DefaultCheckpoint
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	sc := cfg.Streams
	cons, err := newConsumers(ctx, js, sc, cfg.Keys)
	if err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	cancels, err := js.KeyValue(ctx, sc.KV.Cancels.Bucket)
	if err != nil {
		return nil, fmt.Errorf("worker: open cancel bucket: %w", err)
	}
	state, err := keystate.Open(ctx, js, sc.KV.KeyState.Bucket)
	if err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	leases, err := js.KeyValue(ctx, sc.KV.Leases.Bucket)
	if err != nil {
		return nil, fmt.Errorf("worker: open lease bucket: %w", err)
	}
	var keeper *settle.Keeper
	if cfg.Keeper {
		if keeper, err = settle.NewKeeper(ctx, js, sc, cfg.Logger); err != nil {
			return nil, fmt.Errorf("worker: %w", err)
		}
		if cfg.NoKeyStall > 0 {
			keeper.Stall = cfg.NoKeyStall
		}
	}
	host, _ := os.Hostname()
	w := &Worker{
		cfg: cfg, js: js, log: cfg.Logger.With("worker", cfg.ID),
		rec:  stats.NewRecorder(cfg.ID, host, os.Getpid(), cfg.Now()),
		cons: cons, cancels: cancels, marks: newMarks(cancels, sc.KV.Cancels.MaxAge, time.Now), state: state, leases: leases, keeper: keeper,
	}
	retry := cfg.Upstream.Profile().Retry
	if cfg.Retry != nil {
		retry = *cfg.Retry
	}
	if w.settler, err = settle.New(ctx, js, settle.Config{
		Streams: sc, Worker: cfg.ID, Retry: retry, Count: w.rec.Count, Now: cfg.Now, Log: w.log,
	}); err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	return w, nil
}

// Report returns the worker's stats as of now, with each held key's limiter
// read at that moment. A limiter is read for reports, and as its session ends,
// not for every request.
func (w *Worker) Report(now time.Time) (stats.Report, error) {
	for _, s := range w.live.list() {
		s.gate.state(s.recordLimiter)
	}
	return w.rec.Report(now)
}

// loop runs one duty's goroutine: run starts fn, whose context ends at stop;
// stop returns once fn has returned.
type loop struct {
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
}

func newLoop() loop {
	ctx, cancel := context.WithCancel(context.Background())
	return loop{ctx: ctx, cancel: cancel, done: make(chan struct{})}
}

func (l *loop) run(wg *sync.WaitGroup, fn func(ctx context.Context)) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(l.done)
		fn(l.ctx)
	}()
}

func (l *loop) stop() {
	l.cancel()
	<-l.done
}

// duty is one of the worker's background loops. start runs it until shutdown,
// which returns once it has stopped.
type duty interface {
	start(wg *sync.WaitGroup)
	shutdown()
}

// Run serves keys until ctx ends, then drains: in-flight requests finish, waiting
// ones go back to the queue, each key's state is written and its lease released
// so a standby takes over at once, and the last stats report is published.
//
// It starts the duties in order (stats first, so every later step is counted;
// claiming last, once all it relies on runs) and stops them in the reverse order.
func (w *Worker) Run(ctx context.Context) error {
	table := lease.NewTable()
	duties := []duty{newReporter(w), newClockWatch(w), &marksWatcher{marks: w.marks, log: w.log, loop: newLoop()}}
	if w.keeper != nil {
		w.keeper.Serving = func() bool { return serving(table) }
		duties = append(duties, newKeeperDuty(w.keeper, w.log))
	}
	duties = append(duties, newTableWatcher(table, w.leases, w.log), newClaimer(w, table))

	var wg sync.WaitGroup
	for _, d := range duties {
		d.start(&wg)
	}
	<-ctx.Done()
	w.log.Info("worker stopping: handing keys over")
	for i := len(duties) - 1; i >= 0; i-- {
		duties[i].shutdown()
	}
	wg.Wait()
	w.cons.close()
	return nil
}
