package streams

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ratefleet/ratefleet/wire"
)

// ErrIncompatible is wrapped when an existing stream, consumer or bucket differs
// from the configuration in a way JetStream cannot change in place.
var ErrIncompatible = errors.New("incompatible with the existing NATS object")

// Action says what Apply did to one object.
type Action string

// The actions Apply reports.
const (
	Created   Action = "created"
	Updated   Action = "updated"
	Unchanged Action = "unchanged"
)

// Change records what Apply did to one stream, consumer or bucket.
type Change struct {
	Kind   string // "stream", "consumer" or "kv"
	Name   string
	Action Action
}

// Result lists what Apply did, in the order of the file.
type Result []Change

// Changed reports whether Apply created or updated anything.
func (r Result) Changed() bool {
	return slices.ContainsFunc(r, func(c Change) bool { return c.Action != Unchanged })
}

// Apply creates every stream, consumer and bucket of c that is missing and updates
// those whose settings differ. It never deletes anything; settings JetStream cannot
// change in place are reported as ErrIncompatible with the way out.
func (c *Config) Apply(ctx context.Context, js jetstream.JetStream) (Result, error) {
	return c.apply(ctx, js, false)
}

// Check compares the server with c without changing anything. The result says what
// Apply would do; an error wrapping ErrDrift means Apply has work to do.
func (c *Config) Check(ctx context.Context, js jetstream.JetStream) (Result, error) {
	res, err := c.apply(ctx, js, true)
	if err == nil && res.Changed() {
		err = fmt.Errorf("%s: %w: %s", c.Source, ErrDrift, res.pending())
	}
	return res, err
}

// ErrDrift is wrapped by Check when the server differs from the configuration.
var ErrDrift = errors.New("NATS differs from the declarations (an admin applies them with `streams apply`; see README, \"streams.yaml\")")

func (r Result) pending() string {
	var out []string
	for _, c := range r {
		if c.Action != Unchanged {
			out = append(out, fmt.Sprintf("%s %s would be %s", c.Kind, c.Name, c.Action))
		}
	}
	return strings.Join(out, "; ")
}

func (c *Config) apply(ctx context.Context, js jetstream.JetStream, dry bool) (Result, error) {
	var res Result
	for _, s := range []Stream{c.Requests.Stream, c.Graveyard.Stream, c.Graveyard.Advisories, c.Stats.Stream, c.Results.Stream} {
		a, err := applyStream(ctx, js, s, dry)
		if err != nil {
			return res, err
		}
		res = append(res, Change{"stream", s.Name, a})
	}
	// The consumer of batch requests any key may send first: before routes it
	// took the whole stream, and must narrow before another may take a part.
	rcs := c.RouteConsumers()
	if len(rcs) == 1 && rcs[0].Filters == nil && !dry {
		// One consumer, unfiltered, would overlap the consumers of routes or
		// priorities an earlier apply declared: keep it filtered then.
		others, err := c.routeConsumersOnServer(ctx, js)
		if err != nil {
			return res, err
		}
		if others {
			rcs[0].Filters = append(c.Requests.Filters(wire.Batch, wire.Any), c.Requests.Filters(wire.Urgent, wire.Any)...)
		}
	}
	slices.SortStableFunc(rcs, func(a, b RouteConsumer) int {
		return boolInt(b.Durable == c.Requests.Consumer.Durable) - boolInt(a.Durable == c.Requests.Consumer.Durable)
	})
	for _, rc := range rcs {
		a, err := applyConsumer(ctx, js, c.Requests.Stream.Name, c.Requests.Consumer, rc, dry)
		if err != nil {
			return res, err
		}
		res = append(res, Change{"consumer", c.Requests.Stream.Name + "/" + rc.Durable, a})
	}
	for _, b := range []struct {
		bucket Bucket
		ttl    bool
	}{{c.KV.Leases, true}, {c.KV.KeyState, false}, {c.KV.Attempts, false}, {c.KV.Replays, false}, {c.KV.Cancels, false}} {
		a, err := applyBucket(ctx, js, b.bucket, b.ttl, dry)
		if err != nil {
			return res, err
		}
		res = append(res, Change{"kv", b.bucket.Bucket, a})
	}
	return res, nil
}

func storageType(s string) jetstream.StorageType {
	if s == "memory" {
		return jetstream.MemoryStorage
	}
	return jetstream.FileStorage
}

func unlimited[T int64 | int32](v T) T {
	if v <= 0 {
		return -1
	}
	return v
}

// streamConfig returns the JetStream configuration for s, with the limits the
// server would fill in made explicit so a comparison with the stored one is exact.
func (s Stream) streamConfig() jetstream.StreamConfig {
	retention := jetstream.LimitsPolicy
	if s.Retention == "workqueue" {
		retention = jetstream.WorkQueuePolicy
	}
	discard := jetstream.DiscardOld
	if s.Discard == "new" {
		discard = jetstream.DiscardNew
	}
	return jetstream.StreamConfig{
		Name:              s.Name,
		Subjects:          s.Subjects,
		Retention:         retention,
		Storage:           storageType(s.Storage),
		Replicas:          s.Replicas,
		MaxMsgs:           unlimited(s.MaxMsgs),
		MaxBytes:          unlimited(s.MaxBytes),
		MaxAge:            s.MaxAge,
		MaxMsgSize:        unlimited(s.MaxMsgSize),
		MaxMsgsPerSubject: unlimited(s.MaxMsgsPerSubject),
		Discard:           discard,
		Duplicates:        s.DuplicateWindow,
		AllowDirect:       s.AllowDirect,
	}
}

func applyStream(ctx context.Context, js jetstream.JetStream, s Stream, dry bool) (Action, error) {
	want := s.streamConfig()
	st, err := js.Stream(ctx, s.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if dry {
			return Created, nil
		}
		if _, err := js.CreateStream(ctx, want); err != nil {
			return "", fmt.Errorf("create stream %s: %w", s.Name, err)
		}
		return Created, nil
	}
	if err != nil {
		return "", fmt.Errorf("look up stream %s: %w", s.Name, err)
	}
	have := st.CachedInfo().Config
	if have.Retention != want.Retention || have.Storage != want.Storage {
		return "", fmt.Errorf("stream %s exists with retention %s and storage %s, but streams.yaml asks for %s and %s: %w; "+
			"JetStream cannot change these in place: keep the existing values in streams.yaml, or drain and delete the stream (nats stream rm %s) and start again",
			s.Name, have.Retention, have.Storage, want.Retention, want.Storage, ErrIncompatible, s.Name)
	}
	merged := have
	merged.Subjects = want.Subjects
	merged.Replicas = want.Replicas
	merged.MaxMsgs = want.MaxMsgs
	merged.MaxBytes = want.MaxBytes
	merged.MaxAge = want.MaxAge
	merged.MaxMsgSize = want.MaxMsgSize
	merged.MaxMsgsPerSubject = want.MaxMsgsPerSubject
	merged.Discard = want.Discard
	merged.AllowDirect = want.AllowDirect
	if want.Duplicates > 0 {
		merged.Duplicates = want.Duplicates
	}
	if sameStream(have, merged) {
		return Unchanged, nil
	}
	if dry {
		return Updated, nil
	}
	if _, err := js.UpdateStream(ctx, merged); err != nil {
		return "", fmt.Errorf("update stream %s: %w", s.Name, err)
	}
	return Updated, nil
}

func sameStream(a, b jetstream.StreamConfig) bool {
	return slices.Equal(a.Subjects, b.Subjects) && a.Replicas == b.Replicas && a.MaxMsgs == b.MaxMsgs &&
		a.MaxBytes == b.MaxBytes && a.MaxAge == b.MaxAge && a.MaxMsgSize == b.MaxMsgSize &&
		a.MaxMsgsPerSubject == b.MaxMsgsPerSubject && a.Discard == b.Discard && a.Duplicates == b.Duplicates &&
		a.AllowDirect == b.AllowDirect
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func applyConsumer(ctx context.Context, js jetstream.JetStream, stream string, c Consumer, rc RouteConsumer, dry bool) (Action, error) {
	want := jetstream.ConsumerConfig{
		Durable:        rc.Durable,
		AckPolicy:      jetstream.AckExplicitPolicy,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		AckWait:        c.AckWait,
		MaxDeliver:     c.MaxDeliver,
		MaxAckPending:  c.MaxAckPending,
		FilterSubjects: rc.Filters,
	}
	cons, err := js.Consumer(ctx, stream, rc.Durable)
	if errors.Is(err, jetstream.ErrConsumerNotFound) || (dry && errors.Is(err, jetstream.ErrStreamNotFound)) {
		if dry {
			return Created, nil
		}
		if _, err := js.CreateConsumer(ctx, stream, want); err != nil {
			return "", fmt.Errorf("create consumer %s on stream %s: %w", rc.Durable, stream, err)
		}
		return Created, nil
	}
	if err != nil {
		return "", fmt.Errorf("look up consumer %s on stream %s: %w", rc.Durable, stream, err)
	}
	have := cons.CachedInfo().Config
	if have.AckPolicy != want.AckPolicy || have.DeliverPolicy != want.DeliverPolicy {
		return "", fmt.Errorf("consumer %s on stream %s exists with ack policy %s and deliver policy %s: %w; "+
			"ratefleet needs an explicit-ack consumer delivering all: delete it (nats consumer rm %s %s) and run again",
			rc.Durable, stream, have.AckPolicy, have.DeliverPolicy, ErrIncompatible, stream, rc.Durable)
	}
	filters := have.FilterSubjects
	if have.FilterSubject != "" {
		filters = []string{have.FilterSubject}
	}
	// The filters of the consumer of batch requests any key may send depend on
	// the routes and priorities an admin applied, which a check cannot know.
	anyFilters := dry && rc.Priority == wire.Batch && rc.Route.Kind == wire.RouteAny
	if have.AckWait == want.AckWait && have.MaxDeliver == want.MaxDeliver && have.MaxAckPending == want.MaxAckPending && len(have.BackOff) == 0 &&
		(anyFilters || slices.Equal(filters, want.FilterSubjects)) {
		return Unchanged, nil
	}
	merged := have
	merged.AckWait = want.AckWait
	merged.MaxDeliver = want.MaxDeliver
	merged.MaxAckPending = want.MaxAckPending
	merged.BackOff = nil // retries are delayed by the worker's NAK, deliberately
	merged.FilterSubject, merged.FilterSubjects = "", want.FilterSubjects
	if dry {
		return Updated, nil
	}
	if _, err := js.UpdateConsumer(ctx, stream, merged); err != nil {
		return "", fmt.Errorf("update consumer %s on stream %s: %w", rc.Durable, stream, err)
	}
	return Updated, nil
}

// routeConsumersOnServer reports whether the requests stream has a consumer of
// a route or a priority beside the one of batch requests any key may send.
func (c *Config) routeConsumersOnServer(ctx context.Context, js jetstream.JetStream) (bool, error) {
	st, err := js.Stream(ctx, c.Requests.Stream.Name)
	if err != nil {
		return false, fmt.Errorf("look up stream %s: %w", c.Requests.Stream.Name, err)
	}
	names := st.ConsumerNames(ctx)
	found := false
	for name := range names.Name() {
		if strings.HasPrefix(name, c.Requests.Consumer.Durable+"_") {
			found = true
		}
	}
	if err := names.Err(); err != nil {
		return false, fmt.Errorf("list the consumers of stream %s: %w", c.Requests.Stream.Name, err)
	}
	return found, nil
}

// limitMarkerTTL is how long the server keeps the marker of an expired key; it turns
// on per-key TTLs, which leases need.
const limitMarkerTTL = time.Second

func applyBucket(ctx context.Context, js jetstream.JetStream, b Bucket, perKeyTTL, dry bool) (Action, error) {
	want := jetstream.KeyValueConfig{
		Bucket:   b.Bucket,
		History:  1,
		Storage:  storageType(b.Storage),
		Replicas: b.Replicas,
		TTL:      b.MaxAge,
		MaxBytes: unlimited(b.MaxBytes),
	}
	if perKeyTTL {
		want.LimitMarkerTTL = limitMarkerTTL
	}
	kv, err := js.KeyValue(ctx, b.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		if dry {
			return Created, nil
		}
		if _, err := js.CreateKeyValue(ctx, want); err != nil {
			return "", fmt.Errorf("create KV bucket %s: %w", b.Bucket, err)
		}
		return Created, nil
	}
	if err != nil {
		return "", fmt.Errorf("look up KV bucket %s: %w", b.Bucket, err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		return "", fmt.Errorf("read KV bucket %s: %w", b.Bucket, err)
	}
	bs, ok := st.(*jetstream.KeyValueBucketStatus)
	if !ok {
		return "", fmt.Errorf("read KV bucket %s: unexpected status type %T", b.Bucket, st)
	}
	have := bs.Config()
	if have.Storage != want.Storage || (have.LimitMarkerTTL > 0) != (want.LimitMarkerTTL > 0) {
		return "", fmt.Errorf("KV bucket %s exists with storage %s and limit marker TTL %s, but streams.yaml needs %s and %s: %w; "+
			"delete the bucket (nats kv del %s) while no worker runs, and run again",
			b.Bucket, have.Storage, have.LimitMarkerTTL, want.Storage, want.LimitMarkerTTL, ErrIncompatible, b.Bucket)
	}
	if have.History == want.History && have.Replicas == want.Replicas && have.LimitMarkerTTL == want.LimitMarkerTTL && have.TTL == want.TTL &&
		unlimited(have.MaxBytes) == want.MaxBytes {
		return Unchanged, nil
	}
	have.History, have.Replicas, have.LimitMarkerTTL, have.TTL, have.MaxBytes = want.History, want.Replicas, want.LimitMarkerTTL, want.TTL, want.MaxBytes
	if dry {
		return Updated, nil
	}
	if _, err := js.UpdateKeyValue(ctx, have); err != nil {
		return "", fmt.Errorf("update KV bucket %s: %w", b.Bucket, err)
	}
	return Updated, nil
}
