// Package monitor builds the fleet's view: it collects the workers' reports from
// the stats stream and the state of the queue, the graveyard and the key buckets
// (collect.go), and presents them (text.go).
//
// Reports carry cumulative counters, and the stats stream keeps each worker's last
// one, so totals are the sum of the latest report of every worker ever seen: a
// monitor started late sees the whole fleet, and a worker that stops keeps its
// counts. Latency percentiles come from merged HDR histograms, never from averages.
//
// Memory and work stay bounded by the live fleet: each report's histogram is
// merged into the fleet's as it arrives (its difference from the worker's last
// one), a worker silent for ForgetAfter is forgotten with its counts kept in the
// totals, and holders and key state come from watches of their buckets (work per
// change, not per key per snapshot).
package monitor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ratefleet/ratefleet/internal/keystate"
	"github.com/ratefleet/ratefleet/internal/lease"
	"github.com/ratefleet/ratefleet/internal/stats"
	"github.com/ratefleet/ratefleet/internal/streams"
)

// silentAfter is how long a worker may go without a report before it is shown as
// silent.
const silentAfter = 3 * time.Second

// DefaultForgetAfter is how long a worker may stay silent (or stopped) before the
// collector forgets it, keeping its counts in the totals.
const DefaultForgetAfter = 10 * time.Minute

// Collector gathers reports and state. It is safe for concurrent use.
type Collector struct {
	js  jetstream.JetStream
	cfg *streams.Config
	log *slog.Logger
	now func() time.Time

	started time.Time
	table   *lease.Table

	// ForgetAfter is how long a worker may stay silent before it is forgotten;
	// DefaultForgetAfter when 0. Set it before Run.
	ForgetAfter time.Duration

	mu        sync.Mutex
	reports   map[string]worker
	departed  departed             // the counts of forgotten workers
	forgotten map[string]bool      // forgotten workers, by id and start, whose reports are ignored
	merged    []int64              // the latency counts of every worker ever seen
	keyState  map[string]keyRecord // from the key-state watch
}

// worker is the latest report of one worker and its latency counts.
type worker struct {
	stats.Report
	counts []int64
}

// departed sums what forgotten workers counted.
type departed struct {
	results map[string]uint64
	keys    map[string]stats.KeyReport
}

// keyRecord is one key's state as the watch saw it, or why it cannot be read.
type keyRecord struct {
	keystate.Record
	err error
}

// New returns a collector; now is the clock (time.Now when nil).
func New(js jetstream.JetStream, cfg *streams.Config, log *slog.Logger, now func() time.Time) *Collector {
	if now == nil {
		now = time.Now
	}
	return &Collector{
		js: js, cfg: cfg, log: log, now: now, started: now(), table: lease.NewTable(),
		reports: map[string]worker{}, forgotten: map[string]bool{}, keyState: map[string]keyRecord{},
		departed: departed{results: map[string]uint64{}, keys: map[string]stats.KeyReport{}},
	}
}

// Run consumes worker reports until ctx ends.
func (c *Collector) Run(ctx context.Context) error {
	cons, err := c.js.OrderedConsumer(ctx, c.cfg.Stats.Stream.Name, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{stats.SubjectPrefix + ".>"},
		DeliverPolicy:  jetstream.DeliverLastPerSubjectPolicy,
	})
	if err != nil {
		return fmt.Errorf("monitor: read the stats stream: %w", err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		var r stats.Report
		if err := json.Unmarshal(m.Data(), &r); err != nil {
			c.log.Warn("undecodable worker report", "subject", m.Subject(), "err", err)
			return
		}
		c.Add(r)
	})
	if err != nil {
		return fmt.Errorf("monitor: read the stats stream: %w", err)
	}
	defer cc.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	if kv, err := c.js.KeyValue(ctx, c.cfg.KV.Leases.Bucket); err == nil {
		wg.Add(1)
		go func() { defer wg.Done(); c.watch(wctx, "leases", func() error { return c.table.Run(wctx, kv) }) }()
	} else {
		c.log.Warn("cannot read the lease bucket; holders will not be shown", "err", err)
	}
	if kv, err := c.js.KeyValue(ctx, c.cfg.KV.KeyState.Bucket); err == nil {
		wg.Add(1)
		go func() { defer wg.Done(); c.watch(wctx, "key state", func() error { return c.watchKeyState(wctx, kv) }) }()
	} else {
		c.log.Warn("cannot read the key-state bucket; quarantines will not be shown", "err", err)
	}
	<-ctx.Done()
	return nil
}

// watch runs a watch until ctx ends, starting it again when it ends.
func (c *Collector) watch(ctx context.Context, what string, run func() error) {
	for ctx.Err() == nil {
		if err := run(); err != nil && ctx.Err() == nil {
			c.log.Warn("watch ended; starting it again", "watch", what, "err", err)
			t := time.NewTimer(time.Second)
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			t.Stop()
		}
	}
}

// watchKeyState follows the key-state bucket.
func (c *Collector) watchKeyState(ctx context.Context, kv jetstream.KeyValue) error {
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch key state: %w", err)
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("watch key state: the watch ended")
			}
			if e == nil {
				continue
			}
			c.mu.Lock()
			if e.Operation() != jetstream.KeyValuePut {
				delete(c.keyState, e.Key())
			} else {
				var r keyRecord
				r.Record, r.err = keystate.Decode(e.Value())
				c.keyState[e.Key()] = r
			}
			c.mu.Unlock()
		}
	}
}

// Add takes one worker report, keeping only the latest of each worker, and merges
// what its latency histogram gained since that worker's previous report.
func (c *Collector) Add(r stats.Report) {
	var counts []int64
	if h, err := r.DecodeLatency(); err == nil {
		counts = h.Export().Counts
	} else {
		c.log.Warn("undecodable latency histogram in a worker report", "worker", r.Worker, "err", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now, forget := c.now(), c.forgetAfter()
	for _, w := range c.reports {
		if w.Worker != r.Worker && now.Sub(w.At) > forget {
			c.forgetLocked(w) // silent too long: its counts go to the totals
		}
	}
	if c.forgotten[forgetKey(r)] {
		return
	}
	old, ok := c.reports[r.Worker]
	if ok && old.Seq >= r.Seq && old.Started.Equal(r.Started) {
		return
	}
	if ok && !old.Started.Equal(r.Started) {
		// The same id, started anew: the old run's counts stay in the totals.
		c.forgetLocked(old)
		old = worker{}
	}
	if len(c.merged) == 0 {
		c.merged = make([]int64, len(counts))
	}
	if len(counts) != len(c.merged) {
		counts = old.counts // a histogram of another shape: keep what was merged
	} else {
		for i, n := range counts {
			var was int64
			if i < len(old.counts) {
				was = old.counts[i]
			}
			c.merged[i] += n - was
		}
	}
	c.reports[r.Worker] = worker{Report: r, counts: counts}
}

// addResults adds the counts of from to to, returning to (made when nil).
func addResults(to, from map[string]uint64) map[string]uint64 {
	if to == nil {
		to = map[string]uint64{}
	}
	for r, n := range from {
		to[r] += n
	}
	return to
}

// forgetAfter is ForgetAfter or its default.
func (c *Collector) forgetAfter() time.Duration {
	if c.ForgetAfter > 0 {
		return c.ForgetAfter
	}
	return DefaultForgetAfter
}

func forgetKey(r stats.Report) string { return r.Worker + "@" + r.Started.Format(time.RFC3339Nano) }

// forgetLocked drops w, keeping its counts in the totals; its latency stays merged.
func (c *Collector) forgetLocked(w worker) {
	for res, n := range w.Results {
		c.departed.results[res] += n
	}
	for _, kr := range w.Keys {
		d := c.departed.keys[kr.Name]
		d.Name = kr.Name
		d.Sent += kr.Sent
		d.OK += kr.OK
		d.RateLimited += kr.RateLimited
		d.BadNonce += kr.BadNonce
		d.Results = addResults(d.Results, kr.Results)
		c.departed.keys[kr.Name] = d
	}
	c.forgotten[forgetKey(w.Report)] = true
	delete(c.reports, w.Worker)
}

// latency returns the merged histogram.
func (c *Collector) latencyLocked() *hdrhistogram.Histogram {
	h := stats.NewLatencyHistogram()
	if len(c.merged) == 0 {
		return h
	}
	snap := h.Export()
	snap.Counts = slices.Clone(c.merged)
	return hdrhistogram.Import(snap)
}

// Snapshot is the fleet at one instant. Its JSON names are snake_case with the
// unit in the name.
type Snapshot struct {
	At      time.Time     `json:"at"`
	Elapsed time.Duration `json:"-"` // since the monitor started; elapsed_seconds in JSON
	// Results sums attempts and outcomes by result over every worker ever seen.
	Results    map[string]uint64 `json:"results"`
	Successful uint64            `json:"successful"`
	// Failed counts requests given up on: the graveyard's entries.
	Failed uint64 `json:"failed"`
	// Throughput of successful requests, per second.
	Rate5s  float64 `json:"rate_5s_per_second"`
	Rate1m  float64 `json:"rate_1m_per_second"`
	RateAll float64 `json:"rate_since_start_per_second"`
	// Latency, created to answered, of successful requests, in ms.
	LatencyMean float64                 `json:"latency_mean_ms"`
	LatencyP50  int64                   `json:"latency_p50_ms"`
	LatencyP99  int64                   `json:"latency_p99_ms"`
	LatMax      int64                   `json:"latency_max_ms"`
	Latency     *hdrhistogram.Histogram `json:"-"`
	Queue       Queue                   `json:"queue"`
	Keys        []Key                   `json:"keys"`
	Workers     []Worker                `json:"workers"`
}

// MarshalJSON writes the snapshot with its elapsed time in seconds.
func (s Snapshot) MarshalJSON() ([]byte, error) {
	type plain Snapshot
	return json.Marshal(struct {
		plain
		ElapsedSeconds float64 `json:"elapsed_seconds"`
	}{plain(s), s.Elapsed.Seconds()})
}

// Queue is the state of the work queue and the graveyard.
type Queue struct {
	Waiting     uint64            `json:"waiting"`      // not yet delivered
	AwaitingAck int               `json:"awaiting_ack"` // delivered, not yet acknowledged
	Redelivery  int               `json:"retry"`        // the retry queue: delivered more than once, not yet acknowledged
	Graveyard   uint64            `json:"graveyard"`
	ByReason    map[string]uint64 `json:"graveyard_by_reason"`
	// Averages since the monitor started.
	AvgWaiting    float64 `json:"avg_waiting"`
	AvgRedelivery float64 `json:"avg_retry"`
	AvgGraveyard  float64 `json:"avg_graveyard"`
	Err           string  `json:"error,omitempty"`
	// Stalled says why requests wait and nothing takes them, when that is so.
	Stalled string `json:"stalled,omitempty"`
}

// Key states, as the page, the text and ratefleet_key_state show them.
const (
	KeyHeld        = "held"        // a worker holds its lease
	KeyFree        = "free"        // known, usable, and held by no one
	KeyQuarantined = "quarantined" // the ban guard stopped it: too many 429s in its life
	KeyUnusable    = "unusable"    // refused by the upstream, or its state record is invalid
)

// KeyStates lists the key states in the order they are shown.
func KeyStates() []string { return []string{KeyHeld, KeyFree, KeyQuarantined, KeyUnusable} }

// Key is one API key's view.
type Key struct {
	Name        string    `json:"name"`
	State       string    `json:"state"` // one of KeyStates
	Holder      string    `json:"holder,omitempty"`
	Since       time.Time `json:"since,omitzero"`
	Sent        uint64    `json:"sent"`
	OK          uint64    `json:"ok"`
	RateLimited uint64    `json:"rate_limited"`
	BadNonce    uint64    `json:"bad_nonce"`
	// Results counts the key's attempts by result.
	Results    map[string]uint64 `json:"results,omitempty"`
	MaxDelayMs float64           `json:"max_delay_ms"`
	LagMs      float64           `json:"lag_ms,omitempty"`
	Evidence   uint64            `json:"evidence,omitempty"` // answers that proved L wrong, and 400s
	// BusyShare is the share of the holder's answers that came while its
	// machine counted as busy, each then bounding its own request: a key
	// with a high share runs below its bound (package limiter).
	BusyShare float64   `json:"busy_share,omitempty"`
	NextFree  time.Time `json:"next_free,omitzero"`
	Unusable  bool      `json:"unusable,omitempty"`
	Reason    string    `json:"reason,omitempty"`
	// From key state: the key's 429s over its life, whoever held it (the ban guard
	// trips on it), the delay bound it has learned, and whether the guard
	// quarantined it.
	Count429Lifetime  int     `json:"count_429_lifetime"`
	LearnedMaxDelayMs float64 `json:"learned_max_delay_ms,omitempty"`
	Quarantined       bool    `json:"quarantined,omitempty"`
}

// Worker is one worker's view.
type Worker struct {
	ID       string    `json:"id"`
	State    string    `json:"state"` // active, standby, stopped or silent
	Keys     []string  `json:"keys,omitempty"`
	InFlight int       `json:"in_flight"`
	LastSeen time.Time `json:"last_seen"`
}

// count adds what one report counted for the key.
func (k *Key) count(kr stats.KeyReport) {
	k.Sent += kr.Sent
	k.OK += kr.OK
	k.RateLimited += kr.RateLimited
	k.BadNonce += kr.BadNonce
	k.Results = addResults(k.Results, kr.Results)
}

// Snapshot reads the queue and key state from NATS and folds in the reports. It
// changes nothing: a worker silent for longer than ForgetAfter is folded in as
// forgotten (its counts in the totals, no worker entry), as Add forgets it. The
// rates and averages over time are the Sampler's.
func (c *Collector) Snapshot(ctx context.Context) Snapshot {
	now := c.now()
	s := Snapshot{At: now, Elapsed: now.Sub(c.started), Results: map[string]uint64{}}
	keys := map[string]*Key{}
	key := func(name string) *Key {
		if k, ok := keys[name]; ok {
			return k
		}
		k := &Key{Name: name}
		keys[name] = k
		return k
	}
	c.mu.Lock()
	forget := c.forgetAfter()
	s.Latency = c.latencyLocked()
	for res, n := range c.departed.results {
		s.Results[res] += n
	}
	for _, d := range c.departed.keys {
		key(d.Name).count(d)
	}
	for _, r := range c.reports {
		for res, n := range r.Results {
			s.Results[res] += n
		}
		if now.Sub(r.At) > forget {
			// Forgotten: its counts stay in the totals, as forgetLocked keeps them.
			for _, kr := range r.Keys {
				key(kr.Name).count(kr)
			}
			continue
		}
		w := Worker{ID: r.Worker, InFlight: r.InFlight, LastSeen: r.At, State: "standby"}
		for _, kr := range r.Keys {
			k := key(kr.Name)
			k.count(kr)
			if kr.Held {
				w.Keys = append(w.Keys, kr.Name)
				w.State = "active"
				k.MaxDelayMs, k.NextFree = kr.MaxDelayMs, kr.NextFree
				k.LagMs, k.Evidence = kr.LagMs, kr.Outliers+kr.Inversions
				if kr.Answers > 0 {
					k.BusyShare = float64(kr.BusyAnswers) / float64(kr.Answers)
				}
			}
		}
		switch {
		case r.Stopped:
			w.State = "stopped"
		case now.Sub(r.At) > silentAfter:
			w.State = "silent"
		}
		s.Workers = append(s.Workers, w)
	}
	c.mu.Unlock()
	s.Successful = s.Results[stats.ResultOK]
	s.LatencyMean = s.Latency.Mean()
	s.LatencyP50, s.LatencyP99, s.LatMax = s.Latency.ValueAtQuantile(50), s.Latency.ValueAtQuantile(99), s.Latency.Max()

	s.Queue = c.queue(ctx)
	s.Failed = s.Queue.Graveyard
	c.fillKeys(key)
	for _, k := range keys {
		switch {
		case k.Quarantined:
			k.State = KeyQuarantined
		case k.Unusable:
			k.State = KeyUnusable
		case k.Holder != "":
			k.State = KeyHeld
		default:
			k.State = KeyFree
		}
		s.Keys = append(s.Keys, *k)
	}
	sort.Slice(s.Keys, func(i, j int) bool { return s.Keys[i].Name < s.Keys[j].Name })
	sort.Slice(s.Workers, func(i, j int) bool { return s.Workers[i].ID < s.Workers[j].ID })
	s.Queue.Stalled = stalled(s)
	return s
}

func (c *Collector) queue(ctx context.Context) Queue {
	q := Queue{ByReason: map[string]uint64{}}
	var errs []string
	// Every consumer of the requests stream the declarations name (one per
	// priority and route: streams.RouteConsumers).
	for _, rc := range c.cfg.RouteConsumers() {
		cons, err := c.js.Consumer(ctx, c.cfg.Requests.Stream.Name, rc.Durable)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		info := cons.CachedInfo()
		q.Waiting, q.AwaitingAck, q.Redelivery = q.Waiting+info.NumPending, q.AwaitingAck+info.NumAckPending, q.Redelivery+info.NumRedelivered
	}
	g, err := c.js.Stream(ctx, c.cfg.Graveyard.Stream.Name)
	if err == nil {
		prefix := strings.TrimSuffix(c.cfg.Graveyard.Stream.Subjects[0], ">")
		info, err := g.Info(ctx, jetstream.WithSubjectFilter(prefix+">"))
		if err == nil {
			q.Graveyard = info.State.Msgs
			for subj, n := range info.State.Subjects {
				q.ByReason[strings.TrimPrefix(subj, prefix)] = n
			}
		} else {
			errs = append(errs, err.Error())
		}
	} else {
		errs = append(errs, err.Error())
	}
	q.Err = strings.Join(errs, "; ")
	return q
}

// fillKeys adds each key's holder and state, from the watches.
func (c *Collector) fillKeys(key func(string) *Key) {
	view := c.table.View()
	for name := range view.Keys {
		k := key(name) // every key the lease table knows of, held or not
		if rec, ok := view.Held(name); ok {
			k.Holder, k.Since = rec.Holder, rec.Since
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for name, rec := range c.keyState {
		k := key(name)
		if rec.err != nil {
			k.Unusable, k.Reason = true, rec.err.Error() // a record no worker will serve
			continue
		}
		k.Count429Lifetime, k.LearnedMaxDelayMs = rec.Count429, float64(rec.MaxDelay)/float64(time.Millisecond)
		if rec.Unusable {
			k.Unusable, k.Reason, k.Quarantined = true, rec.Reason, rec.Quarantined
		}
	}
}
