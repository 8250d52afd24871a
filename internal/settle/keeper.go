package settle

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ratefleet/ratefleet/internal/graveyard"
	"github.com/ratefleet/ratefleet/internal/streams"
	"github.com/ratefleet/ratefleet/wire"
)

// KeeperDurable names the consumer of max-deliveries advisories shared by every
// keeper, so each advisory is handled once.
const KeeperDurable = "graveyard-keeper"

// ErrUnresolved is wrapped by Reconcile's error when some requests given up on
// could not be buried; the rest were, and the next pass tries those again.
var ErrUnresolved = errors.New("requests given up on could not be buried")

// Keeper buries the requests no worker will end: those that reached max
// deliveries without any worker seeing their last failure (a worker died during
// the last attempt, or its ack wait ran out), and, when no key has been held for
// Stall, those whose time to live ran out in the queue (Sweep).
//
// For the first it acts on the server's max-deliveries advisories, kept in the
// advisories stream, and, since advisories are fire-and-forget, also reconciles:
// under work-queue retention, a request still in the stream below the consumer's
// ack floor was given up on by the server, once it has stayed there for Settle.
// (On a replicated stream the ack floor moves before the stream removes an
// acknowledged message: one sighting proves nothing.)
type Keeper struct {
	// Set once.
	js       jetstream.JetStream
	cfg      *streams.Config
	grave    *graveyard.Graveyard
	attempts *graveyard.Attempts
	results  *Results
	log      *slog.Logger

	// Every is how often Run reconciles; 30 s by default.
	Every time.Duration
	// Settle is how long a request must stay below the ack floor before
	// Reconcile buries it; 10 s by default.
	Settle time.Duration
	// Serving reports whether some key is held and can send; nil means always.
	// Run sweeps expired requests only after it has reported false for Stall.
	Serving func() bool
	// Stall is how long no key may be held before expired requests are buried
	// as key_unusable: longer than a failover (lease TTL and a claim); 15 s by
	// default.
	Stall time.Duration
	// Now is the clock; time.Now by default.
	Now func() time.Time

	mu     sync.Mutex
	seen   map[sighting]time.Time // below the ack floor, first seen at
	cursor uint64                 // where the next sweep starts
}

// sighting names one message of one incarnation of the requests stream.
type sighting struct {
	seq    uint64
	stored int64
}

// NewKeeper returns a keeper for the declarations in cfg.
func NewKeeper(ctx context.Context, js jetstream.JetStream, cfg *streams.Config, log *slog.Logger) (*Keeper, error) {
	g, err := graveyard.New(js, cfg.Graveyard.Stream.Name, cfg.Graveyard.Stream.Subjects[0])
	if err != nil {
		return nil, err
	}
	a, err := graveyard.OpenAttempts(ctx, js, cfg.KV.Attempts.Bucket)
	if err != nil {
		return nil, err
	}
	return &Keeper{
		js: js, cfg: cfg, grave: g, attempts: a, results: NewResults(js, cfg), log: log,
		Every: 30 * time.Second, Settle: 10 * time.Second, Stall: 15 * time.Second, Now: time.Now,
		seen: map[sighting]time.Time{},
	}, nil
}

// advisory is the part of a max-deliveries advisory the keeper reads.
type advisory struct {
	Stream     string `json:"stream"`
	Consumer   string `json:"consumer"`
	StreamSeq  uint64 `json:"stream_seq"`
	Deliveries uint64 `json:"deliveries"`
}

// Run handles advisories, reconciles every Every and, while no key is held,
// sweeps expired requests every second, until ctx ends.
func (k *Keeper) Run(ctx context.Context) error {
	subject := ""
	for _, s := range k.cfg.Graveyard.Advisories.Subjects {
		if strings.Contains(s, ".MAX_DELIVERIES.") {
			subject = s
		}
	}
	if subject != "" {
		cons, err := k.js.CreateOrUpdateConsumer(ctx, k.cfg.Graveyard.Advisories.Name, jetstream.ConsumerConfig{
			Durable: KeeperDurable, FilterSubject: subject, AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second,
		})
		if err != nil {
			return fmt.Errorf("graveyard keeper: consume advisories: %w", err)
		}
		cc, err := cons.Consume(func(m jetstream.Msg) {
			var a advisory
			if err := json.Unmarshal(m.Data(), &a); err != nil {
				k.log.Warn("undecodable max-deliveries advisory", "err", err)
				_ = m.Term()
				return
			}
			if err := k.Resolve(ctx, a.StreamSeq, a.Deliveries, "max-deliveries advisory"); err != nil {
				// Reconciliation finds it later if this keeps failing.
				k.log.Warn("could not bury a request given up on; retrying", "seq", a.StreamSeq, "err", err)
				_ = m.NakWithDelay(5 * time.Second)
				return
			}
			_ = m.Ack()
		})
		if err != nil {
			return fmt.Errorf("graveyard keeper: consume advisories: %w", err)
		}
		defer cc.Stop()
	}
	reconcile := time.NewTicker(k.Every)
	defer reconcile.Stop()
	sweep := time.NewTicker(time.Second)
	defer sweep.Stop()
	var idleSince time.Time // when Serving last turned false
	k.reconcile(ctx)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-reconcile.C:
			k.reconcile(ctx)
		case <-sweep.C:
			if k.Serving == nil || k.Serving() {
				idleSince = time.Time{}
				continue
			}
			if now := k.Now(); idleSince.IsZero() {
				idleSince = now
			} else if now.Sub(idleSince) >= k.Stall {
				if _, err := k.Sweep(ctx, 1000); err != nil && ctx.Err() == nil {
					k.log.Warn("could not bury expired requests while no key is held", "err", err)
				}
			}
		}
	}
}

func (k *Keeper) reconcile(ctx context.Context) {
	if _, err := k.Reconcile(ctx); err != nil && ctx.Err() == nil {
		k.log.Warn("graveyard reconciliation incomplete", "err", err)
	}
}

// Reconcile buries every request that has stayed in the requests stream below the
// ack floor of its consumer (each priority and route has its own, see
// streams.RouteConsumers) for Settle, and returns how many it buried. It goes
// on past a request it cannot bury; the error then wraps ErrUnresolved and
// names each.
func (k *Keeper) Reconcile(ctx context.Context) (int, error) {
	rc := k.cfg.Requests
	st, err := k.js.Stream(ctx, rc.Stream.Name)
	if err != nil {
		return 0, fmt.Errorf("read stream %s: %w", rc.Stream.Name, err)
	}
	// Each consumer's own messages, by its filters, which no other's overlap:
	// below one consumer's floor may lie another's requests still queued.
	type below struct {
		filters []string
		floor   uint64
	}
	var floors []below
	names := st.ConsumerNames(ctx)
	for name := range names.Name() {
		cons, err := st.Consumer(ctx, name)
		if err != nil {
			return 0, fmt.Errorf("read consumer %s: %w", name, err)
		}
		info := cons.CachedInfo()
		filters := info.Config.FilterSubjects
		if info.Config.FilterSubject != "" {
			filters = []string{info.Config.FilterSubject}
		}
		if len(filters) == 0 {
			filters = []string{rc.Stream.Filter()}
		}
		floors = append(floors, below{filters, info.AckFloor.Stream})
	}
	if err := names.Err(); err != nil {
		return 0, fmt.Errorf("list the consumers of %s: %w", rc.Stream.Name, err)
	}
	now := k.Now()
	k.mu.Lock()
	defer k.mu.Unlock()
	seen := map[sighting]time.Time{}
	var failed []error
	n := 0
	for _, b := range floors {
		for _, filter := range b.filters {
			for seq := st.CachedInfo().State.FirstSeq; seq > 0 && seq <= b.floor; {
				m, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(filter))
				if errors.Is(err, jetstream.ErrMsgNotFound) {
					break
				}
				if err != nil {
					failed = append(failed, fmt.Errorf("read request %d: %w", seq, err))
					break
				}
				if m.Sequence > b.floor {
					break
				}
				seq = m.Sequence + 1
				s := sighting{m.Sequence, m.Time.UnixNano()}
				first, ok := k.seen[s]
				if !ok {
					first = now
				}
				if now.Sub(first) < k.Settle {
					seen[s] = first // maybe acknowledged, not yet removed: look again later
					continue
				}
				if err := k.resolve(ctx, st, m.Sequence, uint64(rc.Consumer.MaxDeliver), wire.ReasonMaxDeliveries, "found below the ack floor"); err != nil {
					seen[s] = first
					failed = append(failed, err)
					continue
				}
				n++
			}
		}
	}
	k.seen = seen // forget what has left the stream
	if len(failed) > 0 {
		return n, fmt.Errorf("%w: %d left in the queue for the next pass: %w", ErrUnresolved, len(failed), errors.Join(failed...))
	}
	return n, nil
}

// Sweep buries, as key_unusable, expired requests among the next limit messages of
// the requests stream (continuing where the last sweep stopped), and returns how
// many it buried. Run calls it only when no key has been held for Stall, so no
// worker holds these requests; it goes on past a request it cannot bury.
func (k *Keeper) Sweep(ctx context.Context, limit int) (int, error) {
	rc := k.cfg.Requests
	st, err := k.js.Stream(ctx, rc.Stream.Name)
	if err != nil {
		return 0, fmt.Errorf("read stream %s: %w", rc.Stream.Name, err)
	}
	state := st.CachedInfo().State
	k.mu.Lock()
	defer k.mu.Unlock()
	seq := max(k.cursor, state.FirstSeq)
	if seq > state.LastSeq {
		seq = state.FirstSeq
	}
	now := k.Now()
	var failed []error
	n := 0
	for range limit {
		m, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(rc.Stream.Filter()))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			seq = 0 // end of the stream: start again from the first next time
			break
		}
		if err != nil {
			failed = append(failed, fmt.Errorf("read request %d: %w", seq, err))
			break
		}
		seq = m.Sequence + 1
		r, err := wire.Decode(m.Data)
		if err == nil && !r.ExpiredAt(m.Time, now) {
			continue
		}
		if err := k.resolve(ctx, st, m.Sequence, 0, wire.ReasonKeyUnusable, "no key was held to send it before its time to live ran out"); err != nil {
			failed = append(failed, err)
			continue
		}
		n++
	}
	k.cursor = seq
	if len(failed) > 0 {
		return n, fmt.Errorf("%w: %w", ErrUnresolved, errors.Join(failed...))
	}
	return n, nil
}

// Resolve buries the request at seq as max_deliveries, if it is still in the
// requests stream, with the attempts recorded for it, then removes it from the
// stream.
func (k *Keeper) Resolve(ctx context.Context, seq, deliveries uint64, why string) error {
	rc := k.cfg.Requests
	st, err := k.js.Stream(ctx, rc.Stream.Name)
	if err != nil {
		return fmt.Errorf("read stream %s: %w", rc.Stream.Name, err)
	}
	return k.resolve(ctx, st, seq, deliveries, wire.ReasonMaxDeliveries, why)
}

func (k *Keeper) resolve(ctx context.Context, st jetstream.Stream, seq, deliveries uint64, reason, why string) error {
	m, err := st.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil // acknowledged or buried meanwhile
	}
	if err != nil {
		return fmt.Errorf("read request %d: %w", seq, err)
	}
	e := graveyard.Entry{
		Reason: reason, Original: m.Data, Stream: k.cfg.Requests.Stream.Name, StreamSeq: seq, Stored: m.Time,
		Deliveries: deliveries, BuriedAt: k.Now(),
	}
	if reason == wire.ReasonMaxDeliveries {
		e.Error = "no worker reported the last attempt (" + why + "): the worker died or its ack wait ran out"
	} else {
		e.Error = why
	}
	var replyTo string
	if r, err := wire.DecodeFrom(k.cfg.Requests.Subject(), m.Subject, m.Data); err == nil {
		e.RequestID, e.Owner, replyTo = r.ID, r.Owner, r.ReplySubject(k.cfg.Results.ReplyPrefix)
		if e.Attempts, err = k.attempts.List(ctx, r.ID); err != nil {
			k.log.Warn("could not read the attempts of a request given up on", "request", r.ID, "err", err)
		}
	} else {
		e.Reason, e.Error = wire.ReasonMalformed, err.Error()
	}
	if err := k.grave.Bury(ctx, e); err != nil {
		return err // the request stays in the stream; the next pass retries
	}
	if e.RequestID != "" {
		if err := k.results.Bury(ctx, replyTo, e); err != nil {
			k.log.Warn("buried a request but could not write its result; the graveyard has it", "request", e.RequestID, "err", err)
		}
	}
	if err := st.DeleteMsg(ctx, seq); err != nil && !gone(ctx, st, seq) {
		return fmt.Errorf("buried request %d but could not remove it from the queue: %w", seq, err)
	}
	if e.RequestID != "" && len(e.Attempts) > 0 {
		_ = k.attempts.Forget(ctx, e.RequestID)
	}
	k.log.Info("buried a request no worker will end", "request", e.RequestID, "seq", seq, "reason", e.Reason, "why", why)
	return nil
}

// gone reports whether the message at seq is no longer there (the server's
// answer to deleting a missing message wraps no sentinel).
func gone(ctx context.Context, st jetstream.Stream, seq uint64) bool {
	_, err := st.GetMsg(ctx, seq)
	return errors.Is(err, jetstream.ErrMsgNotFound)
}
