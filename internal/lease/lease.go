// Package lease gives one process at a time the right to use an API key, through
// entries in a NATS KV bucket.
//
// Each worker holds one Lease, on its own entry ("worker.<id>", see WorkerEntry),
// with a per-key TTL; each API key it holds has an entry ("key.<name>") naming the
// worker and that lease's session, written once at the claim (ClaimKey) and fenced
// by the worker lease (Owned). So holding a thousand keys costs one renewal per
// worker, and a worker that dies frees all its keys when its one entry lapses. A
// Table follows the whole bucket from one watch. The argument below is made for
// the worker lease; a key's hold is valid exactly while its worker lease is, and
// ClaimKey takes a key only once its worker lease is gone from the server.
//
// Claim creates the entry atomically; Renew rewrites it by compare-and-set on its
// revision with a fresh TTL; a holder that dies stops renewing and the server deletes
// the entry when the TTL runs out, so a standby can claim it.
//
// Fencing: a holder may act on the key only while Valid. The lease is valid until
// t + TTL − Margin, where t is the instant (on the holder's own clock) at which the
// last successful claim or renewal was sent. The server stored that write no earlier
// than t, so the entry outlives the holder's validity by at least Margin. A holder
// that cannot renew (NATS unreachable, the process paused) therefore stops acting
// before any other process can claim the key, and a holder that finds its entry
// changed (Renew sees another revision) is Lost for good: it must Claim anew.
package lease

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
)

// Errors callers branch on.
var (
	// ErrHeld means another process holds the lease.
	ErrHeld = errors.New("lease held by another process")
	// ErrLost means the lease was taken over or expired; it must be claimed anew.
	ErrLost = errors.New("lease lost")
	// ErrNotHeld means the operation needs a held lease.
	ErrNotHeld = errors.New("lease not held")
)

// State is where a lease stands for this process.
type State int

// The states of a lease.
const (
	Standby State = iota // not held: Claim may be tried
	Held                 // held and renewed
	Lost                 // was held and is no longer: never act on it again without a new Claim
)

func (s State) String() string {
	switch s {
	case Standby:
		return "standby"
	case Held:
		return "held"
	case Lost:
		return "lost"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Record is the value of a lease entry: who holds it, since when, and the holder's
// session (new at every claim, so a later claim by the same holder is told apart).
// It never holds a key's secret.
type Record struct {
	Holder      string    `json:"holder"`
	Session     string    `json:"session,omitempty"`
	Since       time.Time `json:"since"`
	Fingerprint string    `json:"fingerprint,omitempty"`
}

// Config describes one lease.
type Config struct {
	Bucket      string        // KV bucket with per-key TTLs enabled
	Key         string        // the API key's name
	Holder      string        // this process's id
	Fingerprint string        // the API key's fingerprint, shown to operators
	TTL         time.Duration // whole seconds, at least 1 s
	// Margin is how long before the server-side expiry the holder stops acting;
	// TTL/3 when zero. It must exceed the largest clock-rate error over a TTL and
	// the upstream's one-way delay, so the old holder's last request has arrived
	// before a new holder can claim.
	Margin time.Duration
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// Lease is one process's view of one lease. It is safe for concurrent use.
type Lease struct {
	cfg     Config
	js      jetstream.JetStream
	kv      jetstream.KeyValue
	subject string

	mu         sync.Mutex
	state      State
	rev        uint64
	session    string
	since      time.Time
	validUntil time.Time
}

// New returns a lease in the Standby state.
func New(ctx context.Context, js jetstream.JetStream, cfg Config) (*Lease, error) {
	if cfg.TTL < time.Second || cfg.TTL%time.Second != 0 {
		return nil, fmt.Errorf("lease %s: TTL %s must be a whole number of seconds, at least 1s", cfg.Key, cfg.TTL)
	}
	if cfg.Margin == 0 {
		cfg.Margin = cfg.TTL / 3
	}
	if cfg.Margin >= cfg.TTL {
		return nil, fmt.Errorf("lease %s: margin %s must be shorter than the TTL %s", cfg.Key, cfg.Margin, cfg.TTL)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	kv, err := js.KeyValue(ctx, cfg.Bucket)
	if err != nil {
		return nil, fmt.Errorf("lease %s: open bucket %s: %w", cfg.Key, cfg.Bucket, err)
	}
	return &Lease{cfg: cfg, js: js, kv: kv, subject: "$KV." + cfg.Bucket + "." + cfg.Key}, nil
}

// Key returns the name of the leased key.
func (l *Lease) Key() string { return l.cfg.Key }

// State returns the lease's state as last observed; a held lease whose validity
// has run out reads as Lost.
func (l *Lease) State() State {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.expireLocked(l.cfg.Now())
	return l.state
}

// Since returns when the current hold began.
func (l *Lease) Since() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.since
}

// ValidUntil returns the instant the holder must stop acting unless it renews.
func (l *Lease) ValidUntil() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.validUntil
}

// Valid reports whether the holder may act on the key at now. Once it has returned
// false for a held lease, the lease is Lost.
func (l *Lease) Valid(now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.expireLocked(now)
	return l.state == Held
}

// Covers reports whether the lease is held and still valid at t, which may lie in
// the future, without changing its state: a holder asks it whether an action that
// lasts until t stays covered.
func (l *Lease) Covers(t time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.state == Held && t.Before(l.validUntil)
}

// Margin returns how long before the server-side expiry the holder stops acting:
// the upstream's one-way delay must stay within it for the holder's last request
// to arrive before a new holder can claim.
func (l *Lease) Margin() time.Duration { return l.cfg.Margin }

func (l *Lease) expireLocked(now time.Time) {
	if l.state == Held && !now.Before(l.validUntil) {
		l.state = Lost
	}
}

// Session returns the current hold's session, empty before the first claim.
func (l *Lease) Session() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.session
}

// Holder returns the holder this lease claims for.
func (l *Lease) Holder() string { return l.cfg.Holder }

func (l *Lease) record(since time.Time) ([]byte, error) {
	b, err := json.Marshal(Record{Holder: l.cfg.Holder, Session: l.session, Since: since, Fingerprint: l.cfg.Fingerprint})
	if err != nil {
		return nil, fmt.Errorf("lease %s: encode record: %w", l.cfg.Key, err)
	}
	return b, nil
}

// Claim takes the lease if no one holds it. It returns ErrHeld when another
// process does.
func (l *Lease) Claim(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.state == Held {
		return nil
	}
	sent := l.cfg.Now()
	l.session = uuid.NewString()
	val, err := l.record(sent)
	if err != nil {
		return err
	}
	rev, err := l.kv.Create(ctx, l.cfg.Key, val, jetstream.KeyTTL(l.cfg.TTL))
	if errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("lease %s: %w", l.cfg.Key, ErrHeld)
	}
	if err != nil {
		return fmt.Errorf("lease %s: claim: %w", l.cfg.Key, err)
	}
	l.state, l.rev, l.since = Held, rev, sent
	l.validUntil = sent.Add(l.cfg.TTL - l.cfg.Margin)
	return nil
}

// Renew extends a held lease by a compare-and-set write with a fresh TTL. A write
// refused because the entry changed makes the lease Lost (ErrLost); any other
// failure leaves it Held until its validity runs out, so the caller may retry.
func (l *Lease) Renew(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	sent := l.cfg.Now()
	l.expireLocked(sent)
	switch l.state {
	case Standby:
		return fmt.Errorf("lease %s: renew: %w", l.cfg.Key, ErrNotHeld)
	case Lost:
		return fmt.Errorf("lease %s: renew: %w", l.cfg.Key, ErrLost)
	}
	val, err := l.record(l.since)
	if err != nil {
		return err
	}
	ack, err := l.js.Publish(ctx, l.subject, val,
		jetstream.WithExpectLastSequencePerSubject(l.rev), jetstream.WithMsgTTL(l.cfg.TTL))
	if err != nil {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
			l.state = Lost
			return fmt.Errorf("lease %s: renew: entry changed: %w", l.cfg.Key, ErrLost)
		}
		return fmt.Errorf("lease %s: renew: %w", l.cfg.Key, err)
	}
	l.rev = ack.Sequence
	l.validUntil = sent.Add(l.cfg.TTL - l.cfg.Margin)
	return nil
}

// Release gives a held lease up at once, so a standby can claim it without waiting
// for the TTL. The entry is deleted only if it is still ours.
func (l *Lease) Release(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	held := l.state == Held
	l.state = Standby
	if !held {
		return nil
	}
	if err := l.kv.Delete(ctx, l.cfg.Key, jetstream.LastRevision(l.rev)); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return nil // no longer ours: nothing to release
		}
		return fmt.Errorf("lease %s: release: %w", l.cfg.Key, err)
	}
	return nil
}
