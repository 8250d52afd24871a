package monitor

import (
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// latencyBuckets are the upper bounds, in seconds, of the latency histogram.
var latencyBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// Metrics exposes the latest snapshot in the Prometheus exposition format. It is
// safe for concurrent use: Set replaces the snapshot a scrape reads.
type Metrics struct {
	mu      sync.Mutex
	snap    *Snapshot
	history []Point // the last historyLen snapshots, oldest first, for the page's charts

	requests, keySent, keyOK, key429, key400 *prometheus.Desc
	latency, queue, graveyard, rate, keyL    *prometheus.Desc
	keyHeld, keyFree, workers                *prometheus.Desc
}

// NewMetrics returns an empty exporter.
func NewMetrics() *Metrics {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("ratefleet_"+name, help, labels, nil)
	}
	return &Metrics{
		requests:  d("requests_total", "Request attempts by result, summed over every worker ever seen.", "result"),
		latency:   d("request_latency_seconds", "Created-to-answered time of requests answered 200."),
		queue:     d("queue_messages", "Requests in the work queue by state.", "state"),
		graveyard: d("graveyard_messages", "Requests in the graveyard by reason.", "reason"),
		rate:      d("throughput_requests_per_second", "Successful requests a second over a window.", "window"),
		keySent:   d("key_sent_total", "Requests sent per key.", "key"),
		keyOK:     d("key_ok_total", "Requests answered 200 per key.", "key"),
		key429:    d("key_rate_limited_total", "429 answers per key.", "key"),
		key400:    d("key_bad_nonce_total", "400 answers per key.", "key"),
		keyL:      d("key_max_delay_seconds", "The one-way delay the key's limiter assumes.", "key"),
		keyHeld:   d("key_held", "1 while a worker holds the key's lease.", "key", "holder"),
		keyFree:   d("key_next_free_seconds", "Seconds until the key's limiter allows its next send, as of the snapshot.", "key"),
		workers:   d("workers", "Workers by state.", "state"),
	}
}

// historyLen bounds the history the page's charts start from: five minutes at one
// snapshot a second.
const historyLen = 300

// Point is the part of a snapshot the page charts.
type Point struct {
	At         time.Time         `json:"at"`
	Rate5s     float64           `json:"rate5s"`
	P50        int64             `json:"p50"`
	P99        int64             `json:"p99"`
	Waiting    uint64            `json:"waiting"`
	Redelivery int               `json:"redelivery"`
	Graveyard  uint64            `json:"graveyard"`
	KeyOK      map[string]uint64 `json:"key_ok"`
}

// Set makes s the snapshot scrapes read, and adds it to the history.
func (m *Metrics) Set(s Snapshot) {
	p := Point{At: s.At, Rate5s: s.Rate5s, P50: s.LatencyP50, P99: s.LatencyP99, Waiting: s.Queue.Waiting,
		Redelivery: s.Queue.Redelivery, Graveyard: s.Queue.Graveyard, KeyOK: map[string]uint64{}}
	for _, k := range s.Keys {
		p.KeyOK[k.Name] = k.OK
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.snap = &s
	m.history = append(m.history, p)
	if len(m.history) > historyLen {
		m.history = m.history[len(m.history)-historyLen:]
	}
}

// Handler serves /metrics.
func (m *Metrics) Handler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(m)
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.requests, m.latency, m.queue, m.graveyard, m.rate, m.keySent, m.keyOK, m.key429, m.key400, m.keyL, m.keyHeld, m.keyFree, m.workers} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	s := m.snap
	m.mu.Unlock()
	if s == nil {
		return
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	results := make([]string, 0, len(s.Results))
	for r := range s.Results {
		results = append(results, r)
	}
	sort.Strings(results)
	for _, r := range results {
		counter(m.requests, float64(s.Results[r]), r)
	}
	if s.Latency != nil {
		buckets := make(map[float64]uint64, len(latencyBuckets))
		for _, b := range latencyBuckets {
			buckets[b] = 0
		}
		var count uint64
		for _, bar := range s.Latency.Distribution() {
			if bar.Count == 0 {
				continue
			}
			count += uint64(bar.Count)
			upper := float64(bar.To) / 1000 // ms to s
			for _, b := range latencyBuckets {
				if upper <= b {
					buckets[b] += uint64(bar.Count)
				}
			}
		}
		sum := s.Latency.Mean() * float64(count) / 1000
		ch <- prometheus.MustNewConstHistogram(m.latency, count, sum, buckets)
	}
	gauge(m.queue, float64(s.Queue.Waiting), "waiting")
	gauge(m.queue, float64(s.Queue.AwaitingAck), "awaiting_ack")
	gauge(m.queue, float64(s.Queue.Redelivery), "redelivery")
	for reason, n := range s.Queue.ByReason {
		gauge(m.graveyard, float64(n), reason)
	}
	gauge(m.rate, s.Rate5s, "5s")
	gauge(m.rate, s.Rate1m, "1m")
	gauge(m.rate, s.RateAll, "since_start")
	for _, k := range s.Keys {
		counter(m.keySent, float64(k.Sent), k.Name)
		counter(m.keyOK, float64(k.OK), k.Name)
		counter(m.key429, float64(k.RateLimited), k.Name)
		counter(m.key400, float64(k.BadNonce), k.Name)
		gauge(m.keyL, k.MaxDelayMs/1000, k.Name)
		if k.Holder != "" {
			gauge(m.keyHeld, 1, k.Name, k.Holder)
			if !k.NextFree.IsZero() {
				gauge(m.keyFree, max(k.NextFree.Sub(s.At).Seconds(), 0), k.Name)
			}
		}
	}
	states := map[string]int{"active": 0, "standby": 0, "stopped": 0, "silent": 0}
	for _, w := range s.Workers {
		states[w.State]++
	}
	for st, n := range states {
		gauge(m.workers, float64(n), st)
	}
}
