package wire

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"
)

// ErrBadResult: a message on a results subject is not a result this version
// reads.
var ErrBadResult = errors.New("not a ratefleet result")

// Outcomes a Result may have.
const (
	// Served: the upstream gave its final answer (Status, Header, Body).
	Served = "served"
	// Buried: the request was given up on (Reason, Error) and is in the
	// graveyard, where it can be inspected and replayed.
	Buried = "buried"
)

// Reasons a request is buried with (Result.Reason, and its graveyard entry's).
const (
	ReasonMaxDeliveries = "max_deliveries" // its last allowed attempt failed; Error says how
	ReasonExpired       = "expired"        // stale before it could be sent; never sent
	ReasonMalformed     = "malformed"      // the message could not be decoded, or its call cannot be made
	ReasonKeyUnusable   = "key_unusable"   // no usable key is left for it
	ReasonNotAllowed    = "not_allowed"    // the profile's calls do not list its call; never sent
	ReasonCancelled     = "cancelled"      // its owner cancelled it while it was queued (CancelKey); never sent
)

// Reasons returns every reason a request may be buried for.
func Reasons() []string {
	return []string{ReasonMaxDeliveries, ReasonExpired, ReasonMalformed, ReasonKeyUnusable, ReasonNotAllowed, ReasonCancelled}
}

// ResultVersion is the version of the result record.
const ResultVersion = 1

// Result is a request's final outcome, as the worker that ended it published it.
// The same request may have more than one result, rarely: a worker that stopped
// after publishing a result and before acknowledging the request leaves it to be
// delivered again, and the next worker, which finds the result, publishes none.
// Where two results of one ID exist, they differ in Delivery; the first is the
// upstream's answer.
type Result struct {
	V int `json:"v"`
	// ID is the request's id.
	ID string `json:"id"`
	// Seq is the request's sequence in the requests stream: the stored request
	// this result ends. A request that reuses an id is another request.
	Seq uint64 `json:"seq,omitempty"`
	// Outcome is Served or Buried.
	Outcome string `json:"outcome"`
	// Status is the upstream's HTTP status, for a served request.
	Status int `json:"status,omitempty"`
	// Header holds the answer headers the profile keeps.
	Header http.Header `json:"header,omitempty"`
	// Body is the answer's body, up to the profile's limit; Truncated says
	// whether more came. A body that is not UTF-8 travels as base64 in
	// BodyBase64 instead.
	Body       string `json:"body,omitempty"`
	BodyBase64 []byte `json:"body_base64,omitempty"`
	Truncated  bool   `json:"truncated,omitempty"`
	// BodyParts, when not 0, says the body was too large for a result message
	// and travels in that many parts (PartSubject), BodySize bytes in all with
	// SHA-256 BodyDigest (unpadded base64url). The Go client reads them into
	// Body (or BodyBase64) before returning the result.
	BodyParts  int    `json:"body_parts,omitempty"`
	BodySize   int    `json:"body_size,omitempty"`
	BodyDigest string `json:"body_digest,omitempty"`
	// Reason (a graveyard reason: expired, malformed, max_deliveries, ...) and
	// Error say why a buried request was given up on.
	Reason string `json:"reason,omitempty"`
	Error  string `json:"error,omitempty"`
	// Key names the API key that sent it (never the secret); Worker the worker.
	Key    string `json:"key,omitempty"`
	Worker string `json:"worker,omitempty"`
	// Delivery is which delivery of the request ended it.
	Delivery uint64 `json:"delivery"`
	// At is when the outcome was decided.
	At time.Time `json:"at"`
}

// SetBody stores b in Body, or in BodyBase64 when it is not UTF-8.
func (r *Result) SetBody(b []byte) {
	if utf8.Valid(b) {
		r.Body, r.BodyBase64 = string(b), nil
		return
	}
	r.Body, r.BodyBase64 = "", b
}

// Bytes returns the body, whichever way it travelled.
func (r Result) Bytes() []byte {
	if r.BodyBase64 != nil {
		return r.BodyBase64
	}
	return []byte(r.Body)
}

// OK reports whether the request was served with a 2xx status.
func (r Result) OK() bool { return r.Outcome == Served && r.Status >= 200 && r.Status < 300 }

// Encode returns the result as JSON: byte for byte what encoding/json makes of
// it, written without reflection (a result is encoded for every request).
func (r Result) Encode() ([]byte, error) {
	r.V = ResultVersion
	size := 256 + len(r.ID) + len(r.Body) + len(r.BodyBase64)*4/3 + len(r.BodyDigest) + len(r.Reason) + len(r.Error) + len(r.Key) + len(r.Worker)
	for name, values := range r.Header {
		size += len(name) + 8
		for _, v := range values {
			size += len(v) + 3
		}
	}
	b := make([]byte, 0, size) // one allocation, unless much is escaped
	b = append(b, `{"v":`...)
	b = strconv.AppendInt(b, int64(r.V), 10)
	b = append(b, `,"id":`...)
	b = appendString(b, r.ID)
	if r.Seq != 0 {
		b = append(b, `,"seq":`...)
		b = strconv.AppendUint(b, r.Seq, 10)
	}
	b = append(b, `,"outcome":`...)
	b = appendString(b, r.Outcome)
	if r.Status != 0 {
		b = append(b, `,"status":`...)
		b = strconv.AppendInt(b, int64(r.Status), 10)
	}
	if len(r.Header) > 0 {
		b = append(b, `,"header":`...)
		b = appendHeader(b, r.Header)
	}
	b = appendField(b, "body", r.Body)
	if len(r.BodyBase64) > 0 {
		b = append(b, `,"body_base64":"`...)
		b = base64.StdEncoding.AppendEncode(b, r.BodyBase64)
		b = append(b, '"')
	}
	if r.Truncated {
		b = append(b, `,"truncated":true`...)
	}
	if r.BodyParts != 0 {
		b = append(b, `,"body_parts":`...)
		b = strconv.AppendInt(b, int64(r.BodyParts), 10)
	}
	if r.BodySize != 0 {
		b = append(b, `,"body_size":`...)
		b = strconv.AppendInt(b, int64(r.BodySize), 10)
	}
	b = appendField(b, "body_digest", r.BodyDigest)
	b = appendField(b, "reason", r.Reason)
	b = appendField(b, "error", r.Error)
	b = appendField(b, "key", r.Key)
	b = appendField(b, "worker", r.Worker)
	b = append(b, `,"delivery":`...)
	b = strconv.AppendUint(b, r.Delivery, 10)
	b = append(b, `,"at":`...)
	b, err := appendTime(b, r.At)
	if err != nil {
		return nil, fmt.Errorf("encode result of %s: %w", r.ID, err)
	}
	return append(b, '}'), nil
}

// appendHeader appends h as encoding/json does: names in order, each with its
// list of values (null for a nil list).
func appendHeader(b []byte, h http.Header) []byte {
	var names [8]string // a result keeps few headers: their names sorted without an allocation
	sorted := names[:0]
	for name := range h {
		sorted = append(sorted, name)
	}
	slices.Sort(sorted)
	b = append(b, '{')
	for i, name := range sorted {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, name)
		b = append(b, ':')
		values := h[name]
		if values == nil {
			b = append(b, "null"...)
			continue
		}
		b = append(b, '[')
		for j, v := range values {
			if j > 0 {
				b = append(b, ',')
			}
			b = appendString(b, v)
		}
		b = append(b, ']')
	}
	return append(b, '}')
}

// DecodeResult parses a result.
func DecodeResult(data []byte) (Result, error) {
	var r Result
	if err := json.Unmarshal(data, &r); err != nil {
		return Result{}, fmt.Errorf("%w: %v", ErrBadResult, err)
	}
	if r.V != ResultVersion || r.ID == "" {
		return Result{}, fmt.Errorf("%w: version %d, id %q (this client reads version %d)", ErrBadResult, r.V, r.ID, ResultVersion)
	}
	return r, nil
}
