// Package worker is the worker process: it claims API keys through leases, pulls
// requests from the shared durable consumer and sends each through its key's
// limiter to the upstream, then acknowledges, retries or buries it.
//
// A worker holds up to MaxKeys leases, each served by a session with its own
// limiter (session.go). The life of one request is in handle.go. Spare workers
// stand by and claim a key as soon as its lease is released or lapses.
package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ratefleet/ratefleet/internal/graveyard"
	"github.com/ratefleet/ratefleet/internal/keys"
	"github.com/ratefleet/ratefleet/internal/keystate"
	"github.com/ratefleet/ratefleet/internal/lease"
	"github.com/ratefleet/ratefleet/internal/limiter/baseline"
	"github.com/ratefleet/ratefleet/internal/stats"
	"github.com/ratefleet/ratefleet/internal/streams"
	"github.com/ratefleet/ratefleet/internal/upstream"
)

// Pacer decides when a key's next request may leave and learns from what happened:
// limiter.Limiter in production, a baseline in benchmarks. The method set is
// declared once, with the baselines that share it.
type Pacer = baseline.Pacer

// PacerFactory makes the pacer of a newly claimed key. handoff is the state the
// previous holder left at a clean release, or nil after a crash, in which case the
// pacer must assume the window is full as of claimed.
type PacerFactory func(key keys.Key, handoff json.RawMessage, claimed time.Time) (Pacer, error)

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
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// Logger; slog.Default() when nil.
	Logger *slog.Logger
}

// Worker is one worker process's state.
type Worker struct {
	cfg      Config
	js       jetstream.JetStream
	log      *slog.Logger
	rec      *stats.Recorder
	cons     jetstream.Consumer
	grave    *graveyard.Graveyard
	attempts *graveyard.Attempts
	state    *keystate.Store
	leases   jetstream.KeyValue
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
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	sc := cfg.Streams
	cons, err := js.Consumer(ctx, sc.Requests.Stream.Name, sc.Requests.Consumer.Durable)
	if err != nil {
		return nil, fmt.Errorf("worker: open consumer %s: %w", sc.Requests.Consumer.Durable, err)
	}
	grave, err := graveyard.New(js, sc.Graveyard.Stream.Name, sc.Graveyard.Stream.Subjects[0])
	if err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	attempts, err := graveyard.OpenAttempts(ctx, js, sc.KV.Attempts.Bucket)
	if err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	state, err := keystate.Open(ctx, js, sc.KV.KeyState.Bucket)
	if err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	leases, err := js.KeyValue(ctx, sc.KV.Leases.Bucket)
	if err != nil {
		return nil, fmt.Errorf("worker: open lease bucket: %w", err)
	}
	host, _ := os.Hostname()
	return &Worker{
		cfg: cfg, js: js, log: cfg.Logger.With("worker", cfg.ID),
		rec:  stats.NewRecorder(cfg.ID, host, os.Getpid(), cfg.Now()),
		cons: cons, grave: grave, attempts: attempts, state: state, leases: leases,
	}, nil
}

// Stats returns the worker's stats recorder.
func (w *Worker) Stats() *stats.Recorder { return w.rec }

// Run claims keys and serves them until ctx ends, then drains: in-flight requests
// finish, waiting ones go back to the queue, each key's state is written and its
// lease released so a standby takes over at once.
func (w *Worker) Run(ctx context.Context) error {
	var bg sync.WaitGroup
	statsCtx, stopStats := context.WithCancel(context.WithoutCancel(ctx))
	bg.Add(1)
	go func() { defer bg.Done(); w.publishStats(statsCtx) }()
	defer func() {
		stopStats()
		bg.Wait()
		w.publishFinalStats()
	}()

	wake := w.watchReleases(ctx)
	held := map[string]bool{}
	ended := make(chan string)
	var sessions sync.WaitGroup
	defer sessions.Wait()
	standbyLogged := false
	for {
		for _, k := range w.claimOrder() {
			if len(held) >= w.cfg.MaxKeys || ctx.Err() != nil {
				break
			}
			if held[k.Name()] {
				continue
			}
			s, err := w.claim(ctx, k)
			if err != nil {
				if !errors.Is(err, lease.ErrHeld) && !errors.Is(err, errUnusable) && ctx.Err() == nil {
					w.log.Warn("could not claim key", "key", k, "err", err)
				}
				continue
			}
			held[k.Name()] = true
			standbyLogged = false
			sessions.Add(1)
			go func() {
				defer sessions.Done()
				s.run(ctx)
				select {
				case ended <- k.Name():
				case <-ctx.Done():
				}
			}()
		}
		if len(held) == 0 && !standbyLogged {
			w.log.Info("standing by: every usable key is held by another worker")
			standbyLogged = true
		}
		timer := time.NewTimer(w.cfg.ClaimRetry)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case name := <-ended:
			delete(held, name)
		case <-wake:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// claimOrder returns the keys starting at a position derived from the worker's id,
// so workers spread over keys without a coordinator.
func (w *Worker) claimOrder() []keys.Key {
	h := fnv.New32a()
	_, _ = h.Write([]byte(w.cfg.ID))
	n := len(w.cfg.Keys)
	start := int(h.Sum32() % uint32(n))
	out := make([]keys.Key, 0, n)
	for i := range n {
		out = append(out, w.cfg.Keys[(start+i)%n])
	}
	return out
}

// watchReleases signals when a lease entry is deleted or expires, so a standby
// claims at once instead of at its next retry.
func (w *Worker) watchReleases(ctx context.Context) <-chan struct{} {
	wake := make(chan struct{}, 1)
	watcher, err := w.leases.WatchAll(ctx, jetstream.UpdatesOnly())
	if err != nil {
		w.log.Warn("cannot watch leases; standby will poll", "err", err)
		return wake
	}
	go func() {
		defer func() { _ = watcher.Stop() }()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-watcher.Updates():
				if !ok {
					return
				}
				if e != nil && e.Operation() != jetstream.KeyValuePut {
					select {
					case wake <- struct{}{}:
					default:
					}
				}
			}
		}
	}()
	return wake
}
