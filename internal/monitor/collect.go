package monitor

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ratefleet/ratefleet/internal/stats"
	"github.com/ratefleet/ratefleet/internal/streams"
)

// DefaultSilentAfter is how long a worker may go without a report before it is
// shown as silent: workers report every second.
const DefaultSilentAfter = 3 * time.Second

// Options adjust a Collector.
type Options struct {
	// Logger receives undecodable reports and read errors; discarded when nil.
	Logger *slog.Logger
	// Now is the clock; time.Now when nil. Snapshot times, the throughput windows,
	// the averages and worker silence are all measured on it.
	Now func() time.Time
	// SilentAfter is DefaultSilentAfter when zero.
	SilentAfter time.Duration
}

// Collector gathers the workers' reports (Run, Add) and takes snapshots of the
// fleet (Snapshot). It is safe for concurrent use.
type Collector struct {
	// Set once by New.
	js              jetstream.JetStream
	cfg             *streams.Config
	log             *slog.Logger
	now             func() time.Time
	silentAfter     time.Duration
	started         time.Time
	graveyardPrefix string // such as "ratefleet.graveyard."
	ready           chan struct{}
	readyOnce       sync.Once

	mu        sync.Mutex // guards the reports and replaying
	reports   *reports
	replaying bool

	snapMu   sync.Mutex // serializes Snapshot; guards what follows
	series   throughputSeries
	averager queueAverager
}

// New returns a collector reading the streams and buckets cfg declares. Its
// elapsed time starts now.
func New(js jetstream.JetStream, cfg *streams.Config, o Options) (*Collector, error) {
	subjects := cfg.Graveyard.Stream.Subjects
	if len(subjects) == 0 || !strings.HasSuffix(subjects[0], ".>") {
		return nil, fmt.Errorf("monitor: graveyard stream %s: its first subject %v must end in .> (entries are published on <prefix>.<reason>)", cfg.Graveyard.Stream.Name, subjects)
	}
	c := &Collector{
		js: js, cfg: cfg, log: o.Logger, now: o.Now, silentAfter: o.SilentAfter,
		graveyardPrefix: strings.TrimSuffix(subjects[0], ">"),
		ready:           make(chan struct{}),
		reports:         newReports(),
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.silentAfter <= 0 {
		c.silentAfter = DefaultSilentAfter
	}
	c.started = c.now()
	return c, nil
}

// Run reads the workers' reports until ctx ends. It starts from the last report
// of every worker the stats stream holds, so a monitor started after the workers,
// or after some have gone, sees every worker's counts; Ready is closed once those
// have been read. Run returns nil when ctx ends, or an error when the stats stream
// cannot be read.
func (c *Collector) Run(ctx context.Context) error {
	c.mu.Lock()
	c.replaying = true
	c.mu.Unlock()
	name := c.cfg.Stats.Stream.Name
	stream, err := c.js.Stream(ctx, name)
	if err != nil {
		return fmt.Errorf("monitor: read stats stream %s: %w", name, err)
	}
	// Reports published during the replay may keep the consumer's pending count
	// above zero; having read up to the stream's last message at start is enough.
	lastAtStart := stream.CachedInfo().State.LastSeq
	if stream.CachedInfo().State.Msgs == 0 {
		c.caughtUp()
	}
	cons, err := c.js.OrderedConsumer(ctx, name, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{stats.SubjectPrefix + ".>"},
		DeliverPolicy:  jetstream.DeliverLastPerSubjectPolicy,
	})
	if err != nil {
		return fmt.Errorf("monitor: read stats stream %s: %w", name, err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		var r stats.Report
		if err := json.Unmarshal(m.Data(), &r); err != nil {
			c.log.Warn("undecodable worker report", "subject", m.Subject(), "err", err)
		} else if err := c.Add(r); err != nil {
			c.log.Warn("worker report", "subject", m.Subject(), "err", err)
		}
		if meta, err := m.Metadata(); err == nil && (meta.NumPending == 0 || meta.Sequence.Stream >= lastAtStart) {
			c.caughtUp()
		}
	}, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		c.log.Debug("reading the stats stream", "err", err)
	}))
	if err != nil {
		return fmt.Errorf("monitor: read stats stream %s: %w", name, err)
	}
	if info := cons.CachedInfo(); info != nil && info.NumPending == 0 {
		c.caughtUp() // no report matches the filter
	}
	<-ctx.Done()
	cc.Stop()
	return nil
}

// caughtUp ends the replay of the reports stored before Run started.
func (c *Collector) caughtUp() {
	c.readyOnce.Do(func() {
		c.mu.Lock()
		c.replaying = false
		c.mu.Unlock()
		close(c.ready)
	})
}

// Ready is closed once Run has read the last report of every worker the stats
// stream held when it started.
func (c *Collector) Ready() <-chan struct{} { return c.ready }

// Add folds in one worker report, keeping only the newest of each worker run; Run
// calls it for every report it reads. It returns an error when the report's
// latency histogram cannot be decoded; its counters are kept all the same.
func (c *Collector) Add(r stats.Report) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, err := c.reports.add(r)
	if err != nil {
		return fmt.Errorf("monitor: %w", err)
	}
	return nil
}

// Snapshot reads the queue, graveyard and key state from NATS, folds in the latest
// reports, and records the successful total and queue sizes for the throughput
// windows and averages. State that cannot be read is listed in Snapshot.Errors.
// Snapshots are taken one at a time.
func (c *Collector) Snapshot(ctx context.Context) Snapshot {
	c.snapMu.Lock()
	defer c.snapMu.Unlock()
	now := c.now()
	st := c.readState(ctx)
	holders := map[string]string{}
	for name, l := range st.leases {
		holders[name] = l.Holder
	}

	c.mu.Lock()
	v := c.reports.view(now, c.silentAfter, holders)
	replaying := c.replaying
	c.mu.Unlock()

	s := Snapshot{
		At: now, Elapsed: now.Sub(c.started), Replaying: replaying,
		Results: v.results, Successful: v.results[stats.ResultOK], FailedAttempts: map[string]uint64{},
		Queue: st.queue, Failed: st.queue.Graveyard, Workers: v.workers, Errors: st.errs,
		Histogram: v.latency,
	}
	for res, n := range v.results {
		if res != stats.ResultOK && n > 0 {
			s.FailedAttempts[res] = n
		}
	}
	h := v.latency
	s.Latency = Latency{
		Count: h.TotalCount(), MeanMs: h.Mean(),
		P50Ms: h.ValueAtQuantile(50), P90Ms: h.ValueAtQuantile(90), P99Ms: h.ValueAtQuantile(99), MaxMs: h.Max(),
	}
	if h.TotalCount() == 0 {
		s.Latency.MaxMs = 0
	}
	s.Keys = keys(v.keys, st)

	if !replaying {
		c.series.add(now, s.Successful)
	}
	s.Throughput = c.series.throughput()
	if st.queueOK {
		s.Queue.Average = c.averager.add(now, st.queue)
	} else {
		s.Queue.Average = c.averager.averages()
	}
	return s
}

// keys merges the keys the reports name with those the two buckets hold (a key
// has a key-state entry from its first use on), and sorts them by name.
func keys(reported map[string]*Key, st natsState) []Key {
	all := maps.Clone(reported)
	get := func(name string) *Key {
		if all[name] == nil {
			all[name] = &Key{Name: name}
		}
		return all[name]
	}
	for name, l := range st.leases {
		k := get(name)
		k.Holder, k.Since, k.Fingerprint = l.Holder, l.Since, l.Fingerprint
	}
	for name, f := range st.keys {
		k := get(name)
		k.Unusable = f.Unusable
		if f.Unusable {
			k.Reason = f.Reason
		}
	}
	out := make([]Key, 0, len(all))
	for _, k := range all {
		switch {
		case k.Unusable:
			k.State = KeyUnusable
		case k.Quarantined:
			k.State = KeyQuarantined
		case k.Holder != "":
			k.State = KeyHeld
		default:
			k.State = KeyFree
		}
		out = append(out, *k)
	}
	slices.SortFunc(out, func(a, b Key) int { return cmp.Compare(a.Name, b.Name) })
	return out
}
