package lease

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The lease bucket holds two kinds of entries.
const (
	// WorkerPrefix starts the entry of a worker's own lease ("worker.<id>"): it has
	// a TTL and is renewed by its worker, one write per worker per renewal.
	WorkerPrefix = "worker."
	// KeyPrefix starts the entry of an API key ("key.<name>"): it names the worker
	// and the session of the worker lease that holds the key, and has no TTL. A key
	// is held only while that worker lease lives with that session.
	KeyPrefix = "key."
)

// WorkerEntry returns the entry name of worker id's lease.
func WorkerEntry(id string) string { return WorkerPrefix + id }

// KeyEntry returns the entry name of the API key name.
func KeyEntry(name string) string { return KeyPrefix + name }

// Owned is an API key held under a worker lease. It is valid exactly while the
// worker lease is, and until the key's entry is seen taken by another (Lose).
//
// Fencing: another worker takes a key whose entry names this lease's session only
// after reading, directly from the server, that this worker lease's entry is gone
// or carries another session (ClaimKey); the entry is gone only once its TTL ran
// out with no renewal, when this holder's own validity has already ended (see the
// package doc). So a key never has two valid holders, and renewing a worker's keys
// costs one write per worker, whatever their number.
type Owned struct {
	kv     jetstream.KeyValue
	name   string
	worker *Lease
	rev    uint64
	lost   atomic.Bool
}

// Revision returns the revision of the key's entry this hold wrote.
func (o *Owned) Revision() uint64 { return o.rev }

// Valid reports whether the holder may act on the key at now.
func (o *Owned) Valid(now time.Time) bool { return !o.lost.Load() && o.worker.Valid(now) }

// Covers reports whether the hold is valid at t, which may lie in the future,
// without changing any state.
func (o *Owned) Covers(t time.Time) bool { return !o.lost.Load() && o.worker.Covers(t) }

// Margin returns the worker lease's margin (Config.Margin).
func (o *Owned) Margin() time.Duration { return o.worker.Margin() }

// Lose marks the hold lost for good: the key's entry was seen naming another
// holder, or deleted by someone else.
func (o *Owned) Lose() { o.lost.Store(true) }

// Release gives the key up at once, so another worker can claim it; the entry is
// deleted only if it is still this hold's.
func (o *Owned) Release(ctx context.Context) error {
	o.lost.Store(true)
	if err := o.kv.Delete(ctx, KeyEntry(o.name), jetstream.LastRevision(o.rev)); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return nil // no longer ours: nothing to release
		}
		return fmt.Errorf("release key %s: %w", o.name, err)
	}
	return nil
}

// ClaimKey takes the API key name under the held worker lease w, if the key is
// free: it has no entry, or its entry names a worker lease that is gone or has
// another session. Whether that worker lease lives is read from the server, never
// from a watch that may lag. It returns ErrHeld when another live worker holds the
// key or wins the race, and ErrNotHeld when w is not held.
func ClaimKey(ctx context.Context, w *Lease, name, fingerprint string) (*Owned, error) {
	if !w.Valid(w.cfg.Now()) {
		return nil, fmt.Errorf("claim key %s: worker lease: %w", name, ErrNotHeld)
	}
	kv := w.kv
	me := Record{Holder: w.Holder(), Session: w.Session(), Since: w.cfg.Now(), Fingerprint: fingerprint}
	val, err := json.Marshal(me)
	if err != nil {
		return nil, fmt.Errorf("claim key %s: %w", name, err)
	}
	e, err := kv.Get(ctx, KeyEntry(name))
	var rev uint64
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		rev, err = kv.Create(ctx, KeyEntry(name), val)
	case err != nil:
		return nil, fmt.Errorf("claim key %s: %w", name, err)
	default:
		var cur Record
		if json.Unmarshal(e.Value(), &cur) == nil && cur.Holder != "" {
			alive, aerr := workerAlive(ctx, kv, cur)
			if aerr != nil {
				return nil, fmt.Errorf("claim key %s: %w", name, aerr)
			}
			if alive {
				return nil, fmt.Errorf("key %s: %w", name, ErrHeld)
			}
		}
		rev, err = kv.Update(ctx, KeyEntry(name), val, e.Revision())
	}
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) || isWrongLastSequence(err) {
		return nil, fmt.Errorf("key %s: %w", name, ErrHeld)
	}
	if err != nil {
		return nil, fmt.Errorf("claim key %s: %w", name, err)
	}
	return &Owned{kv: kv, name: name, worker: w, rev: rev}, nil
}

// workerAlive reads whether the worker lease a key's record names still lives with
// the same session.
func workerAlive(ctx context.Context, kv jetstream.KeyValue, r Record) (bool, error) {
	e, err := kv.Get(ctx, WorkerEntry(r.Holder))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read worker lease %s: %w", r.Holder, err)
	}
	var w Record
	if err := json.Unmarshal(e.Value(), &w); err != nil {
		return false, nil // not a lease this package wrote: it fences nothing
	}
	return w.Session == r.Session, nil
}

func isWrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// Holder reads who holds the API key name: the worker its entry names, if that
// worker's lease lives with the same session.
func Holder(ctx context.Context, kv jetstream.KeyValue, name string) (Record, bool, error) {
	e, err := kv.Get(ctx, KeyEntry(name))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Record{}, false, nil
	}
	if err != nil {
		return Record{}, false, fmt.Errorf("read lease of key %s: %w", name, err)
	}
	var r Record
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return Record{}, false, fmt.Errorf("read lease of key %s: %w", name, err)
	}
	alive, err := workerAlive(ctx, kv, r)
	if err != nil || !alive {
		return Record{}, false, err
	}
	return r, true, nil
}

// ParseEntry tells what a lease bucket entry is: a worker's lease (worker true) or
// an API key's (worker false), and its id or name; ok is false for anything else.
func ParseEntry(entry string) (name string, worker, ok bool) {
	if n, found := strings.CutPrefix(entry, WorkerPrefix); found {
		return n, true, n != ""
	}
	if n, found := strings.CutPrefix(entry, KeyPrefix); found {
		return n, false, n != ""
	}
	return "", false, false
}
