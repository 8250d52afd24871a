// Package keystate keeps what must outlive the holder of an API key: the nonce
// high-water mark, the limiter's record of recent sends for a handoff, and whether
// the key may still be used. It lives in a KV bucket, one entry per key name, and is
// written by compare-and-set, so two writers never both win.
//
// Nonces are handed out in blocks: a holder reserves the block (reserved, reserved+n]
// by writing the new mark before it uses any nonce in it. A later holder (after a
// handoff or a crash) starts above the mark, so nonces grow across holders whatever
// their clocks say. A block starts no lower than the current time in microseconds,
// so nonces also stay above those a previous deployment may have used.
//
// A key's 429 budget belongs to the fleet, not to one holder: every 429 is counted
// here (with the delay bound it taught the limiter) before the key sends again, so
// a holder that crashes or hands over never takes the count with it, and the ban
// guard trips on the key's lifetime count.
//
// Anyone who can write the bucket can write anything, so what Get reads is checked
// (Record.Validate): a nonce mark beyond MaxNonce or a negative count is an error
// wrapping ErrInvalid, which stops the key rather than risking a 400 or a 429.
package keystate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Errors callers branch on.
var (
	// ErrConflict is returned when another writer changed the entry first.
	ErrConflict = errors.New("key state changed by another writer")
	// ErrInvalid is wrapped by the errors for a record that cannot be trusted.
	ErrInvalid = errors.New("invalid key state")
)

// MaxNonce is the highest nonce mark a record may hold: far above any clock in
// microseconds (year 2262 is about 9.2e18), with room for any block size below it,
// so reserving a block can never overflow.
const MaxNonce int64 = 1 << 62

// maxDelayBound caps the delay bound a record may hold.
const maxDelayBound = time.Hour

// Record is one key's state.
type Record struct {
	// NonceReserved is the highest nonce any holder may have used.
	NonceReserved int64 `json:"nonce"`
	// Limiter is the limiter's handoff state, written by a holder that releases the
	// key cleanly; empty after a crash.
	Limiter json.RawMessage `json:"limiter,omitempty"`
	// HandedOffAt is when the Limiter state was written, on the writer's clock.
	// The next holder reads the state's instants relative to it (as ages), so the
	// two holders' clocks need not agree.
	HandedOffAt time.Time `json:"handed_off_at,omitzero"`
	// Checkpoint is the holder's limiter state, written every few seconds while
	// it holds the key, for the next holder should it crash; CheckpointAt is when
	// it was written on the writer's clock, and CheckpointSpan how long after
	// that the writer may send without a newer one.
	Checkpoint     json.RawMessage `json:"checkpoint,omitempty"`
	CheckpointAt   time.Time       `json:"checkpoint_at,omitzero"`
	CheckpointSpan time.Duration   `json:"checkpoint_span_ns,omitempty"`
	// Count429 counts every 429 the key has had, whoever held it.
	Count429 int `json:"count_429,omitempty"`
	// MaxDelay is the largest one-way delay the key's limiter has learned (L);
	// every new holder starts from at least this.
	MaxDelay time.Duration `json:"max_delay_ns,omitempty"`
	// Unusable marks a key the upstream refused (401, blocked) or the ban guard
	// quarantined: no worker claims it again until an operator clears it.
	Unusable bool `json:"unusable,omitempty"`
	// Quarantined tells that the ban guard made the key unusable.
	Quarantined bool      `json:"quarantined,omitempty"`
	Reason      string    `json:"reason,omitempty"`
	Updated     time.Time `json:"updated"`
	Holder      string    `json:"holder,omitempty"`
}

// Validate reports, wrapping ErrInvalid, what in r cannot be trusted.
func (r Record) Validate() error {
	switch {
	case r.NonceReserved < 0 || r.NonceReserved > MaxNonce:
		return fmt.Errorf("%w: nonce mark %d is outside 0..%d", ErrInvalid, r.NonceReserved, MaxNonce)
	case r.Count429 < 0:
		return fmt.Errorf("%w: negative 429 count %d", ErrInvalid, r.Count429)
	case r.MaxDelay < 0 || r.MaxDelay > maxDelayBound:
		return fmt.Errorf("%w: delay bound %v is outside 0..%v", ErrInvalid, r.MaxDelay, maxDelayBound)
	case len(r.Limiter) > 0 && r.HandedOffAt.IsZero():
		return fmt.Errorf("%w: a handed-off limiter state without the time it was written", ErrInvalid)
	case len(r.Limiter) > 0 && !json.Valid(r.Limiter):
		return fmt.Errorf("%w: the handed-off limiter state is not JSON", ErrInvalid)
	case len(r.Checkpoint) > 0 && (r.CheckpointAt.IsZero() || r.CheckpointSpan <= 0 || r.CheckpointSpan > maxDelayBound):
		return fmt.Errorf("%w: a limiter checkpoint without the time it was written or a span of 0 to %v", ErrInvalid, maxDelayBound)
	case len(r.Checkpoint) > 0 && !json.Valid(r.Checkpoint):
		return fmt.Errorf("%w: the limiter checkpoint is not JSON", ErrInvalid)
	}
	return nil
}

// Store reads and writes key state.
type Store struct {
	kv jetstream.KeyValue
}

// Open opens the key-state bucket.
func Open(ctx context.Context, js jetstream.JetStream, bucket string) (*Store, error) {
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		return nil, fmt.Errorf("open key state bucket %s: %w", bucket, err)
	}
	return &Store{kv: kv}, nil
}

// KV returns the bucket, for operators' tools and tests that write it directly.
func (s *Store) KV() jetstream.KeyValue { return s.kv }

// Get returns the key's record and its revision (0 when there is none yet).
func (s *Store) Get(ctx context.Context, key string) (Record, uint64, error) {
	e, err := s.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Record{}, 0, nil
	}
	if err != nil {
		return Record{}, 0, fmt.Errorf("read state of key %s: %w", key, err)
	}
	r, err := Decode(e.Value())
	if err != nil {
		return Record{}, 0, fmt.Errorf("read state of key %s (revision %d): %w", key, e.Revision(), err)
	}
	return r, e.Revision(), nil
}

// Decode reads a record as the bucket holds it and validates it; a record that
// cannot be read or trusted is an error wrapping ErrInvalid. The record is
// returned as far as it could be read.
func Decode(data []byte) (Record, error) {
	var r Record
	if err := json.Unmarshal(data, &r); err != nil {
		return r, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return r, r.Validate()
}

// Update applies change to the key's record by compare-and-set, retrying when
// another writer got there first, and returns the record written.
func (s *Store) Update(ctx context.Context, key string, change func(*Record) error) (Record, error) {
	for range 10 {
		r, rev, err := s.Get(ctx, key)
		if err != nil {
			return Record{}, err
		}
		if err := change(&r); err != nil {
			return Record{}, err
		}
		data, err := json.Marshal(r)
		if err != nil {
			return Record{}, fmt.Errorf("write state of key %s: %w", key, err)
		}
		if rev == 0 {
			_, err = s.kv.Create(ctx, key, data)
		} else {
			_, err = s.kv.Update(ctx, key, data, rev)
		}
		if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue
		}
		if err != nil {
			return Record{}, fmt.Errorf("write state of key %s: %w", key, err)
		}
		return r, nil
	}
	return Record{}, fmt.Errorf("write state of key %s: %w", key, ErrConflict)
}

// ReserveNonces reserves the next block of n nonces and returns its first nonce;
// the block is [first, first+n).
func (s *Store) ReserveNonces(ctx context.Context, key string, n int64, now time.Time) (int64, error) {
	if n < 1 || n > MaxNonce {
		return 0, fmt.Errorf("reserve nonces: block size %d is outside 1..%d", n, MaxNonce)
	}
	var first int64
	_, err := s.Update(ctx, key, func(r *Record) error {
		first = max(r.NonceReserved+1, now.UnixMicro())
		if first > MaxNonce-n+1 {
			return fmt.Errorf("%w: the nonce space is used up (mark %d, block %d)", ErrInvalid, r.NonceReserved, n)
		}
		r.NonceReserved = first + n - 1
		r.Updated = now
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("reserve nonces: %w", err)
	}
	return first, nil
}

// MarkUnusable records that the key must not be claimed again, and why;
// quarantined tells that the ban guard decided it.
func (s *Store) MarkUnusable(ctx context.Context, key, reason string, quarantined bool, now time.Time) error {
	_, err := s.Update(ctx, key, func(r *Record) error {
		r.Unusable, r.Reason, r.Updated = true, reason, now
		r.Quarantined = r.Quarantined || quarantined
		return nil
	})
	return err
}

// Record429 counts one more 429 for the key and keeps the larger of the recorded
// and the given delay bound; it returns the key's lifetime count.
func (s *Store) Record429(ctx context.Context, key string, maxDelay time.Duration, now time.Time) (int, error) {
	r, err := s.Update(ctx, key, func(r *Record) error {
		r.Count429++
		r.MaxDelay = min(max(r.MaxDelay, maxDelay), maxDelayBound)
		r.Updated = now
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("record a 429: %w", err)
	}
	return r.Count429, nil
}

// Listed is one record of the bucket as List found it: Err tells why it cannot
// be trusted (wrapping ErrInvalid), and Record is then as decoded, if at all.
type Listed struct {
	Name     string
	Record   Record
	Revision uint64
	Err      error
}

// List returns every key's record, by name.
func (s *Store) List(ctx context.Context) ([]Listed, error) {
	lister, err := s.kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("list key state: %w", err)
	}
	defer func() { _ = lister.Stop() }()
	var out []Listed
	for name := range lister.Keys() {
		e, err := s.kv.Get(ctx, name)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // deleted since it was listed
		}
		if err != nil {
			return nil, fmt.Errorf("read state of key %s: %w", name, err)
		}
		l := Listed{Name: name, Revision: e.Revision()}
		l.Record, l.Err = Decode(e.Value())
		out = append(out, l)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Clear lifts the key's unusable mark and quarantine, so workers claim it again
// (within their recheck interval); the 429 count stays (see ResetCount).
func (s *Store) Clear(ctx context.Context, key string, now time.Time) (Record, error) {
	return s.Update(ctx, key, func(r *Record) error {
		r.Unusable, r.Quarantined, r.Reason, r.Updated = false, false, "", now
		return nil
	})
}

// ResetCount sets the key's lifetime 429 count to zero: the ban guard then
// allows the key its full budget again. Do it only once the key's real count at
// the upstream is known to be reset too.
func (s *Store) ResetCount(ctx context.Context, key string, now time.Time) (Record, error) {
	return s.Update(ctx, key, func(r *Record) error {
		r.Count429, r.Updated = 0, now
		return nil
	})
}
