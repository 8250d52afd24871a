package graveyard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ratefleet/ratefleet/internal/request"
	"github.com/ratefleet/ratefleet/internal/streams"
)

// KeeperDurable names the consumer of max-deliveries advisories shared by every
// keeper, so each advisory is handled once.
const KeeperDurable = "graveyard-keeper"

// Keeper buries the requests that reached max deliveries without any worker seeing
// their last failure: a worker died during the last attempt, or its ack wait ran
// out. It acts on the server's max-deliveries advisories, kept in the advisories
// stream, and, since advisories are fire-and-forget, also reconciles: under
// work-queue retention, a request still in the stream below the consumer's ack
// floor was given up on by the server.
type Keeper struct {
	js       jetstream.JetStream
	cfg      *streams.Config
	grave    *Graveyard
	attempts *Attempts
	log      *slog.Logger
	now      func() time.Time
	// Every is how often Run reconciles.
	Every time.Duration
}

// NewKeeper returns a keeper for the declarations in cfg.
func NewKeeper(ctx context.Context, js jetstream.JetStream, cfg *streams.Config, log *slog.Logger) (*Keeper, error) {
	g, err := New(js, cfg.Graveyard.Stream.Name, cfg.Graveyard.Stream.Subjects[0])
	if err != nil {
		return nil, err
	}
	a, err := OpenAttempts(ctx, js, cfg.KV.Attempts.Bucket)
	if err != nil {
		return nil, err
	}
	return &Keeper{js: js, cfg: cfg, grave: g, attempts: a, log: log, now: time.Now, Every: 30 * time.Second}, nil
}

// advisory is the part of a max-deliveries advisory the keeper reads.
type advisory struct {
	Stream     string `json:"stream"`
	Consumer   string `json:"consumer"`
	StreamSeq  uint64 `json:"stream_seq"`
	Deliveries uint64 `json:"deliveries"`
}

// Run handles advisories and reconciles every Every until ctx ends.
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
				k.log.Warn("could not bury a request given up on; retrying", "seq", a.StreamSeq, "err", err)
				_ = m.NakWithDelay(time.Second)
				return
			}
			_ = m.Ack()
		})
		if err != nil {
			return fmt.Errorf("graveyard keeper: consume advisories: %w", err)
		}
		defer cc.Stop()
	}
	t := time.NewTicker(k.Every)
	defer t.Stop()
	for {
		if _, err := k.Reconcile(ctx); err != nil && ctx.Err() == nil {
			k.log.Warn("graveyard reconciliation failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Reconcile buries every request still in the requests stream below the workers'
// consumer's ack floor, and returns how many it buried.
func (k *Keeper) Reconcile(ctx context.Context) (int, error) {
	rc := k.cfg.Requests
	cons, err := k.js.Consumer(ctx, rc.Stream.Name, rc.Consumer.Durable)
	if err != nil {
		return 0, fmt.Errorf("read consumer %s: %w", rc.Consumer.Durable, err)
	}
	floor := cons.CachedInfo().AckFloor.Stream
	st, err := k.js.Stream(ctx, rc.Stream.Name)
	if err != nil {
		return 0, fmt.Errorf("read stream %s: %w", rc.Stream.Name, err)
	}
	n := 0
	for seq := st.CachedInfo().State.FirstSeq; seq > 0 && seq <= floor; {
		m, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(rc.Stream.Subjects[0]))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return n, fmt.Errorf("read request %d: %w", seq, err)
		}
		if m.Sequence > floor {
			break
		}
		if err := k.Resolve(ctx, m.Sequence, uint64(rc.Consumer.MaxDeliver), "found below the ack floor"); err != nil {
			return n, err
		}
		n++
		seq = m.Sequence + 1
	}
	return n, nil
}

// Resolve buries the request at seq, if it is still in the requests stream, with
// the attempts recorded for it, then removes it from the stream.
func (k *Keeper) Resolve(ctx context.Context, seq, deliveries uint64, why string) error {
	rc := k.cfg.Requests
	st, err := k.js.Stream(ctx, rc.Stream.Name)
	if err != nil {
		return fmt.Errorf("read stream %s: %w", rc.Stream.Name, err)
	}
	m, err := st.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil // acknowledged or buried meanwhile
	}
	if err != nil {
		return fmt.Errorf("read request %d: %w", seq, err)
	}
	e := Entry{
		Reason: ReasonMaxDeliveries, Original: m.Data, Stream: rc.Stream.Name, StreamSeq: seq,
		Deliveries: deliveries, BuriedAt: k.now(),
		Error: "no worker reported the last attempt (" + why + "): the worker died or its ack wait ran out",
	}
	if r, err := request.Decode(m.Data); err == nil {
		e.RequestID = r.ID
		if e.Attempts, err = k.attempts.List(ctx, r.ID); err != nil {
			k.log.Warn("could not read the attempts of a request given up on", "request", r.ID, "err", err)
		}
	} else {
		e.Reason, e.Error = ReasonMalformed, err.Error()
	}
	if err := k.grave.Bury(ctx, e); err != nil {
		return err // the request stays in the stream; the next pass retries
	}
	if e.RequestID != "" {
		if err := k.publishResult(ctx, e); err != nil {
			k.log.Warn("buried a request but could not write its result; the graveyard has it", "request", e.RequestID, "err", err)
		}
	}
	if err := st.DeleteMsg(ctx, seq); err != nil && !gone(ctx, st, seq) {
		return fmt.Errorf("buried request %d but could not remove it from the queue: %w", seq, err)
	}
	if e.RequestID != "" {
		_ = k.attempts.Forget(ctx, e.RequestID)
	}
	k.log.Info("buried a request given up on by the server", "request", e.RequestID, "seq", seq, "why", why)
	return nil
}
