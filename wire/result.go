package wire

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
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

// Encode returns the result as JSON.
func (r Result) Encode() ([]byte, error) {
	r.V = ResultVersion
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encode result of %s: %w", r.ID, err)
	}
	return b, nil
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
