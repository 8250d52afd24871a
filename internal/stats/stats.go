// Package stats defines the report each worker publishes every second and the
// recorder that builds it. Counters in a report are cumulative since the worker
// started, so a reader that keeps each worker's last report can sum a fleet's totals
// exactly, including workers that have since gone, and never sees a counter fall.
package stats

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"sync"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/ratefleet/ratefleet/wire"
)

// Version is the report schema version.
const Version = 1

// SubjectPrefix is followed by ".<worker id>" in a report's subject; the stats stream
// of streams.yaml must cover it.
const SubjectPrefix = "ratefleet.stats.worker"

// Subject returns the subject a worker's reports are published on.
func Subject(workerID string) string { return SubjectPrefix + "." + workerID }

// Results a worker counts. Each request attempt ends in exactly one of them.
const (
	ResultOK            = "ok"                     // 200: acknowledged
	ResultRateLimited   = "rate_limited"           // 429: NAKed, the limiter was told
	ResultBadNonce      = "bad_nonce"              // 400: NAKed, the nonce moved on
	ResultServerError   = "server_error"           // the upstream's own 5xx: NAKed with backoff
	ResultGatewayError  = "gateway_error"          // an answer not in the upstream's format (a proxy's 5xx, a redirect): NAKed with backoff
	ResultFenced        = "fenced"                 // not sent: the lease could no longer cover it; NAKed at once
	ResultTimeout       = "timeout"                // no answer in time: outcome unknown, NAKed
	ResultConnError     = "conn_error"             // the request did not get through: NAKed
	ResultKeyUnusable   = "key_unusable"           // 401 or blocked: NAKed, key released
	ResultExpired       = wire.ReasonExpired       // stale before it could be sent: buried
	ResultMalformed     = wire.ReasonMalformed     // could not be decoded: buried
	ResultNotAllowed    = wire.ReasonNotAllowed    // a call the upstream profile does not list: buried, never sent
	ResultMaxDeliveries = wire.ReasonMaxDeliveries // last allowed delivery failed: buried
	ResultBuryFailed    = "bury_failed"            // the graveyard refused an entry: the request stays queued
	ResultPullError     = "pull_error"             // a pull request failed (not an attempt: counted without a key)
	ResultAckFailed     = "ack_failed"             // a request answered 200 whose result could not be written, or whose ack could not be sent: delivered again, and sent again unless its result is found (not an attempt)
)

// AttemptResults lists the results of a try at sending a request on a key, each
// counted once per try. The other results (expired, malformed, not_allowed,
// buried, bury_failed, pull_error) are what became of a request, or of a pull,
// not attempts.
func AttemptResults() []string {
	return []string{ResultOK, ResultRateLimited, ResultBadNonce, ResultServerError, ResultGatewayError,
		ResultFenced, ResultTimeout, ResultConnError, ResultKeyUnusable}
}

// Latency histograms track 1 ms to 10 minutes with 3 significant digits.
const (
	latencyMin     = 1
	latencyMax     = 600_000
	latencyDigits  = 3
	encodingCookie = hdrhistogram.V2CompressedEncodingCookieBase
)

// Report is one worker's state, published every second.
type Report struct {
	V        int       `json:"v"`
	Worker   string    `json:"worker"`
	Host     string    `json:"host,omitempty"`
	PID      int       `json:"pid,omitempty"`
	Started  time.Time `json:"started"`
	At       time.Time `json:"at"`
	Seq      uint64    `json:"seq"`
	Stopped  bool      `json:"stopped,omitempty"` // the last report of a worker that shut down
	InFlight int       `json:"in_flight"`
	// Results counts attempts by result (the Result constants).
	Results map[string]uint64 `json:"results"`
	// Latency is the HDR histogram of created-to-answered milliseconds of requests
	// answered 200, in the compressed HdrHistogram V2 encoding.
	Latency []byte `json:"latency,omitempty"`
	// Keys are the keys this worker holds now or has held.
	Keys []KeyReport `json:"keys,omitempty"`
}

// KeyReport is one key's part of a worker's report. Keys are named by name and
// fingerprint only, never by their secret.
type KeyReport struct {
	Name        string    `json:"name"`
	Fingerprint string    `json:"fingerprint"`
	Held        bool      `json:"held"`
	Since       time.Time `json:"since,omitzero"`
	Sent        uint64    `json:"sent"`
	OK          uint64    `json:"ok"`
	RateLimited uint64    `json:"rate_limited"`
	BadNonce    uint64    `json:"bad_nonce"`
	// Results counts this key's attempts (and requests it let expire) by result.
	Results map[string]uint64 `json:"results,omitempty"`
	// Limiter state: the largest one-way delay assumed, the next free send slot.
	MaxDelayMs float64 `json:"max_delay_ms"`
	// What the limiter learned from evidence: the order rule's delay, how late
	// this process has been of late, and how many answers proved L wrong (round
	// trips over 2 L + tolerance) or were nonce inversions (400s).
	OrderDelayMs float64 `json:"order_delay_ms,omitempty"`
	LagMs        float64 `json:"lag_ms,omitempty"`
	Outliers     uint64  `json:"outliers,omitempty"`
	Inversions   uint64  `json:"inversions,omitempty"`
	// Answers counts the answers this holder's limiter had, and BusyAnswers
	// those that came while the machine counted as busy: each of those bounded
	// its own request, which is why a key runs below its bound on a loaded
	// machine (package limiter).
	Answers     uint64    `json:"answers,omitempty"`
	BusyAnswers uint64    `json:"busy_answers,omitempty"`
	NextFree    time.Time `json:"next_free,omitzero"`
	Quarantined bool      `json:"quarantined,omitempty"`
	// Count429Lifetime is the key's 429 count across every holder, from key state:
	// the ban guard trips on it.
	Count429Lifetime int `json:"count_429_lifetime,omitempty"`
}

// DecodeLatency returns the report's latency histogram (empty when it has none).
func (r Report) DecodeLatency() (*hdrhistogram.Histogram, error) {
	if len(r.Latency) == 0 {
		return NewLatencyHistogram(), nil
	}
	h, err := hdrhistogram.Decode(r.Latency)
	if err != nil {
		return nil, fmt.Errorf("decode latency of worker %s: %w", r.Worker, err)
	}
	return h, nil
}

// NewLatencyHistogram returns an empty histogram with the geometry reports use.
func NewLatencyHistogram() *hdrhistogram.Histogram {
	return hdrhistogram.New(latencyMin, latencyMax, latencyDigits)
}

// Recorder collects one worker's counts; it is safe for concurrent use.
type Recorder struct {
	worker  string
	host    string
	pid     int
	started time.Time

	mu       sync.Mutex
	seq      uint64
	results  map[string]uint64
	latency  *hdrhistogram.Histogram
	encoded  []byte // latency, encoded; nil when it changed since
	keys     map[string]*KeyReport
	order    []string
	inFlight int
}

// NewRecorder returns a recorder for the named worker, started at now.
func NewRecorder(worker, host string, pid int, now time.Time) *Recorder {
	return &Recorder{
		worker: worker, host: host, pid: pid, started: now,
		results: map[string]uint64{},
		latency: NewLatencyHistogram(),
		keys:    map[string]*KeyReport{},
	}
}

// Count adds one attempt with the given result, on the named key ("" when the
// attempt never reached a key).
func (r *Recorder) Count(key, result string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.results[result]++
	if k, ok := r.keys[key]; ok {
		if k.Results == nil {
			k.Results = map[string]uint64{}
		}
		k.Results[result]++
		switch result {
		case ResultOK:
			k.OK++
		case ResultRateLimited:
			k.RateLimited++
		case ResultBadNonce:
			k.BadNonce++
		}
	}
}

// Sent counts one request sent on the named key.
func (r *Recorder) Sent(key string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if k, ok := r.keys[key]; ok {
		k.Sent++
	}
}

// Latency records the created-to-answered time of a request answered 200.
func (r *Recorder) Latency(d time.Duration) {
	ms := max(d.Milliseconds(), latencyMin)
	r.mu.Lock()
	defer r.mu.Unlock()
	_ = r.latency.RecordValue(min(ms, latencyMax))
	r.encoded = nil
}

// InFlight adds delta to the number of requests this worker holds.
func (r *Recorder) InFlight(delta int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.inFlight += delta
}

// Key updates the state of one key; the function is called with the key's report
// under the recorder's lock, creating it on first use.
func (r *Recorder) Key(name string, update func(*KeyReport)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k, ok := r.keys[name]
	if !ok {
		k = &KeyReport{Name: name}
		r.keys[name] = k
		r.order = append(r.order, name)
	}
	update(k)
}

// Report returns a snapshot of the counts as of now.
func (r *Recorder) Report(now time.Time) (Report, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.encoded == nil {
		// Encoding compresses the whole histogram: done only when it changed, so
		// an idle worker's report costs little.
		lat, err := r.latency.Encode(encodingCookie)
		if err != nil {
			return Report{}, fmt.Errorf("encode latency histogram: %w", err)
		}
		r.encoded = lat
	}
	lat := r.encoded
	r.seq++
	rep := Report{
		V: Version, Worker: r.worker, Host: r.host, PID: r.pid, Started: r.started, At: now, Seq: r.seq,
		InFlight: r.inFlight, Results: maps.Clone(r.results), Latency: lat,
	}
	for _, name := range r.order {
		k := *r.keys[name]
		k.Results = maps.Clone(k.Results)
		rep.Keys = append(rep.Keys, k)
	}
	return rep, nil
}

// LastReports reads the last report of every worker from the stats stream.
func LastReports(ctx context.Context, js jetstream.JetStream, stream string) ([]Report, error) {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("read stats stream: %w", err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(SubjectPrefix+".>"))
	if err != nil {
		return nil, fmt.Errorf("read stats stream: %w", err)
	}
	var out []Report
	for subj := range info.State.Subjects {
		m, err := st.GetLastMsgForSubject(ctx, subj)
		if err != nil {
			return nil, fmt.Errorf("read stats of %s: %w", subj, err)
		}
		var r Report
		if err := json.Unmarshal(m.Data, &r); err != nil {
			return nil, fmt.Errorf("decode stats of %s: %w", subj, err)
		}
		out = append(out, r)
	}
	return out, nil
}
