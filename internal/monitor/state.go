package monitor

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ratefleet/ratefleet/internal/lease"
)

// natsState is what one snapshot reads from NATS.
type natsState struct {
	queue   Queue
	queueOK bool // every queue size was read
	leases  map[string]lease.Record
	keys    map[string]keyFlags
	errs    []string
}

// keyFlags is the part of a key-state entry the monitor shows; other fields are
// ignored.
type keyFlags struct {
	Unusable bool   `json:"unusable"`
	Reason   string `json:"reason"`
}

// readState reads the queue, the graveyard and the key buckets. What cannot be
// read is listed in errs and left zero.
func (c *Collector) readState(ctx context.Context) natsState {
	st := natsState{queue: Queue{GraveyardByReason: map[string]uint64{}}, leases: map[string]lease.Record{}, keys: map[string]keyFlags{}}
	fail := func(err error) { st.errs = append(st.errs, err.Error()) }
	ok := true
	if err := c.readQueue(ctx, &st.queue); err != nil {
		fail(err)
		ok = false
	}
	if err := c.readGraveyard(ctx, &st.queue); err != nil {
		fail(err)
		ok = false
	}
	st.queueOK = ok
	err := readBucket(ctx, c.js, c.cfg.KV.Leases.Bucket, func(key string, value []byte) error {
		var r lease.Record
		if err := json.Unmarshal(value, &r); err != nil {
			return fmt.Errorf("lease of key %s: %w", key, err)
		}
		st.leases[key] = r
		return nil
	})
	if err != nil {
		fail(err)
	}
	err = readBucket(ctx, c.js, c.cfg.KV.KeyState.Bucket, func(key string, value []byte) error {
		var f keyFlags
		if err := json.Unmarshal(value, &f); err != nil {
			return fmt.Errorf("state of key %s: %w", key, err)
		}
		st.keys[key] = f
		return nil
	})
	if err != nil {
		fail(err)
	}
	return st
}

// readQueue reads the requests stream and the workers' consumer.
func (c *Collector) readQueue(ctx context.Context, q *Queue) error {
	name, durable := c.cfg.Requests.Stream.Name, c.cfg.Requests.Consumer.Durable
	s, err := c.js.Stream(ctx, name)
	if err != nil {
		return fmt.Errorf("read requests stream %s: %w", name, err)
	}
	q.Stored = s.CachedInfo().State.Msgs
	cons, err := s.Consumer(ctx, durable)
	if err != nil {
		return fmt.Errorf("read consumer %s of stream %s: %w", durable, name, err)
	}
	info := cons.CachedInfo()
	q.Waiting = info.NumPending
	q.AwaitingAck = uint64(max(info.NumAckPending, 0))
	q.Redelivery = uint64(max(info.NumRedelivered, 0))
	return nil
}

// readGraveyard counts the graveyard's entries by the reason their subject ends
// with.
func (c *Collector) readGraveyard(ctx context.Context, q *Queue) error {
	name := c.cfg.Graveyard.Stream.Name
	s, err := c.js.Stream(ctx, name)
	if err != nil {
		return fmt.Errorf("read graveyard stream %s: %w", name, err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(c.graveyardPrefix+">"))
	if err != nil {
		return fmt.Errorf("read graveyard stream %s: %w", name, err)
	}
	q.Graveyard = info.State.Msgs
	for subject, n := range info.State.Subjects {
		q.GraveyardByReason[strings.TrimPrefix(subject, c.graveyardPrefix)] = n
	}
	return nil
}

// readBucket calls each with every live entry of a KV bucket, read in one pass.
func readBucket(ctx context.Context, js jetstream.JetStream, bucket string, each func(key string, value []byte) error) error {
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		return fmt.Errorf("open bucket %s: %w", bucket, err)
	}
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return fmt.Errorf("read bucket %s: %w", bucket, err)
	}
	defer func() { _ = w.Stop() }()
	var errs []string
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("read bucket %s: %w", bucket, ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return fmt.Errorf("read bucket %s: the watcher stopped early", bucket)
			}
			if e == nil { // every current entry has been delivered
				if len(errs) > 0 {
					return fmt.Errorf("read bucket %s: %s", bucket, strings.Join(errs, "; "))
				}
				return nil
			}
			if err := each(e.Key(), e.Value()); err != nil {
				errs = append(errs, err.Error())
			}
		}
	}
}
