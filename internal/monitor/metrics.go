package monitor

import (
	"net/http"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ratefleet/ratefleet/internal/cli"
	"github.com/ratefleet/ratefleet/internal/stats"
	"github.com/ratefleet/ratefleet/wire"
)

// latencyBuckets are the upper bounds, in seconds, of the latency histogram.
var latencyBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// buriedResults are the results that say a request was buried: each is also
// the reason it is buried with, one name end to end.
var buriedResults = []string{stats.ResultExpired, stats.ResultMalformed, stats.ResultNotAllowed, stats.ResultMaxDeliveries}

// Metrics exposes the latest snapshot in the Prometheus exposition format, by
// Prometheus's conventions: counters only for what happened (attempts by key
// and result, requests buried by reason), gauges for what is (queue, graveyard
// by reason, keys by state), a ratefleet_build_info, and the process and Go
// collectors. Once the first snapshot is in, every series of every key the fleet
// knows of (from its reports, the lease table and key state) is present, at 0
// until something happens, so alerts and rate() see it from the start. Before
// the first snapshot only the build information and the process are exposed:
// a counter shown at 0 and then at the fleet's total would read as an increase.
//
// It is safe for concurrent use: Set replaces the snapshot a scrape reads.
type Metrics struct {
	mu   sync.Mutex
	snap *Snapshot

	attempts, buried, buryFailed, pullErrors, latency *prometheus.Desc
	queue, graveyard, keys, keyState                  *prometheus.Desc
	keyL, keyBusy, key429Life, keyFree, workers       *prometheus.Desc
	buildInfo                                         *prometheus.Desc
	snapshotAge                                       *prometheus.Desc

	// Now is the clock snapshot_age_seconds is measured with; time.Now when nil.
	Now func() time.Time
}

// NewMetrics returns an empty exporter.
func NewMetrics() *Metrics {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("ratefleet_"+name, help, labels, nil)
	}
	return &Metrics{
		attempts:    d("attempts_total", "Tries at sending a request, by key and result (ok, rate_limited, bad_nonce, server_error, gateway_error, fenced, timeout, conn_error, key_unusable), over every worker ever seen.", "key", "result"),
		buried:      d("requests_buried_total", "Requests given up on and written to the graveyard, by reason.", "reason"),
		buryFailed:  d("bury_failures_total", "Graveyard entries the graveyard refused; those requests stayed in the queue."),
		pullErrors:  d("pull_errors_total", "Pull requests to the work queue that failed."),
		latency:     d("request_latency_seconds", "Created-to-answered time of requests answered 200."),
		queue:       d("queue_messages", "Requests in the work queue by state: waiting (not yet delivered), awaiting_ack, retry (delivered more than once, not yet acknowledged).", "state"),
		graveyard:   d("graveyard_messages", "Requests in the graveyard by reason.", "reason"),
		keys:        d("keys", "API keys by state: held, free, quarantined (by the ban guard) or unusable.", "state"),
		keyState:    d("key_state", "1 for the state the key is in (held, free, quarantined, unusable), 0 for the others.", "key", "state"),
		keyL:        d("key_max_delay_seconds", "The one-way delay L the key's limiter assumes (0 while no worker holds it).", "key"),
		keyBusy:     d("key_busy_ratio", "Share of the key's answers, since its holder took it, that came while the holder's machine counted as busy (the process late, or its cores busy): each bounded its own request, so a key with a high share runs below its bound (0 while no worker holds it).", "key"),
		key429Life:  d("key_rate_limited_lifetime", "429 answers the key got over its life, from key state: the ban guard quarantines the key at its limit. An operator may reset it.", "key"),
		keyFree:     d("key_next_free_seconds", "Seconds until the key's limiter allows its next send, as of the snapshot (0 while no worker holds it).", "key"),
		workers:     d("workers", "Workers by state: active, standby, stopped or silent.", "state"),
		buildInfo:   d("build_info", "1, labelled with the monitor's version, commit and Go version.", "version", "revision", "goversion"),
		snapshotAge: d("snapshot_age_seconds", "Seconds since the snapshot the other series come from was taken."),
	}
}

// Set makes s the snapshot scrapes read.
func (m *Metrics) Set(s Snapshot) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.snap = &s
}

// Registry returns a registry with the fleet's metrics, the process collector
// and the Go collector.
func (m *Metrics) Registry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(m, collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), collectors.NewGoCollector())
	return reg
}

// Handler serves /metrics.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry(), promhttp.HandlerOpts{})
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.attempts, m.buried, m.buryFailed, m.pullErrors, m.latency, m.queue, m.graveyard,
		m.keys, m.keyState, m.keyL, m.keyBusy, m.key429Life, m.keyFree, m.workers, m.buildInfo, m.snapshotAge} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	version, revision, goVersion := cli.BuildInfo()
	ch <- prometheus.MustNewConstMetric(m.buildInfo, prometheus.GaugeValue, 1, version, revision, goVersion)
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
	now := time.Now
	if m.Now != nil {
		now = m.Now
	}
	gauge(m.snapshotAge, max(now().Sub(s.At).Seconds(), 0))

	for _, k := range s.Keys {
		for _, r := range stats.AttemptResults() {
			counter(m.attempts, float64(k.Results[r]), k.Name, r)
		}
	}
	for _, r := range buriedResults {
		counter(m.buried, float64(s.Results[r]), r)
	}
	counter(m.buryFailed, float64(s.Results[stats.ResultBuryFailed]))
	counter(m.pullErrors, float64(s.Results[stats.ResultPullError]))
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
	gauge(m.queue, float64(s.Queue.Redelivery), "retry")
	reasons := wire.Reasons()
	for r := range s.Queue.ByReason {
		if !slices.Contains(reasons, r) {
			reasons = append(reasons, r)
		}
	}
	sort.Strings(reasons)
	for _, r := range reasons {
		gauge(m.graveyard, float64(s.Queue.ByReason[r]), r)
	}

	byState := map[string]int{}
	for _, k := range s.Keys {
		byState[k.State]++
		for _, st := range KeyStates() {
			v := 0.0
			if k.State == st {
				v = 1
			}
			gauge(m.keyState, v, k.Name, st)
		}
		gauge(m.keyL, k.MaxDelayMs/1000, k.Name)
		gauge(m.keyBusy, k.BusyShare, k.Name)
		gauge(m.key429Life, float64(k.Count429Lifetime), k.Name)
		free := 0.0
		if k.Holder != "" && !k.NextFree.IsZero() {
			free = max(k.NextFree.Sub(s.At).Seconds(), 0)
		}
		gauge(m.keyFree, free, k.Name)
	}
	for _, st := range KeyStates() {
		gauge(m.keys, float64(byState[st]), st)
	}

	workers := map[string]int{"active": 0, "standby": 0, "stopped": 0, "silent": 0}
	for _, w := range s.Workers {
		workers[w.State]++
	}
	for st, n := range workers {
		gauge(m.workers, float64(n), st)
	}
}
