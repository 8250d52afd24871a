// Package graveyard keeps the requests ratefleet gave up on: each entry holds the
// original message as it was published, the reason, the delivery count and the
// record of every attempt, so it can be inspected and replayed.
//
// Entries are published to the graveyard stream on <prefix>.<reason> with a
// Nats-Msg-Id derived from the original's stream sequence, so burying the same
// message twice (a retry, or a worker and the advisory reconciler racing) stores it
// once. A request is acknowledged in the requests stream only after its entry is
// stored: if the graveyard cannot take it, the original stays where it is.
package graveyard

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Reasons a request is buried.
const (
	ReasonMaxDeliveries = "max_deliveries" // its last allowed attempt failed
	ReasonExpired       = "expired"        // stale before it could be sent; never sent
	ReasonMalformed     = "malformed"      // the message could not be decoded
	ReasonKeyUnusable   = "key_unusable"   // no usable key is left for it
)

// Reasons returns every reason a request may be buried for.
func Reasons() []string {
	return []string{ReasonMaxDeliveries, ReasonExpired, ReasonMalformed, ReasonKeyUnusable}
}

// Version is the entry schema version.
const Version = 1

// Headers set on every entry, for filtering without decoding.
const (
	HeaderReason    = "Ratefleet-Reason"
	HeaderRequestID = "Ratefleet-Request-Id"
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
	// Original is the message exactly as it was published.
	Original []byte `json:"original"`
	// Stream and StreamSeq locate the original in the requests stream.
	Stream     string    `json:"stream"`
	StreamSeq  uint64    `json:"stream_seq"`
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

// Bury stores e and returns once the graveyard stream has acknowledged it.
func (g *Graveyard) Bury(ctx context.Context, e Entry) error {
	e.V = Version
	data, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("bury request %s: encode: %w", e.RequestID, err)
	}
	msg := nats.NewMsg(g.Subject(e.Reason))
	msg.Data = data
	msg.Header.Set(HeaderReason, e.Reason)
	if e.RequestID != "" {
		msg.Header.Set(HeaderRequestID, e.RequestID)
	}
	_, err = g.js.PublishMsg(ctx, msg,
		jetstream.WithMsgID("grave-"+e.Stream+"-"+strconv.FormatUint(e.StreamSeq, 10)),
		jetstream.WithExpectStream(g.stream))
	if err != nil {
		return fmt.Errorf("bury request %s (seq %d, %s): %w", e.RequestID, e.StreamSeq, e.Reason, err)
	}
	return nil
}

// Decode parses a stored entry.
func Decode(data []byte) (Entry, error) {
	var e Entry
	if err := json.Unmarshal(data, &e); err != nil {
		return Entry{}, fmt.Errorf("decode graveyard entry: %w", err)
	}
	return e, nil
}
