// Package graveyard keeps the requests ratefleet gave up on: each entry holds the
// original message as it was published, the reason, the delivery count and the
// record of every attempt, so it can be inspected and replayed.
//
// Entries are published to the graveyard stream on <prefix>.<reason>. The body is
// the original message byte for byte; the rest of the entry (reason, attempts,
// where the original was) is compact JSON in the Ratefleet-Entry header, bounded
// to MetaLimit. So an entry is at most the original plus EntryOverhead, and any
// request the requests stream accepted can be buried as long as its max_msg_size
// leaves that much room under the server's max payload (streams.Config
// CheckPayload).
//
// The Nats-Msg-Id is derived from the original's stream, sequence and stored
// time, so burying the same message twice (a retry, or a worker and the keeper
// racing) stores it once, and a message of a recreated requests stream, whose
// sequences start again at 1, never collides with an older entry. A request is
// acknowledged in the requests stream only after its entry is stored: if the
// graveyard cannot take it, the original stays where it is.
package graveyard

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ratefleet/ratefleet/wire"
)

// Version is the entry schema version. Version 1 entries (the whole entry as
// JSON in the body, the original base64-encoded in it) are still read.
const Version = 2

// Size bounds of an entry beyond its original.
const (
	// MetaLimit bounds the Ratefleet-Entry header: attempts' messages are cut
	// and, if need be, middle attempts dropped to fit.
	MetaLimit = 48 << 10
	// EntryOverhead is what an entry may add to its original: the metadata
	// header, the other headers and the subject. The requests stream's
	// max_msg_size must leave this much under the server's max payload.
	EntryOverhead = 64 << 10
)

// Headers set on every entry, for filtering without decoding.
const (
	HeaderReason    = "Ratefleet-Reason"
	HeaderRequestID = "Ratefleet-Request-Id"
	// HeaderEntry holds the entry without its original, as JSON.
	HeaderEntry = "Ratefleet-Entry"
)

// Attempt is the record of one try at sending a request.
type Attempt struct {
	At       time.Time `json:"at"`
	Delivery uint64    `json:"delivery"`
	Worker   string    `json:"worker,omitempty"`
	Key      string    `json:"key,omitempty"` // the key's name, never its secret
	Status   int       `json:"status,omitempty"`
	Result   string    `json:"result"`
	Error    string    `json:"error,omitempty"`
	// Unknown is set when the request left but no answer came back: the upstream
	// may or may not have processed it.
	Unknown bool `json:"unknown,omitempty"`
	// RetryAfter is the upstream's Retry-After with the answer, if any: the
	// request is not tried again before it.
	RetryAfter time.Duration `json:"retry_after_ns,omitempty"`
}

// Entry is one buried request.
type Entry struct {
	V         int    `json:"v"`
	Reason    string `json:"reason"`
	RequestID string `json:"request_id,omitempty"`
	// Owner is the NATS user whose request it is (wire.Owner): its result goes
	// to that user's subjects, and a replay is published as that user's.
	Owner wire.Owner `json:"owner,omitempty"`
	// Original is the message exactly as it was published. It is the entry's
	// body; only version 1 entries carry it in their JSON.
	Original []byte `json:"original,omitempty"`
	// Stream and StreamSeq locate the original in the requests stream, and
	// Stored is when that stream stored it (with the sequence, it names the
	// message across a recreation of the stream).
	Stream     string    `json:"stream"`
	StreamSeq  uint64    `json:"stream_seq"`
	Stored     time.Time `json:"stored,omitzero"`
	Deliveries uint64    `json:"deliveries"`
	Attempts   []Attempt `json:"attempts,omitempty"`
	Error      string    `json:"error,omitempty"`
	Worker     string    `json:"worker,omitempty"`
	Key        string    `json:"key,omitempty"`
	BuriedAt   time.Time `json:"buried_at"`
}

// Graveyard writes entries to the graveyard stream.
type Graveyard struct {
	js     jetstream.JetStream
	stream string
	prefix string
}

// New returns a graveyard writing to stream, whose first subject is filter, such
// as ratefleet.graveyard.>.
func New(js jetstream.JetStream, stream, filter string) (*Graveyard, error) {
	prefix, ok := strings.CutSuffix(filter, ".>")
	if !ok {
		return nil, fmt.Errorf("graveyard stream %s: subject %q must end in .> (entries go to <prefix>.<reason>)", stream, filter)
	}
	return &Graveyard{js: js, stream: stream, prefix: prefix}, nil
}

// Subject returns the subject of entries buried for reason.
func (g *Graveyard) Subject(reason string) string { return g.prefix + "." + reason }

// Bury stores e and returns once the graveyard stream has acknowledged it. A
// second bury of the same original (same stream, sequence and stored time) is
// stored once and answers nil.
func (g *Graveyard) Bury(ctx context.Context, e Entry) error {
	e.V = Version
	meta, err := encodeMeta(e)
	if err != nil {
		return fmt.Errorf("bury request %s: %w", e.RequestID, err)
	}
	msg := nats.NewMsg(g.Subject(e.Reason))
	msg.Data = e.Original
	msg.Header.Set(HeaderEntry, string(meta))
	msg.Header.Set(HeaderReason, e.Reason)
	if e.RequestID != "" {
		msg.Header.Set(HeaderRequestID, e.RequestID)
	}
	_, err = g.js.PublishMsg(ctx, msg, jetstream.WithMsgID(EntryID(e)), jetstream.WithExpectStream(g.stream))
	if err != nil {
		return fmt.Errorf("bury request %s (seq %d, %s, %d bytes): %w", e.RequestID, e.StreamSeq, e.Reason, len(e.Original), err)
	}
	return nil
}

// EntryID is the graveyard's Nats-Msg-Id for e: the original's stream, sequence
// and stored time. The stored time tells apart two messages with the same
// sequence in successive incarnations of the requests stream.
func EntryID(e Entry) string {
	id := "grave-" + e.Stream + "-" + strconv.FormatUint(e.StreamSeq, 10)
	if !e.Stored.IsZero() {
		id += "-" + strconv.FormatInt(e.Stored.UnixNano(), 36)
	}
	return id
}

// encodeMeta returns e without its original as JSON of at most MetaLimit bytes,
// cutting long messages and then middle attempts (the count of dropped ones is
// noted in Error) until it fits.
func encodeMeta(e Entry) ([]byte, error) {
	e.Original = nil
	e.Error = cut(e.Error, 4096)
	e.Attempts = slices.Clone(e.Attempts)
	for i := range e.Attempts {
		e.Attempts[i].Error = cut(e.Attempts[i].Error, 512)
	}
	dropped := 0
	for {
		data, err := json.Marshal(e)
		if err != nil {
			return nil, fmt.Errorf("encode entry: %w", err)
		}
		if len(data) <= MetaLimit {
			return data, nil
		}
		if len(e.Attempts) <= 2 {
			return nil, fmt.Errorf("encode entry: %d bytes of metadata exceed %d", len(data), MetaLimit)
		}
		mid := len(e.Attempts) / 2
		e.Attempts = slices.Delete(e.Attempts, mid, mid+1)
		dropped++
		e.Error = strings.TrimSuffix(e.Error, fmt.Sprintf(" (%d attempts left out)", dropped-1)) + fmt.Sprintf(" (%d attempts left out)", dropped)
	}
}

// cut shortens s to at most n bytes, on a rune boundary, marking the cut.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s + "…"
}

// DecodeMsg parses a stored entry from its headers and body.
func DecodeMsg(h nats.Header, data []byte) (Entry, error) {
	meta := h.Get(HeaderEntry)
	if meta == "" {
		return Decode(data)
	}
	var e Entry
	if err := json.Unmarshal([]byte(meta), &e); err != nil {
		return Entry{}, fmt.Errorf("decode graveyard entry: %s header: %w", HeaderEntry, err)
	}
	e.Original = data
	return e, nil
}

// Decode parses a version 1 entry, stored whole as JSON in the body.
func Decode(data []byte) (Entry, error) {
	var e Entry
	if err := json.Unmarshal(data, &e); err != nil {
		return Entry{}, fmt.Errorf("decode graveyard entry: %w", err)
	}
	return e, nil
}
