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
package keystate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ErrConflict is returned when another writer changed the entry first.
var ErrConflict = errors.New("key state changed by another writer")

// Record is one key's state.
type Record struct {
	// NonceReserved is the highest nonce any holder may have used.
	NonceReserved int64 `json:"nonce"`
	// Limiter is the limiter's handoff state, written by a holder that releases the
	// key cleanly; empty after a crash.
	Limiter json.RawMessage `json:"limiter,omitempty"`
	// HandedOffAt is when the Limiter state was written.
	HandedOffAt time.Time `json:"handed_off_at,omitzero"`
	// Unusable marks a key the upstream refused (401, blocked) or the ban guard
	// quarantined: no worker claims it again until an operator clears it.
	Unusable bool      `json:"unusable,omitempty"`
	Reason   string    `json:"reason,omitempty"`
	Updated  time.Time `json:"updated"`
	Holder   string    `json:"holder,omitempty"`
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

// Get returns the key's record and its revision (0 when there is none yet).
func (s *Store) Get(ctx context.Context, key string) (Record, uint64, error) {
	e, err := s.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Record{}, 0, nil
	}
	if err != nil {
		return Record{}, 0, fmt.Errorf("read state of key %s: %w", key, err)
	}
	var r Record
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return Record{}, 0, fmt.Errorf("read state of key %s: %w", key, err)
	}
	return r, e.Revision(), nil
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
	var first int64
	_, err := s.Update(ctx, key, func(r *Record) error {
		first = max(r.NonceReserved+1, now.UnixMicro())
		r.NonceReserved = first + n - 1
		r.Updated = now
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("reserve nonces: %w", err)
	}
	return first, nil
}

// MarkUnusable records that the key must not be claimed again, and why.
func (s *Store) MarkUnusable(ctx context.Context, key, reason string, now time.Time) error {
	_, err := s.Update(ctx, key, func(r *Record) error {
		r.Unusable, r.Reason, r.Updated = true, reason, now
		return nil
	})
	return err
}
