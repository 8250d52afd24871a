package graveyard

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ratefleet/ratefleet/internal/request"
)

// Stored is an entry as it sits in the graveyard stream.
type Stored struct {
	Seq   uint64
	Entry Entry
}

// Filter selects entries; zero fields select everything.
type Filter struct {
	Reason string
	Key    string
	Status int // the HTTP status of the last attempt
	Since  time.Time
	Until  time.Time
	IDs    map[string]bool // request ids or graveyard sequence numbers
}

// Match reports whether s is selected.
func (f Filter) Match(s Stored) bool {
	e := s.Entry
	switch {
	case f.Reason != "" && e.Reason != f.Reason:
		return false
	case f.Key != "" && e.Key != f.Key && !attemptedOn(e, f.Key):
		return false
	case f.Status != 0 && lastStatus(e) != f.Status:
		return false
	case !f.Since.IsZero() && e.BuriedAt.Before(f.Since):
		return false
	case !f.Until.IsZero() && !e.BuriedAt.Before(f.Until):
		return false
	case len(f.IDs) > 0 && !f.IDs[e.RequestID] && !f.IDs[strconv.FormatUint(s.Seq, 10)]:
		return false
	}
	return true
}

func attemptedOn(e Entry, key string) bool {
	for _, a := range e.Attempts {
		if a.Key == key {
			return true
		}
	}
	return false
}

func lastStatus(e Entry) int {
	if len(e.Attempts) == 0 {
		return 0
	}
	return e.Attempts[len(e.Attempts)-1].Status
}

// Walk calls fn for every entry matching f, in order, until fn returns false.
func (g *Graveyard) Walk(ctx context.Context, f Filter, fn func(Stored) bool) error {
	st, err := g.js.Stream(ctx, g.stream)
	if err != nil {
		return fmt.Errorf("open graveyard %s: %w", g.stream, err)
	}
	info := st.CachedInfo().State
	if info.Msgs == 0 {
		return nil
	}
	subject := g.prefix + ".>"
	if f.Reason != "" {
		subject = g.Subject(f.Reason)
	}
	for seq := info.FirstSeq; seq <= info.LastSeq; {
		m, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read graveyard at %d: %w", seq, err)
		}
		e, err := DecodeMsg(m.Header, m.Data)
		if err != nil {
			return fmt.Errorf("graveyard entry %d: %w", m.Sequence, err)
		}
		s := Stored{Seq: m.Sequence, Entry: e}
		if f.Match(s) && !fn(s) {
			return nil
		}
		seq = m.Sequence + 1
	}
	return nil
}

// Get returns the entry at seq.
func (g *Graveyard) Get(ctx context.Context, seq uint64) (Stored, error) {
	st, err := g.js.Stream(ctx, g.stream)
	if err != nil {
		return Stored{}, fmt.Errorf("open graveyard %s: %w", g.stream, err)
	}
	m, err := st.GetMsg(ctx, seq)
	if err != nil {
		return Stored{}, fmt.Errorf("graveyard entry %d: %w", seq, err)
	}
	e, err := DecodeMsg(m.Header, m.Data)
	if err != nil {
		return Stored{}, fmt.Errorf("graveyard entry %d: %w", seq, err)
	}
	return Stored{Seq: seq, Entry: e}, nil
}

// Replayer publishes buried requests again.
type Replayer struct {
	g       *Graveyard
	subject string // the requests subject
	ttl     time.Duration
	now     func() time.Time
}

// NewReplayer returns a replayer that publishes to the requests subject with a
// fresh time to live.
func NewReplayer(g *Graveyard, requestsSubject string, ttl time.Duration, now func() time.Time) *Replayer {
	if now == nil {
		now = time.Now
	}
	return &Replayer{g: g, subject: requestsSubject, ttl: ttl, now: now}
}

// ReplayID returns the id of the request that replays entry s: the same for every
// run, so a replay that is repeated or rerun after an interruption publishes the
// same request, which the requests stream stores once.
func ReplayID(s Stored) string {
	return uuid.NewHash(sha256.New(), uuid.NameSpaceOID, []byte(fmt.Sprintf("ratefleet-replay/%s/%d/%s", s.Entry.Stream, s.Entry.StreamSeq, s.Entry.RequestID)), 5).String()
}

// Plan returns the request that would replay s: a fresh request with a new time
// to live, the original payload, linked to the original id.
func (r *Replayer) Plan(s Stored) (request.Request, error) {
	orig, err := request.Decode(s.Entry.Original)
	if err != nil {
		return request.Request{}, fmt.Errorf("entry %d (%s) cannot be replayed: its original is not a request: %w", s.Seq, s.Entry.Reason, err)
	}
	ttl := r.ttl
	if ttl <= 0 {
		ttl = orig.TTL()
	}
	return request.Request{
		V: request.Version, ID: ReplayID(s), Created: r.now(), TTLms: ttl.Milliseconds(),
		Payload: orig.Payload, ReplayOf: orig.ID,
	}, nil
}

// Replay publishes the replaying request of s, waits for the requests stream to
// store it, and only then removes the entry from the graveyard.
func (r *Replayer) Replay(ctx context.Context, s Stored) (request.Request, error) {
	req, err := r.Plan(s)
	if err != nil {
		return req, err
	}
	data, err := req.Encode()
	if err != nil {
		return req, err
	}
	msg := nats.NewMsg(r.subject)
	msg.Data = data
	if _, err := r.g.js.PublishMsg(ctx, msg, jetstream.WithMsgID(req.ID)); err != nil {
		return req, fmt.Errorf("replay entry %d: publish: %w (the entry stays in the graveyard)", s.Seq, err)
	}
	st, err := r.g.js.Stream(ctx, r.g.stream)
	if err != nil {
		return req, fmt.Errorf("replay entry %d: published as %s, but the entry could not be removed: %w", s.Seq, req.ID, err)
	}
	if err := st.DeleteMsg(ctx, s.Seq); err != nil && !gone(ctx, st, s.Seq) {
		return req, fmt.Errorf("replay entry %d: published as %s, but the entry could not be removed: %w", s.Seq, req.ID, err)
	}
	return req, nil
}

// gone reports whether the entry at seq is no longer there, as when a replay is
// repeated (the server's answer to deleting a missing message wraps no sentinel).
func gone(ctx context.Context, st jetstream.Stream, seq uint64) bool {
	_, err := st.GetMsg(ctx, seq)
	return errors.Is(err, jetstream.ErrMsgNotFound)
}
