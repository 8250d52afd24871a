package graveyard

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// maxAttempts bounds what one request's log keeps: the first attempts and the
// latest ones matter; a request cannot have more than its max deliveries anyway.
const maxAttempts = 64

// Attempts is the log of failed attempts per request, kept in a KV bucket so that
// whichever worker makes the last attempt can bury the request with all of them.
type Attempts struct {
	kv jetstream.KeyValue
}

// OpenAttempts opens the attempts bucket.
func OpenAttempts(ctx context.Context, js jetstream.JetStream, bucket string) (*Attempts, error) {
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		return nil, fmt.Errorf("open attempts bucket %s: %w", bucket, err)
	}
	return &Attempts{kv: kv}, nil
}

// entryKey maps any request id to a valid KV key.
func entryKey(requestID string) string {
	sum := sha256.Sum256([]byte(requestID))
	return hex.EncodeToString(sum[:16])
}

// Record appends a to the request's log.
func (a *Attempts) Record(ctx context.Context, requestID string, at Attempt) error {
	key := entryKey(requestID)
	for range 5 {
		list, rev, err := a.get(ctx, key)
		if err != nil {
			return err
		}
		list = append(list, at)
		if len(list) > maxAttempts {
			list = append(list[:maxAttempts/2], list[len(list)-maxAttempts/2:]...)
		}
		data, err := json.Marshal(list)
		if err != nil {
			return fmt.Errorf("record attempt of %s: %w", requestID, err)
		}
		if rev == 0 {
			_, err = a.kv.Create(ctx, key, data)
		} else {
			_, err = a.kv.Update(ctx, key, data, rev)
		}
		if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue // another worker wrote meanwhile: read again
		}
		if err != nil {
			return fmt.Errorf("record attempt of %s: %w", requestID, err)
		}
		return nil
	}
	return fmt.Errorf("record attempt of %s: too many concurrent writers", requestID)
}

// List returns the request's log.
func (a *Attempts) List(ctx context.Context, requestID string) ([]Attempt, error) {
	list, _, err := a.get(ctx, entryKey(requestID))
	return list, err
}

// Forget removes the request's log once the request has ended. A request with
// no log costs one read and writes nothing: a purge leaves a marker in the
// bucket until max_age, so one per redelivered request would fill it.
func (a *Attempts) Forget(ctx context.Context, requestID string) error {
	key := entryKey(requestID)
	e, err := a.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("forget attempts of %s: %w", requestID, err)
	}
	if err := a.kv.Purge(ctx, key, jetstream.LastRevision(e.Revision())); err != nil {
		return fmt.Errorf("forget attempts of %s: %w", requestID, err)
	}
	return nil
}

func (a *Attempts) get(ctx context.Context, key string) ([]Attempt, uint64, error) {
	e, err := a.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("read attempts: %w", err)
	}
	var list []Attempt
	if err := json.Unmarshal(e.Value(), &list); err != nil {
		return nil, 0, fmt.Errorf("read attempts: %w", err)
	}
	return list, e.Revision(), nil
}
