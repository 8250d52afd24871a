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

	"github.com/ratefleet/ratefleet/wire"
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
	IDs    map[string]bool // request ids (any id an entry carries, see Entry.IDs) or graveyard sequence numbers
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
	case len(f.IDs) > 0 && !f.matchID(s):
		return false
	}
	return true
}

func (f Filter) matchID(s Stored) bool {
	if f.IDs[strconv.FormatUint(s.Seq, 10)] {
		return true
	}
	for _, id := range s.Entry.IDs() {
		if f.IDs[id] {
			return true
		}
	}
	return false
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
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return Stored{}, fmt.Errorf("graveyard entry %d: %w (list them with `graveyard ls`)", seq, ErrNoEntry)
	}
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

	// Ledger, when set, makes a replay stored once for as long as the ledger
	// remembers it (its bucket's max_age), not only within the requests
	// stream's duplicate window.
	Ledger *Ledger
	// DuplicateWindow is the requests stream's duplicate_window: an unconfirmed
	// replay is published again only within it. 2 minutes when 0.
	DuplicateWindow time.Duration
	// Served, when set, reports whether owner's request stored at seq under id has
	// a served result: the server may give up on a delivery whose send then
	// succeeded, so an entry may stand for a request served after all, which a
	// replay would do twice. Such entries are refused (ErrServed).
	Served func(ctx context.Context, owner wire.Owner, id string, seq uint64) (bool, error)
}

// ErrServed: the entry's request was served after all; replaying it would do
// it twice. Remove the entry (graveyard rm) once its result is read.
var ErrServed = errors.New("its request was served after all")

// Check returns ErrServed, wrapped, when s's request was served after all.
func (r *Replayer) Check(ctx context.Context, s Stored) error {
	if r.Served == nil || s.Entry.RequestID == "" {
		return nil
	}
	served, err := r.Served(ctx, s.Entry.Owner, s.Entry.RequestID, s.Entry.StreamSeq)
	if err != nil {
		return fmt.Errorf("replay entry %d: look for a served result of %s: %w", s.Seq, s.Entry.RequestID, err)
	}
	if served {
		return fmt.Errorf("replay entry %d: %w (request %s has a served result); replaying would do it twice: read its result, then graveyard rm %d", s.Seq, ErrServed, s.Entry.RequestID, s.Seq)
	}
	return nil
}

// NewReplayer returns a replayer that publishes, with a fresh time to live, to
// the requests subject of the entry's owner under requestsSubject (the bare
// one), so the replay is the same user's request as the original.
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
// to live, the original payload, call, weight, reply subject, route and
// priority, linked to the original id.
func (r *Replayer) Plan(s Stored) (wire.Request, error) {
	orig, err := wire.Decode(s.Entry.Original)
	if err != nil {
		return wire.Request{}, fmt.Errorf("entry %d (%s) cannot be replayed: its original is not a request: %w", s.Seq, s.Entry.Reason, err)
	}
	ttl := r.ttl
	if ttl <= 0 {
		ttl = orig.TTL()
	}
	rep := wire.Request{
		ID: ReplayID(s), Created: r.now(), TTLms: ttl.Milliseconds(),
		Payload: orig.Payload, ReplayOf: orig.ID,
		Call: orig.Call, Weight: orig.Weight, ReplyTo: orig.ReplyTo, Owner: s.Entry.Owner,
		Key: orig.Key, Account: orig.Account, Label: orig.Label, Priority: orig.Priority,
	}
	rep.V = rep.NeededVersion()
	return rep, nil
}

// Replay publishes the replaying request of s, waits for the requests stream to
// store it, and only then removes the entry from the graveyard. With a Ledger, a
// replay already stored (by an earlier, interrupted run) is not published again,
// and one whose storing was never confirmed is published again only within the
// duplicate window, otherwise it returns ErrReplayUnconfirmed and keeps the entry.
func (r *Replayer) Replay(ctx context.Context, s Stored) (wire.Request, error) {
	req, err := r.Plan(s)
	if err != nil {
		return req, err
	}
	if err := r.Check(ctx, s); err != nil {
		return req, err
	}
	publish, err := r.mayPublish(ctx, s, req.ID)
	if err != nil {
		return req, err
	}
	if publish {
		data, err := req.Encode()
		if err != nil {
			return req, err
		}
		msg := nats.NewMsg(req.Subject(r.subject)) // the original's route and priority

		msg.Data = data
		ack, err := r.g.js.PublishMsg(ctx, msg, jetstream.WithMsgID(req.Owner.MsgID(req.ID)))
		if err != nil {
			return req, fmt.Errorf("replay entry %d: publish: %w (the entry stays in the graveyard; replay it again)", s.Seq, err)
		}
		if r.Ledger != nil {
			if err := r.Ledger.stored(ctx, req.ID, ack.Sequence); err != nil {
				return req, fmt.Errorf("replay entry %d: published as %s: %w (the entry stays; replay it again within %s)", s.Seq, req.ID, err, r.window())
			}
		}
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

func (r *Replayer) window() time.Duration {
	if r.DuplicateWindow > 0 {
		return r.DuplicateWindow
	}
	return 2 * time.Minute
}

// mayPublish consults the ledger: false if the replay is stored already, true if
// it may be published (never noted, or noted within the duplicate window, where
// the stream stores it once).
func (r *Replayer) mayPublish(ctx context.Context, s Stored, id string) (bool, error) {
	if r.Ledger == nil {
		return true, nil
	}
	for range 3 {
		m, since, rev, err := r.Ledger.state(ctx, id)
		if err != nil {
			return false, fmt.Errorf("replay entry %d: %w (the entry stays in the graveyard)", s.Seq, err)
		}
		switch {
		case rev == 0:
			err := r.Ledger.begin(ctx, id)
			if errors.Is(err, jetstream.ErrKeyExists) {
				continue // another run noted it meanwhile: read again
			}
			if err != nil {
				return false, fmt.Errorf("replay entry %d: %w (the entry stays in the graveyard)", s.Seq, err)
			}
			return true, nil
		case m.Stored:
			return false, nil
		case r.now().Sub(since) < r.window()-min(10*time.Second, r.window()/4):
			return true, nil
		default:
			return false, fmt.Errorf("replay entry %d: %w: it was published as %s at %s without confirmation; "+
				"if request %s was not served, remove the entry and publish it afresh", s.Seq, ErrReplayUnconfirmed, id, since.Format(time.RFC3339), id)
		}
	}
	return false, fmt.Errorf("replay entry %d: the ledger entry of %s keeps changing: is another replay running?", s.Seq, id)
}

// gone reports whether the entry at seq is no longer there, as when a replay is
// repeated (the server's answer to deleting a missing message wraps no sentinel).
func gone(ctx context.Context, st jetstream.Stream, seq uint64) bool {
	_, err := st.GetMsg(ctx, seq)
	return errors.Is(err, jetstream.ErrMsgNotFound)
}
