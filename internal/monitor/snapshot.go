package monitor

import (
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// Snapshot is the fleet at one instant: plain values, safe to copy and to encode as
// JSON, except Histogram which is shared and must not be modified.
type Snapshot struct {
	// At is when the snapshot was taken, by the collector's clock.
	At time.Time `json:"at"`
	// Elapsed is the time since the collector was created.
	Elapsed time.Duration `json:"elapsed_ns"`
	// Replaying is true until the collector has read the last report of every
	// worker the stats stream held when it started; totals may still rise by
	// whole workers and throughput is not measured yet.
	Replaying bool `json:"replaying,omitempty"`
	// Final marks the last snapshot of a monitor that is stopping.
	Final bool `json:"final,omitempty"`

	// Results counts request attempts by result (the stats.Result constants),
	// summed over every worker ever seen.
	Results map[string]uint64 `json:"results"`
	// Successful is the number of requests answered 200.
	Successful uint64 `json:"successful"`
	// Failed is the number of requests given up on: the entries in the graveyard,
	// whatever the reason. A request replayed from the graveyard leaves it.
	Failed uint64 `json:"failed"`
	// FailedAttempts counts attempts that did not succeed, by result: the requests
	// behind most of them were retried, so they are not requests lost.
	FailedAttempts map[string]uint64 `json:"failed_attempts"`

	Throughput Throughput `json:"throughput"`
	Latency    Latency    `json:"latency"`
	Queue      Queue      `json:"queue"`
	Keys       []Key      `json:"keys"`
	Workers    []Worker   `json:"workers"`

	// Errors lists the state that could not be read for this snapshot; the
	// corresponding fields hold zero values.
	Errors []string `json:"errors,omitempty"`

	// Histogram holds the created-to-answered milliseconds of every successful
	// request, merged over all workers; the metrics exporter builds its buckets
	// from it.
	Histogram *hdrhistogram.Histogram `json:"-"`
}

// Throughput is successful requests a second over three windows, each the
// difference of the successful totals at its two ends divided by the time between
// them. A window longer than the monitor's life covers what there is.
type Throughput struct {
	Last5s     float64 `json:"last_5s"`
	LastMinute float64 `json:"last_minute"`
	SinceStart float64 `json:"since_start"`
}

// Latency summarises the created-to-answered time of successful requests, in
// milliseconds, from the merged histogram.
type Latency struct {
	Count  int64   `json:"count"`
	MeanMs float64 `json:"mean_ms"`
	P50Ms  int64   `json:"p50_ms"`
	P90Ms  int64   `json:"p90_ms"`
	P99Ms  int64   `json:"p99_ms"`
	MaxMs  int64   `json:"max_ms"`
}

// Queue is the state of the work queue and of the graveyard.
type Queue struct {
	// Stored is the number of messages in the requests stream: those waiting,
	// those delivered and not yet acknowledged, and those left behind after their
	// last delivery until the graveyard keeper removes them.
	Stored uint64 `json:"stored"`
	// Waiting is the main queue: requests never delivered yet.
	Waiting uint64 `json:"waiting"`
	// AwaitingAck is requests delivered to a worker and not yet acknowledged.
	AwaitingAck uint64 `json:"awaiting_ack"`
	// Redelivery is the retry queue (the DLQ of the text block): requests
	// delivered more than once and not yet acknowledged.
	Redelivery uint64 `json:"redelivery"`
	// Graveyard is the number of requests given up on, and GraveyardByReason the
	// same split by the reason in their subject (ratefleet.graveyard.<reason>).
	Graveyard         uint64            `json:"graveyard"`
	GraveyardByReason map[string]uint64 `json:"graveyard_by_reason"`
	// Average holds the time-weighted averages since the monitor started.
	Average QueueAverage `json:"average"`
}

// QueueAverage holds the time-weighted averages of the queue sizes, over the
// snapshots whose queue state could be read.
type QueueAverage struct {
	Waiting     float64 `json:"waiting"`
	AwaitingAck float64 `json:"awaiting_ack"`
	Redelivery  float64 `json:"redelivery"`
	Graveyard   float64 `json:"graveyard"`
}

// Key states, from the most to the least pressing.
const (
	KeyUnusable    = "unusable"    // the key-state bucket says no worker may use it
	KeyQuarantined = "quarantined" // a worker's ban guard stopped sending on it
	KeyHeld        = "held"        // a worker holds its lease
	KeyFree        = "free"        // no one holds it
)

// Key is one API key: who holds it, from the lease bucket, and what the workers
// that held it report, summed over them.
type Key struct {
	Name  string `json:"name"`
	State string `json:"state"` // one of the Key constants
	// Holder, Since and Fingerprint come from the lease entry.
	Holder      string    `json:"holder,omitempty"`
	Since       time.Time `json:"since,omitzero"`
	Fingerprint string    `json:"fingerprint,omitempty"`
	Sent        uint64    `json:"sent"`
	OK          uint64    `json:"ok"`
	RateLimited uint64    `json:"rate_limited"`
	BadNonce    uint64    `json:"bad_nonce"`
	// MaxDelayMs (the limiter's L) and NextFree (its next free send slot) come from
	// the report of the current holder, or else the latest report of the key.
	MaxDelayMs  float64   `json:"max_delay_ms"`
	NextFree    time.Time `json:"next_free,omitzero"`
	Quarantined bool      `json:"quarantined,omitempty"`
	Unusable    bool      `json:"unusable,omitempty"`
	Reason      string    `json:"reason,omitempty"` // why it is unusable
}

// Worker states.
const (
	WorkerActive  = "active"  // reporting, and holds at least one key
	WorkerStandby = "standby" // reporting, and holds no key
	WorkerStopped = "stopped" // sent its last report and shut down
	WorkerSilent  = "silent"  // no report for longer than the silence limit
)

// Worker is one worker process, as its latest report describes it.
type Worker struct {
	ID         string    `json:"id"`
	State      string    `json:"state"` // one of the Worker constants
	Host       string    `json:"host,omitempty"`
	PID        int       `json:"pid,omitempty"`
	Started    time.Time `json:"started"`
	LastReport time.Time `json:"last_report"`
	Keys       []string  `json:"keys,omitempty"` // the keys it holds
	InFlight   int       `json:"in_flight"`
	Successful uint64    `json:"successful"`
}
