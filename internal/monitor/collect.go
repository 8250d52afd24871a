// Package monitor builds the fleet's view: it collects the workers' reports from
// the stats stream and the state of the queue, the graveyard and the key buckets
// (collect.go), and presents them (text.go).
//
// Reports carry cumulative counters, and the stats stream keeps each worker's last
// one, so totals are the sum of the latest report of every worker ever seen: a
// monitor started late sees the whole fleet, and a worker that stops keeps its
// counts. Latency percentiles come from merged HDR histograms, never from averages.
package monitor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
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

// Collector gathers reports and state. It is safe for concurrent use.
type Collector struct {
	js  jetstream.JetStream
	cfg *streams.Config
	log *slog.Logger
	now func() time.Time

	started time.Time

	mu      sync.Mutex
	reports map[string]stats.Report
	series  []point // successful totals over the last minute, for throughput windows
	first   *point  // the first snapshot, for the since-start rate
	queues  queueSums
}

type point struct {
	at time.Time
	ok uint64
}

type queueSums struct {
	n                    int
	waiting, dlq, graves float64
}

// New returns a collector; now is the clock (time.Now when nil).
func New(js jetstream.JetStream, cfg *streams.Config, log *slog.Logger, now func() time.Time) *Collector {
	if now == nil {
		now = time.Now
	}
	return &Collector{js: js, cfg: cfg, log: log, now: now, started: now(), reports: map[string]stats.Report{}}
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
	<-ctx.Done()
	cc.Stop()
	return nil
}

// Add takes one worker report, keeping only the latest of each worker.
func (c *Collector) Add(r stats.Report) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.reports[r.Worker]; ok && old.Seq >= r.Seq && old.Started.Equal(r.Started) {
		return
	}
	c.reports[r.Worker] = r
}

// Snapshot is the fleet at one instant.
type Snapshot struct {
	At      time.Time     `json:"at"`
	Elapsed time.Duration `json:"elapsed"`
	// Results sums attempts by result over every worker ever seen.
	Results    map[string]uint64 `json:"results"`
	Successful uint64            `json:"successful"`
	// Failed counts requests given up on: the graveyard's entries.
	Failed uint64 `json:"failed"`
	// Throughput of successful requests, per second.
	Rate5s, Rate1m, RateAll float64
	// Latency, created to answered, of successful requests, in ms.
	LatencyMean                    float64 `json:"latency_mean_ms"`
	LatencyP50, LatencyP99, LatMax int64
	Latency                        *hdrhistogram.Histogram `json:"-"`
	Queue                          Queue                   `json:"queue"`
	Keys                           []Key                   `json:"keys"`
	Workers                        []Worker                `json:"workers"`
}

// Queue is the state of the work queue and the graveyard.
type Queue struct {
	Waiting     uint64            `json:"waiting"`      // not yet delivered
	AwaitingAck int               `json:"awaiting_ack"` // delivered, not yet acknowledged
	Redelivery  int               `json:"redelivery"`   // the retry queue: delivered more than once, not yet acknowledged
	Graveyard   uint64            `json:"graveyard"`
	ByReason    map[string]uint64 `json:"graveyard_by_reason"`
	// Averages since the monitor started.
	AvgWaiting, AvgRedelivery, AvgGraveyard float64
	Err                                     string `json:"error,omitempty"`
}

// Key is one API key's view.
type Key struct {
	Name        string    `json:"name"`
	Holder      string    `json:"holder,omitempty"`
	Since       time.Time `json:"since,omitzero"`
	Sent        uint64    `json:"sent"`
	OK          uint64    `json:"ok"`
	RateLimited uint64    `json:"rate_limited"`
	BadNonce    uint64    `json:"bad_nonce"`
	MaxDelayMs  float64   `json:"max_delay_ms"`
	LagMs       float64   `json:"lag_ms,omitempty"`
	Evidence    uint64    `json:"evidence,omitempty"` // answers that proved L wrong, and 400s
	NextFree    time.Time `json:"next_free,omitzero"`
	Unusable    bool      `json:"unusable,omitempty"`
	Reason      string    `json:"reason,omitempty"`
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

// Snapshot reads the queue and key state from NATS and folds in the reports.
func (c *Collector) Snapshot(ctx context.Context) Snapshot {
	now := c.now()
	s := Snapshot{At: now, Elapsed: now.Sub(c.started), Results: map[string]uint64{}, Latency: stats.NewLatencyHistogram()}
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
	for _, r := range c.reports {
		for res, n := range r.Results {
			s.Results[res] += n
		}
		if h, err := r.DecodeLatency(); err == nil {
			s.Latency.Merge(h)
		}
		w := Worker{ID: r.Worker, InFlight: r.InFlight, LastSeen: r.At, State: "standby"}
		for _, kr := range r.Keys {
			k := key(kr.Name)
			k.Sent += kr.Sent
			k.OK += kr.OK
			k.RateLimited += kr.RateLimited
			k.BadNonce += kr.BadNonce
			if kr.Held {
				w.Keys = append(w.Keys, kr.Name)
				w.State = "active"
				k.MaxDelayMs, k.NextFree = kr.MaxDelayMs, kr.NextFree
				k.LagMs, k.Evidence = kr.LagMs, kr.Outliers+kr.Inversions
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
	c.keyState(ctx, key)
	for _, k := range keys {
		s.Keys = append(s.Keys, *k)
	}
	sort.Slice(s.Keys, func(i, j int) bool { return s.Keys[i].Name < s.Keys[j].Name })
	sort.Slice(s.Workers, func(i, j int) bool { return s.Workers[i].ID < s.Workers[j].ID })

	c.mu.Lock()
	defer c.mu.Unlock()
	c.series = append(c.series, point{at: now, ok: s.Successful})
	for len(c.series) > 2 && now.Sub(c.series[1].at) > time.Minute {
		c.series = c.series[1:]
	}
	s.Rate5s, s.Rate1m = c.rate(now, 5*time.Second), c.rate(now, time.Minute)
	if c.first == nil {
		c.first = &point{at: now, ok: s.Successful}
	}
	if dt := now.Sub(c.first.at).Seconds(); dt > 0 {
		s.RateAll = float64(s.Successful-c.first.ok) / dt
	}
	q := &c.queues
	q.n++
	q.waiting += float64(s.Queue.Waiting)
	q.dlq += float64(s.Queue.Redelivery)
	q.graves += float64(s.Queue.Graveyard)
	s.Queue.AvgWaiting, s.Queue.AvgRedelivery, s.Queue.AvgGraveyard = q.waiting/float64(q.n), q.dlq/float64(q.n), q.graves/float64(q.n)
	return s
}

// rate returns the successful requests a second over the last window, from the
// series of totals: the difference between the newest point and the newest point
// at least window old (or the oldest).
func (c *Collector) rate(now time.Time, window time.Duration) float64 {
	if len(c.series) < 2 {
		return 0
	}
	last := c.series[len(c.series)-1]
	base := c.series[0]
	for _, p := range c.series {
		if now.Sub(p.at) >= window {
			base = p
		}
	}
	dt := last.at.Sub(base.at).Seconds()
	if dt <= 0 {
		return 0
	}
	return float64(last.ok-base.ok) / dt
}

func (c *Collector) queue(ctx context.Context) Queue {
	q := Queue{ByReason: map[string]uint64{}}
	var errs []string
	cons, err := c.js.Consumer(ctx, c.cfg.Requests.Stream.Name, c.cfg.Requests.Consumer.Durable)
	if err == nil {
		info := cons.CachedInfo()
		q.Waiting, q.AwaitingAck, q.Redelivery = info.NumPending, info.NumAckPending, info.NumRedelivered
	} else {
		errs = append(errs, err.Error())
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

func (c *Collector) keyState(ctx context.Context, key func(string) *Key) {
	if kv, err := c.js.KeyValue(ctx, c.cfg.KV.Leases.Bucket); err == nil {
		if names, err := kv.Keys(ctx); err == nil {
			for _, name := range names {
				if rec, ok, err := lease.Holder(ctx, kv, name); err == nil && ok {
					k := key(name)
					k.Holder, k.Since = rec.Holder, rec.Since
				}
			}
		} else if !errors.Is(err, jetstream.ErrNoKeysFound) {
			c.log.Debug("read leases", "err", err)
		}
	}
	st, err := keystate.Open(ctx, c.js, c.cfg.KV.KeyState.Bucket)
	if err != nil {
		return
	}
	for _, k := range c.knownKeys(key) {
		rec, rev, err := st.Get(ctx, k.Name)
		if err != nil {
			k.Unusable, k.Reason = true, err.Error() // a record no worker will serve
			continue
		}
		if rev == 0 {
			continue
		}
		k.Count429Lifetime, k.LearnedMaxDelayMs = rec.Count429, float64(rec.MaxDelay)/float64(time.Millisecond)
		if rec.Unusable {
			k.Unusable, k.Reason, k.Quarantined = true, rec.Reason, rec.Quarantined
		}
	}
}

func (c *Collector) knownKeys(key func(string) *Key) []*Key {
	var out []*Key
	c.mu.Lock()
	names := map[string]bool{}
	for _, r := range c.reports {
		for _, kr := range r.Keys {
			names[kr.Name] = true
		}
	}
	c.mu.Unlock()
	for n := range names {
		out = append(out, key(n))
	}
	return out
}
