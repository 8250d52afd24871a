package soak

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ratefleet/ratefleet/internal/fleet"
)

// Partition fault kinds: the links between the three NATS nodes cut, flapping or
// slowed, each for a random 5 to 30 s and then healed.
const (
	FaultMinority = "minority node cut off" // a node leading neither the meta group nor the requests stream, isolated
	FaultLeader   = "leader isolated"       // the requests stream's leader isolated
	FaultFlap     = "flapping link"         // one link cut and healed every few seconds
	FaultDelay    = "delayed link"          // one link slowed, both ways
)

// PartitionResult is the partition soak's faults and audit, and what the
// simulator counted.
type PartitionResult struct {
	Result
	Exchange fleet.ExchangeTotals
}

// Partition runs the partition soak: the seed load on the embedded three-node
// cluster with every route through a proxy (embedded.ClusterOptions.ProxyRoutes)
// for cfg.Duration, with a partition drawn at random (cfg.Seed) after each quiet
// gap of 5 to 15 s: a minority node cut off, the leader isolated, a flapping link
// or a delayed link, lasting 5 to 30 s and then healed. At the end every link is
// healed, the queue drained and every request id audited as Run does. cfg.Every
// is not used. Progress (each fault injected and healed, the counts so far) goes
// to cfg.Logger.
func Partition(ctx context.Context, cfg Config) (PartitionResult, error) {
	var res PartitionResult
	rng := rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15))
	f, err := fleet.Up(ctx, fleet.Config{
		Bin: cfg.Bin, Workers: cfg.Workers, Duration: cfg.Duration, Drain: 90 * time.Second,
		Cluster: 3, ProxyRoutes: true, Logs: cfg.Logs, Logger: cfg.Logger,
	})
	if err != nil {
		return res, err
	}
	defer f.Down()
	s := newSoak(f, cfg, rng)
	if err := s.startProducer(); err != nil {
		return res, err
	}
	kinds := []string{FaultMinority, FaultLeader, FaultFlap, FaultDelay}
	var next []string // every kind once in a random order, then again
	for {
		if err := fleet.Sleep(ctx, min(s.between(5*time.Second, 15*time.Second), time.Until(s.end))); err != nil {
			break
		}
		d := min(s.between(5*time.Second, 30*time.Second), time.Until(s.end))
		if d < 5*time.Second {
			break
		}
		if len(next) == 0 {
			next = slices.Clone(kinds)
			rng.Shuffle(len(next), func(i, j int) { next[i], next[j] = next[j], next[i] })
		}
		kind := next[0]
		next = next[1:]
		if err := s.partition(ctx, kind, d); err != nil {
			s.log.Warn("partition: fault not injected", "kind", kind, "err", err)
		}
	}
	if err := f.Cluster.HealAll(); err != nil {
		return res, err
	}
	if err := f.Cluster.WaitForLeader(time.Minute); err != nil {
		return res, err
	}
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	s.progress(ctx, "every link healed; draining")
	res.Result, err = s.finish(ctx)
	if err != nil {
		return res, err
	}
	res.Exchange, err = fleet.FetchExchangeTotals(ctx, f.ExchangeURL)
	return res, err
}

// partition injects one partition of kind for d, heals it and records it.
func (s *soak) partition(ctx context.Context, kind string, d time.Duration) error {
	c := s.f.Cluster
	at := time.Now()
	var detail string
	switch kind {
	case FaultMinority, FaultLeader:
		node, leads, err := s.target(ctx, kind)
		if err != nil {
			return err
		}
		if err := c.Isolate(node); err != nil {
			return err
		}
		detail = fmt.Sprintf("node %d (leading %s) cut off for %s", node+1, leads, d.Round(100*time.Millisecond))
		s.progress(ctx, "fault injected: "+kind+": "+detail)
		_ = fleet.Sleep(ctx, d)
	case FaultFlap:
		i, j := s.pair()
		s.progress(ctx, fmt.Sprintf("fault injected: %s: link %d-%d, for %s", kind, i+1, j+1, d.Round(100*time.Millisecond)))
		cuts := 0
		for time.Since(at) < d && ctx.Err() == nil {
			if err := c.Cut(i, j); err != nil {
				return err
			}
			cuts++
			_ = fleet.Sleep(ctx, s.between(time.Second, 4*time.Second))
			if err := c.Heal(i, j); err != nil {
				return err
			}
			_ = fleet.Sleep(ctx, s.between(time.Second, 4*time.Second))
		}
		detail = fmt.Sprintf("link %d-%d cut %d times, 1-4 s down and 1-4 s up, over %s", i+1, j+1, cuts, time.Since(at).Round(100*time.Millisecond))
	case FaultDelay:
		i, j := s.pair()
		lat := s.between(50*time.Millisecond, 500*time.Millisecond).Round(10 * time.Millisecond)
		if err := c.Delay(i, j, lat); err != nil {
			return err
		}
		detail = fmt.Sprintf("link %d-%d delayed %s each way for %s", i+1, j+1, lat, d.Round(100*time.Millisecond))
		s.progress(ctx, "fault injected: "+kind+": "+detail)
		_ = fleet.Sleep(ctx, d)
	default:
		return fmt.Errorf("unknown partition %q", kind)
	}
	err := c.HealAll()
	s.faults = append(s.faults, Fault{Kind: kind, At: at, End: time.Now(), Detail: detail})
	s.progress(ctx, "healed: "+kind)
	return err
}

// target picks the node to isolate: for FaultLeader the requests stream's leader,
// for FaultMinority a node leading neither it nor the meta group, at random. It
// also says what the node leads. Right after a heal the cluster may still be
// electing: it asks again until the requests stream's leader is known, and
// fails after targetWait rather than isolate a node at random.
func (s *soak) target(ctx context.Context, kind string) (int, string, error) {
	requests := s.f.Conn.Streams.Requests.Stream.Name
	deadline := time.Now().Add(targetWait)
	for {
		leads := s.leads(ctx)
		var leaders, minors []int
		for i := range s.f.Cluster.Nodes {
			switch {
			case slices.Contains(leads[i], requests):
				leaders = append(leaders, i)
			case !slices.Contains(leads[i], "meta"):
				minors = append(minors, i)
			}
		}
		picks := minors
		if kind == FaultLeader {
			picks = leaders
		}
		if len(leaders) == 1 && len(picks) > 0 {
			node := picks[s.rng.IntN(len(picks))]
			what := strings.Join(leads[node], ", ")
			if what == "" {
				what = "nothing"
			}
			return node, what, nil
		}
		if time.Now().After(deadline) {
			return 0, "", fmt.Errorf("no leader of %s known after %s", requests, targetWait)
		}
		if err := fleet.Sleep(ctx, 500*time.Millisecond); err != nil {
			return 0, "", err
		}
	}
}

// targetWait bounds target's wait for the cluster to know its leaders.
const targetWait = 30 * time.Second

// leads returns what each node leads: the meta group, the streams (KV buckets
// included) and the work queue's consumer.
func (s *soak) leads(ctx context.Context) map[int][]string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c := s.f.Cluster
	out := map[int][]string{}
	if m := c.MetaLeader(); m >= 0 {
		out[m] = append(out[m], "meta")
	}
	node := func(name string) int {
		for i, n := range c.Nodes {
			if n.NATS().Name() == name {
				return i
			}
		}
		return -1
	}
	add := func(ci *jetstream.ClusterInfo, what string) {
		if ci == nil {
			return
		}
		if i := node(ci.Leader); i >= 0 {
			out[i] = append(out[i], what)
		}
	}
	js := s.f.Conn.JS
	l := js.ListStreams(ctx)
	for info := range l.Info() {
		add(info.Cluster, info.Config.Name)
	}
	rc := s.f.Conn.Streams.Requests
	if cons, err := js.Consumer(ctx, rc.Stream.Name, rc.Consumer.Durable); err == nil {
		add(cons.CachedInfo().Cluster, "consumer "+rc.Consumer.Durable)
	}
	for _, what := range out {
		slices.Sort(what)
	}
	return out
}

// pair returns two distinct nodes at random.
func (s *soak) pair() (int, int) {
	n := len(s.f.Cluster.Nodes)
	i := s.rng.IntN(n)
	return i, (i + 1 + s.rng.IntN(n-1)) % n
}

// between returns a random duration in [lo, hi), to the millisecond.
func (s *soak) between(lo, hi time.Duration) time.Duration {
	return (lo + time.Duration(s.rng.Int64N(int64(hi-lo)))).Round(time.Millisecond)
}

// progress logs event with the counts so far: published and still queued (the
// requests stream), buried (the graveyard), served and 429s (the simulator). A
// count that cannot be read in a few seconds, as when the fleet's own connection
// is on the node cut off, is left out.
func (s *soak) progress(ctx context.Context, event string) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	args := []any{"at", time.Until(s.end).Round(time.Second).String() + " left"}
	sc := s.f.Conn.Streams
	if st, err := s.f.Conn.JS.Stream(ctx, sc.Requests.Stream.Name); err == nil {
		args = append(args, "published", st.CachedInfo().State.LastSeq, "queued", st.CachedInfo().State.Msgs)
	}
	if st, err := s.f.Conn.JS.Stream(ctx, sc.Graveyard.Stream.Name); err == nil {
		args = append(args, "buried", st.CachedInfo().State.Msgs)
	}
	if t, err := fleet.FetchExchangeTotals(ctx, s.f.ExchangeURL); err == nil {
		args = append(args, "served", t.Distinct, "429", t.RateLimited)
	}
	s.log.Info("partition: "+event, args...)
}

// FormatPartition renders the partition soak's audit as one Markdown table,
// followed by the ids lost or repeated without a cause, if any.
func FormatPartition(r PartitionResult, cfg Config) string {
	var b strings.Builder
	a := r.Audit
	fmt.Fprintf(&b, "Partition soak: seed load (time to live %s) on three NATS nodes with every route through a proxy, every stream and bucket R3, %d workers, %s (seed %d); a partition after each 5-15 s quiet gap, lasting 5-30 s.\n\n",
		cfg.TTL, cfg.Workers, cfg.Duration, cfg.Seed)
	row := func(what string, n any) { fmt.Fprintf(&b, "| %s | %v |\n", what, n) }
	fmt.Fprintf(&b, "| | count |\n| --- | ---: |\n")
	row("ids published (acknowledged to a producer)", a.Published)
	row("stored without a recorded ack (a publish retried or cut off after the stream stored it)", a.Unacked)
	row("served (answered 200 by the upstream)", a.Served)
	buried := 0
	for _, reason := range sortedKeys(a.Buried) {
		row("buried: "+reason, a.Buried[reason])
		buried += a.Buried[reason]
	}
	for _, e := range expiredAfter(r.Result) {
		row("of the buried, expired "+e.what, e.n)
	}
	for _, why := range sortedKeys(a.ServedAndBuried) {
		row("of the buried, done upstream first: "+why, a.ServedAndBuried[why])
	}
	row("queued", a.Queued)
	row("**lost**", len(a.Lost))
	row("every id once: published + stored without ack = served + buried + queued + lost",
		fmt.Sprintf("%d = %d + %d + %d + %d", a.Published+a.Unacked, a.Served, buried-a.Malformed, a.Queued, len(a.Lost)))
	row("**429s drawn**", r.Exchange.RateLimited)
	row("400s (nonce out of order)", r.Exchange.BadNonce)
	row("simulator ids past its bound", a.Untracked)
	byCause := map[string][]Repeat{}
	for _, t := range a.Twice {
		byCause[t.Cause] = append(byCause[t.Cause], t)
	}
	row("answered 200 more than once", len(a.Twice))
	for _, cause := range sortedKeys(byCause) {
		if cause != "" {
			row("&nbsp;&nbsp;explained by "+cause, len(byCause[cause]))
		}
	}
	if n := len(byCause[""]); n > 0 {
		row("&nbsp;&nbsp;**explained by no fault**", n)
	}
	counts := map[string]int{}
	for _, ft := range r.Faults {
		counts[ft.Kind]++
	}
	for _, kind := range []string{FaultMinority, FaultLeader, FaultFlap, FaultDelay} {
		row("faults injected: "+kind, counts[kind])
	}
	for _, id := range a.Lost {
		fmt.Fprintf(&b, "\nLOST %s", id)
	}
	for _, t := range byCause[""] {
		var ts []string
		for _, x := range t.Times {
			ts = append(ts, x.Format("15:04:05.000"))
		}
		fmt.Fprintf(&b, "\nUNEXPLAINED REPEAT %s done at %s", t.ID, strings.Join(ts, ", "))
	}
	fmt.Fprintf(&b, "\nFaults:\n")
	for _, ft := range r.Faults {
		fmt.Fprintf(&b, "  %s-%s  %-22s %s\n", ft.At.Format("15:04:05"), ft.End.Format("15:04:05"), ft.Kind, ft.Detail)
	}
	if r.Load != "" {
		fmt.Fprintf(&b, "load average at the end: %s\n", r.Load)
	}
	return b.String()
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }
