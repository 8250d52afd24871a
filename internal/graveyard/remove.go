package graveyard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// ErrNoEntry is returned for a graveyard entry that is not there (any more).
var ErrNoEntry = errors.New("no such graveyard entry")

// IDs returns every id the entry carries: the request id it was buried under,
// and the id and replay_of its original message names, even when that message
// could not be decoded as a request (a malformed entry is found by the id it
// had).
func (e Entry) IDs() []string {
	var ids []string
	add := func(id string) {
		if id != "" {
			for _, have := range ids {
				if have == id {
					return
				}
			}
			ids = append(ids, id)
		}
	}
	add(e.RequestID)
	var carried struct {
		ID       any `json:"id"`
		ReplayOf any `json:"replay_of"`
	}
	if json.Unmarshal(e.Original, &carried) == nil {
		for _, v := range []any{carried.ID, carried.ReplayOf} {
			switch v := v.(type) {
			case string:
				add(v)
			case float64:
				add(fmt.Sprint(v))
			}
		}
	}
	return ids
}

// Delete removes the entry at seq. It returns an error wrapping ErrNoEntry when
// there is none.
func (g *Graveyard) Delete(ctx context.Context, seq uint64) error {
	st, err := g.js.Stream(ctx, g.stream)
	if err != nil {
		return fmt.Errorf("open graveyard %s: %w", g.stream, err)
	}
	if err := st.DeleteMsg(ctx, seq); err != nil {
		if gone(ctx, st, seq) {
			return fmt.Errorf("remove graveyard entry %d: %w", seq, ErrNoEntry)
		}
		return fmt.Errorf("remove graveyard entry %d: %w (does this user have the graveyard role? see `streams roles`)", seq, err)
	}
	return nil
}

// Purge removes every entry buried for reason, or every entry when reason is
// empty, in one request to the server, and returns how many it removed.
func (g *Graveyard) Purge(ctx context.Context, reason string) (uint64, error) {
	st, err := g.js.Stream(ctx, g.stream)
	if err != nil {
		return 0, fmt.Errorf("open graveyard %s: %w", g.stream, err)
	}
	before, err := st.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("purge graveyard %s: %w", g.stream, err)
	}
	var opts []jetstream.StreamPurgeOpt
	if reason != "" {
		opts = append(opts, jetstream.WithPurgeSubject(g.Subject(reason)))
	}
	if err := st.Purge(ctx, opts...); err != nil {
		return 0, fmt.Errorf("purge graveyard %s: %w (does this user have the graveyard role? see `streams roles`)", g.stream, err)
	}
	after, err := st.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("purge graveyard %s: purged, but could not count what is left: %w", g.stream, err)
	}
	return before.State.Msgs - after.State.Msgs, nil
}
