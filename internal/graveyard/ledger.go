package graveyard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ErrReplayUnconfirmed is returned by Replay for an entry whose earlier replay was
// published but never confirmed stored, once the requests stream's duplicate
// window since then has passed: publishing it again could store it twice, so the
// entry stays in the graveyard for a person to decide.
var ErrReplayUnconfirmed = errors.New("an earlier replay of this entry may have been stored, and the duplicate window has passed")

// Ledger remembers the replays published, in a KV bucket whose max_age (at least
// 24 h) is how long a replay is stored once whatever the requests stream's
// duplicate window: a rerun finds the replay stored and publishes nothing.
type Ledger struct {
	kv jetstream.KeyValue
}

// OpenLedger opens the replays bucket.
func OpenLedger(ctx context.Context, js jetstream.JetStream, bucket string) (*Ledger, error) {
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		return nil, fmt.Errorf("open replays bucket %s: %w", bucket, err)
	}
	return &Ledger{kv: kv}, nil
}

// mark is a replay's ledger entry.
type mark struct {
	Stored bool   `json:"stored"`
	Seq    uint64 `json:"seq,omitempty"` // in the requests stream, once stored
}

// state of the replay id: missing, or its mark with when it was first written.
func (l *Ledger) state(ctx context.Context, id string) (m mark, since time.Time, rev uint64, err error) {
	e, err := l.kv.Get(ctx, entryKey(id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return mark{}, time.Time{}, 0, nil
	}
	if err != nil {
		return mark{}, time.Time{}, 0, fmt.Errorf("read replay %s in the ledger: %w", id, err)
	}
	if err := json.Unmarshal(e.Value(), &m); err != nil {
		return mark{}, time.Time{}, 0, fmt.Errorf("read replay %s in the ledger: %w", id, err)
	}
	return m, e.Created(), e.Revision(), nil
}

// begin writes the pending mark of a replay about to be published; it fails
// with jetstream.ErrKeyExists if another run wrote one first.
func (l *Ledger) begin(ctx context.Context, id string) error {
	data, _ := json.Marshal(mark{})
	if _, err := l.kv.Create(ctx, entryKey(id), data); err != nil {
		return fmt.Errorf("note replay %s in the ledger: %w", id, err)
	}
	return nil
}

// stored marks the replay stored at seq.
func (l *Ledger) stored(ctx context.Context, id string, seq uint64) error {
	data, _ := json.Marshal(mark{Stored: true, Seq: seq})
	if _, err := l.kv.Put(ctx, entryKey(id), data); err != nil {
		return fmt.Errorf("note replay %s stored in the ledger: %w", id, err)
	}
	return nil
}
