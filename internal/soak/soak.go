// Package soak runs the conservation soak: the seed load on a fleet of real
// processes (internal/fleet) with a random fault every few seconds, then an
// audit of every request id the producers stored: served, buried or still
// queued, and every repeat explained by the fault that can cause it. Run
// injects process, upstream and NATS faults (soak.go); Partition runs the same
// load and audit on a three-node cluster whose links it cuts, flaps and delays
// (partition.go).
package soak

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ratefleet/ratefleet/internal/exchange"
	"github.com/ratefleet/ratefleet/internal/fleet"
	"github.com/ratefleet/ratefleet/internal/graveyard"
	"github.com/ratefleet/ratefleet/internal/keystate"
	"github.com/ratefleet/ratefleet/internal/lease"
	"github.com/ratefleet/ratefleet/internal/natsconn"
	"github.com/ratefleet/ratefleet/internal/roles"
	"github.com/ratefleet/ratefleet/wire"
)

// Config describes the conservation soak: the seed load for Duration with a
// fault injected every Every, drawn at random (Seed) from the faults a fleet must
// live with, then a drain and an audit of every request id.
type Config struct {
	Bin      string
	Workers  int
	Duration time.Duration
	Every    time.Duration
	TTL      time.Duration
	Seed     uint64
	Logs     io.Writer
	Logger   *slog.Logger
}

// Fault is one fault the soak injected, from At to End.
type Fault struct {
	Kind    string
	At, End time.Time
	Detail  string
}

// Fault kinds, and which can make the upstream do a request twice.
const (
	FaultBurst       = "upstream 5xx burst"
	FaultBurstAfter  = "upstream 5xx after processing" // the answer is lost after the upstream did the request
	FaultDown        = "upstream down"
	FaultKill        = "worker kill -9" // a request in flight is done, its ack never sent
	FaultPause       = "worker SIGSTOP" // a request sent before the pause is redelivered after the ack wait
	FaultNATS        = "NATS restart"   // an ack lost with the connection
	FaultProducer    = "producer kill -9 mid-publish"
	FaultOversize    = "oversize request"
	FaultMalformed   = "malformed request"
	FaultUnusableKey = "key made unusable"
)

// repeats reports whether a fault of kind can make the upstream do a request
// twice: its answer lost after processing, or its ack lost (with a NATS node,
// or with a cut link on its way to the consumer's leader). A delayed link slows
// an ack but does not lose it.
func repeats(kind string) bool {
	switch kind {
	case FaultBurstAfter, FaultKill, FaultPause, FaultNATS, FaultMinority, FaultLeader, FaultFlap:
		return true
	}
	return false
}

// Result is the soak's faults and its audit.
type Result struct {
	Faults []Fault
	Audit  Audit
	Load   string // the machine's load average at the end
}

// Audit accounts for every request id: the producer's acknowledged ids, the
// simulator's answered ids, the graveyard and the queue.
type Audit struct {
	Published int // acknowledged to a producer (its --ids-out) or to the soak
	Unacked   int // stored, though no producer recorded the ack (a producer killed mid-publish)
	Served    int // answered by the upstream, and only that
	Buried    map[string]int
	Queued    int
	// ServedAndBuried are requests done upstream and then buried, by why: an
	// answer lost after the upstream did it (the 5xx recorded among its attempts),
	// or an ack lost (worker killed or paused, NATS restarted) with the
	// redelivery found stale or out of attempts.
	ServedAndBuried map[string]int
	Lost            []string // acknowledged and nowhere
	Twice           []Repeat // done upstream more than once
	Malformed       int      // graveyard entries with no request id
	Refused         int      // publishes the stream refused (the oversize request)
	Untracked       uint64   // simulator ids past its bound: must be 0
	// ExpiredAfter counts the requests buried as expired by the last fault
	// injected before each was buried (its index in Result.Faults; -1 before
	// any): where the fleet fell behind its queue.
	ExpiredAfter map[int]int
}

// Repeat is a request the upstream did more than once, and the fault that
// explains it (empty when none does).
type Repeat struct {
	ID    string
	Times []time.Time
	Cause string
}

// Run runs the conservation soak.
func Run(ctx context.Context, cfg Config) (Result, error) {
	var res Result
	rng := rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15))
	f, err := fleet.Up(ctx, fleet.Config{
		Bin: cfg.Bin, Workers: cfg.Workers, Duration: cfg.Duration, Drain: 90 * time.Second,
		Logs: cfg.Logs, Logger: cfg.Logger,
	})
	if err != nil {
		return res, err
	}
	defer f.Down()
	s := newSoak(f, cfg, rng)
	// The soak publishes as the producer and writes key state as a worker: the
	// fleet's own connection is the admin's, who may only call the JetStream API.
	if s.pub, err = s.connect(ctx, roles.Producer); err != nil {
		return res, err
	}
	defer s.pub.Close()
	if s.keys, err = s.connect(ctx, roles.Worker); err != nil {
		return res, err
	}
	defer s.keys.Close()
	if err := s.startProducer(); err != nil {
		return res, err
	}
	kinds := []string{FaultBurst, FaultBurstAfter, FaultDown, FaultKill, FaultPause, FaultNATS, FaultProducer}
	once := []string{FaultOversize, FaultMalformed, FaultUnusableKey}
	t := time.NewTicker(cfg.Every)
	defer t.Stop()
	for n := 0; time.Now().Before(s.end.Add(-cfg.Every / 2)); n++ {
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-t.C:
		}
		kind := kinds[rng.IntN(len(kinds))]
		if n%3 == 1 && len(once) > 0 {
			kind, once = once[0], once[1:]
		}
		if err := s.inject(ctx, kind); err != nil {
			s.log.Warn("soak: fault not injected", "kind", kind, "err", err)
		}
	}
	for _, kind := range once { // a run too short for all of them still has each
		if err := s.inject(ctx, kind); err != nil {
			s.log.Warn("soak: fault not injected", "kind", kind, "err", err)
		}
	}
	return s.finish(ctx)
}

// finish waits for the end of producing, drains, lets the keepers reconcile,
// stops the workers and audits every request id.
func (s *soak) finish(ctx context.Context) (Result, error) {
	var res Result
	f := s.f
	if err := fleet.Sleep(ctx, time.Until(s.end)); err != nil {
		return res, err
	}
	if f.Producer != nil {
		_ = f.Producer.WaitCtx(ctx)
	}
	s.log.Info("soak: producing ended; draining")
	f.Drain(ctx)
	// The keepers' reconciliation settles what the server gave up on: two passes.
	_ = fleet.Sleep(ctx, 70*time.Second)
	f.StopWorkers()
	res.Faults = s.faults
	var err error
	res.Audit, err = s.audit(ctx)
	if load, err := os.ReadFile("/proc/loadavg"); err == nil {
		res.Load = strings.TrimSpace(string(load))
	}
	return res, err
}

// soak is one soak run's state.
type soak struct {
	f         *fleet.Fleet
	cfg       Config
	rng       *rand.Rand
	log       *slog.Logger
	end       time.Time
	producers int
	idFiles   []string
	faults    []Fault
	refused   int
	own       map[string]bool // ids the soak published itself
	pub, keys *natsconn.Conn  // as the producer and as a worker
}

// requests returns the requests subject of the soak's producer user, the only
// one it may publish on.
func (s *soak) requests() string {
	return wire.Owner(s.pub.User).RequestSubject(s.f.Conn.Streams.Requests.Subject())
}

func newSoak(f *fleet.Fleet, cfg Config, rng *rand.Rand) *soak {
	return &soak{f: f, cfg: cfg, rng: rng, log: cfg.Logger, end: time.Now().Add(cfg.Duration), own: map[string]bool{}}
}

func (s *soak) connect(ctx context.Context, role string) (*natsconn.Conn, error) {
	c, err := s.f.Access.Connection(s.f.URL(), role)
	if err != nil {
		return nil, err
	}
	return natsconn.Open(ctx, natsconn.Options{URL: c.URL, Connect: c.Options, Auth: c.Auth, Name: "ratefleet-soak-" + role,
		StreamsFile: s.f.StreamsFile, CheckOnly: true, Logger: slog.New(slog.DiscardHandler)})
}

// startProducer starts a producer of the seed load until the end, writing the ids
// the stream acknowledged to a file of its own.
func (s *soak) startProducer() error {
	s.producers++
	ids := filepath.Join(s.f.Dir(), fmt.Sprintf("ids-%d.txt", s.producers))
	s.idFiles = append(s.idFiles, ids)
	left := time.Until(s.end).Round(time.Second)
	args := append(s.f.RoleArgs(roles.Producer), "--shape", "seed", "--ttl", s.cfg.TTL.String(),
		"--duration", left.String(), "--ids-out", ids, "--progress", "0", "--seed", fmt.Sprint(s.cfg.Seed+uint64(s.producers)))
	p, err := fleet.Start(fmt.Sprintf("producer-%d", s.producers), s.f.Bin("producer"), args, s.f.Access.Env(roles.Producer), s.f.Logs(), true)
	if err != nil {
		return err
	}
	s.f.Producer = p
	return nil
}

// inject applies one fault and records it.
func (s *soak) inject(ctx context.Context, kind string) error {
	at := time.Now()
	detail, end, err := s.apply(ctx, kind)
	if err != nil {
		return err
	}
	if end.IsZero() {
		end = time.Now()
	}
	s.faults = append(s.faults, Fault{Kind: kind, At: at, End: end, Detail: detail})
	s.log.Info("soak: fault", "kind", kind, "detail", detail)
	return nil
}

func (s *soak) apply(ctx context.Context, kind string) (string, time.Time, error) {
	f := s.f
	switch kind {
	case FaultBurst, FaultBurstAfter:
		after := kind == FaultBurstAfter
		d := time.Duration(2+s.rng.IntN(4)) * time.Second
		rate := 0.5
		if after {
			rate = 0.1
		}
		if err := setFaults(ctx, f.ExchangeURL, exchange.Faults{ErrorRate: rate, ErrorAfter: after}); err != nil {
			return "", time.Time{}, err
		}
		_ = fleet.Sleep(ctx, d)
		return fmt.Sprintf("%.0f%% of requests answered 503 for %s", rate*100, d), time.Now(), clearFaults(ctx, f.ExchangeURL)
	case FaultDown:
		d := time.Duration(3+s.rng.IntN(5)) * time.Second
		return fmt.Sprintf("%s, connections dropped", d), time.Now().Add(d),
			setFaults(ctx, f.ExchangeURL, exchange.Faults{DownFor: d, DownDrop: true})
	case FaultKill, FaultPause:
		w, err := s.holder(ctx)
		if err != nil {
			return "", time.Time{}, err
		}
		if kind == FaultKill {
			if err := w.Signal(syscall.SIGKILL); err != nil {
				return "", time.Time{}, err
			}
			_ = w.Wait()
			if _, err := f.StartWorker(); err != nil {
				return "", time.Time{}, err
			}
			return w.Name + ", a fresh worker started", time.Time{}, nil
		}
		d := time.Duration(12+s.rng.IntN(6)) * time.Second
		if err := w.Signal(syscall.SIGSTOP); err != nil {
			return "", time.Time{}, err
		}
		_ = fleet.Sleep(ctx, d)
		return fmt.Sprintf("%s for %s", w.Name, d), time.Now(), w.Signal(syscall.SIGCONT)
	case FaultNATS:
		if f.NATS == nil {
			return "", time.Time{}, errors.New("NATS restart needs the single-node fleet")
		}
		if err := f.NATS.Restart(); err != nil {
			return "", time.Time{}, fmt.Errorf("restart NATS: %w", err)
		}
		return "the server stopped and started again on its store", time.Time{}, nil
	case FaultProducer:
		p := f.Producer
		if err := p.Signal(syscall.SIGKILL); err != nil {
			return "", time.Time{}, err
		}
		_ = p.Wait()
		return p.Name + " killed, a new one started", time.Time{}, s.startProducer()
	case FaultOversize:
		size := int(f.Conn.Streams.Requests.Stream.MaxMsgSize)
		_, big := padded(size + 1)
		_, err := s.pub.JS.Publish(ctx, s.requests(), big)
		var apiErr *jetstream.APIError
		if !errors.As(err, &apiErr) {
			return "", time.Time{}, fmt.Errorf("the requests stream did not refuse a request above its max_msg_size as such: %v", err)
		}
		s.refused++
		r, largest := padded(size)
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if _, err := s.pub.JS.Publish(pctx, s.requests(), largest); err != nil {
			return "", time.Time{}, fmt.Errorf("publish a request of the largest size: %w", err)
		}
		s.own[r.ID] = true
		return fmt.Sprintf("%d bytes refused by the stream (%s); one of %d bytes, the largest allowed, stored", size+1, apiErr.Description, size), time.Time{}, nil
	case FaultMalformed:
		_, err := s.pub.JS.Publish(ctx, s.requests(), []byte(`{"v":1,"id":`))
		return "a truncated JSON record", time.Time{}, err
	case FaultUnusableKey:
		st, err := keystate.Open(ctx, s.keys.JS, f.Conn.Streams.KV.KeyState.Bucket)
		if err != nil {
			return "", time.Time{}, err
		}
		const key = "key5"
		if err := st.MarkUnusable(ctx, key, "made unusable by the soak", false, time.Now()); err != nil {
			return "", time.Time{}, err
		}
		// Its holder hands it over; nobody may claim it again.
		if w, err := s.holderOf(ctx, key); err == nil {
			_ = w.Signal(syscall.SIGTERM)
			_ = w.Wait()
			if _, err := f.StartWorker(); err != nil {
				return "", time.Time{}, err
			}
		}
		return key + " marked unusable, its holder stopped", time.Time{}, nil
	}
	return "", time.Time{}, fmt.Errorf("unknown fault %q", kind)
}

// padded returns a valid request of exactly size bytes (size above the bare
// record's length).
func padded(size int) (wire.Request, []byte) {
	r := wire.New(time.Now(), time.Minute, []byte(`""`))
	data, _ := r.Encode()
	r.Payload = []byte(`"` + strings.Repeat("x", size-len(data)) + `"`)
	data, _ = r.Encode()
	return r, data
}

// holder returns a running worker holding some key, at random.
func (s *soak) holder(ctx context.Context) (*fleet.Proc, error) {
	names := []string{"key1", "key2", "key3", "key4", "key5"}
	s.rng.Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })
	for _, k := range names {
		if w, err := s.holderOf(ctx, k); err == nil {
			return w, nil
		}
	}
	return nil, errors.New("no key is held")
}

func (s *soak) holderOf(ctx context.Context, key string) (*fleet.Proc, error) {
	kv, err := s.f.Conn.JS.KeyValue(ctx, s.f.Conn.Streams.KV.Leases.Bucket)
	if err != nil {
		return nil, err
	}
	rec, ok, err := lease.Holder(ctx, kv, key)
	if err != nil || !ok {
		return nil, fmt.Errorf("key %s has no holder", key)
	}
	for _, w := range s.f.Workers {
		select {
		case <-w.Done():
			continue
		default:
		}
		if w.Name == rec.Holder {
			return w, nil
		}
	}
	return nil, fmt.Errorf("holder %s of %s is not running", rec.Holder, key)
}

func setFaults(ctx context.Context, base string, ft exchange.Faults) error {
	body, err := json.Marshal(ft)
	if err != nil {
		return err
	}
	return admin(ctx, http.MethodPost, base+"/admin/faults", body)
}

func clearFaults(ctx context.Context, base string) error {
	return admin(ctx, http.MethodDelete, base+"/admin/faults", nil)
}

func admin(ctx context.Context, method, url string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("%s %s: %s: %s", method, url, resp.Status, msg)
	}
	return nil
}

// audit reconciles the producers' acknowledged ids, the simulator's answered ids,
// the graveyard and the queue.
func (s *soak) audit(ctx context.Context) (Audit, error) {
	a := Audit{Buried: map[string]int{}, ServedAndBuried: map[string]int{}, Refused: s.refused}
	published := map[string]bool{}
	for _, path := range s.idFiles {
		if err := readLines(path, func(id string) { published[id] = true }); err != nil {
			return a, err
		}
	}
	for id := range s.own {
		published[id] = true
	}
	a.Published = len(published)

	st, err := exchangeIDs(ctx, s.f.ExchangeURL)
	if err != nil {
		return a, err
	}
	a.Untracked = st.UntrackedIDs
	served := map[string]bool{}
	for _, id := range st.IDs {
		served[id] = true
	}

	sc := s.f.Conn.Streams
	g, err := graveyard.New(s.f.Conn.JS, sc.Graveyard.Stream.Name, sc.Graveyard.Stream.Subjects[0])
	if err != nil {
		return a, err
	}
	buried := map[string]string{}
	entries := map[string]graveyard.Entry{}
	var expiredAt []time.Time
	err = g.Walk(ctx, graveyard.Filter{}, func(e graveyard.Stored) bool {
		e.Entry.Original = nil
		entries[e.Entry.RequestID] = e.Entry
		if e.Entry.RequestID == "" {
			a.Malformed++
			a.Buried[e.Entry.Reason]++
			return true
		}
		if prev, ok := buried[e.Entry.RequestID]; ok {
			s.log.Error("soak: request buried twice", "id", e.Entry.RequestID, "reasons", prev+","+e.Entry.Reason)
		}
		buried[e.Entry.RequestID] = e.Entry.Reason
		if e.Entry.Reason == wire.ReasonExpired {
			expiredAt = append(expiredAt, e.Entry.BuriedAt)
		}
		return true
	})
	if err != nil {
		return a, err
	}
	a.ExpiredAfter = byLastFault(s.faults, expiredAt)

	queued := map[string]bool{}
	req, err := s.f.Conn.JS.Stream(ctx, sc.Requests.Stream.Name)
	if err != nil {
		return a, err
	}
	state := req.CachedInfo().State
	for seq := state.FirstSeq; state.Msgs > 0 && seq <= state.LastSeq; {
		m, err := req.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(sc.Requests.Stream.Filter()))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return a, fmt.Errorf("read the queue at %d: %w", seq, err)
		}
		if r, err := wire.Decode(m.Data); err == nil {
			queued[r.ID] = true
		}
		seq = m.Sequence + 1
	}

	all := map[string]bool{}
	for _, set := range []map[string]bool{published, served, queued} {
		for id := range set {
			all[id] = true
		}
	}
	for id := range buried {
		all[id] = true
	}
	for id := range all {
		_, isBuried := buried[id]
		if !published[id] {
			a.Unacked++
		}
		switch {
		case served[id] && isBuried:
			a.ServedAndBuried[servedAndBuried(entries[id])]++
			a.Buried[buried[id]]++
		case served[id] && queued[id]:
			a.Queued++ // done, its ack lost: it is delivered again
		case served[id]:
			a.Served++
		case isBuried:
			a.Buried[buried[id]]++
		case queued[id]:
			a.Queued++
		default:
			a.Lost = append(a.Lost, id)
		}
	}
	sort.Strings(a.Lost)
	for _, id := range st.DuplicateIDs {
		times := st.DuplicateTimes[id]
		a.Twice = append(a.Twice, Repeat{ID: id, Times: times, Cause: s.explain(times)})
	}
	return a, nil
}

// byLastFault counts the instants given by the last of faults (in the order
// injected) that began at or before each, -1 for those before the first.
func byLastFault(faults []Fault, at []time.Time) map[int]int {
	out := map[int]int{}
	for _, t := range at {
		i := sort.Search(len(faults), func(i int) bool { return faults[i].At.After(t) }) - 1
		out[i]++
	}
	return out
}

// count is a number and what it counts.
type count struct {
	what string
	n    int
}

// expiredAfter lists the requests buried as expired by the last fault before
// their burial, in the order of the faults.
func expiredAfter(r Result) []count {
	var out []count
	for i := -1; i < len(r.Faults); i++ {
		n := r.Audit.ExpiredAfter[i]
		switch {
		case n == 0:
		case i < 0:
			out = append(out, count{"before any fault", n})
		default:
			ft := r.Faults[i]
			out = append(out, count{fmt.Sprintf("after %s %s (%s)", ft.At.Format("15:04:05"), ft.Kind, ft.Detail), n})
		}
	}
	return out
}

// servedAndBuried says why a request the upstream did was buried.
func servedAndBuried(e graveyard.Entry) string {
	for _, at := range e.Attempts {
		if at.Status >= 500 {
			return e.Reason + " after an answer lost after processing (5xx after processing)"
		}
	}
	if e.Deliveries > 1 {
		return e.Reason + " on redelivery after an ack lost (worker killed or paused, NATS restarted or cut off)"
	}
	return e.Reason + " with nothing to explain it"
}

// explain names the fault that can have made the upstream do a request again at
// the times given: one that can cause a repeat, in effect between the first time
// and the last (with the ack wait's slack after it).
func (s *soak) explain(times []time.Time) string {
	if len(times) < 2 {
		return ""
	}
	first, last := times[0], times[len(times)-1]
	slack := s.f.Conn.Streams.Requests.Consumer.AckWait + 5*time.Second
	for _, ft := range s.faults {
		if !repeats(ft.Kind) {
			continue
		}
		if !ft.At.Add(-slack).After(first) && !ft.End.Add(slack).Before(first) && !ft.At.After(last) {
			return fmt.Sprintf("%s at %s (%s)", ft.Kind, ft.At.Format("15:04:05"), ft.Detail)
		}
	}
	return ""
}

func readLines(path string, fn func(string)) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil // a producer killed before its first ack
	}
	if err != nil {
		return fmt.Errorf("read acknowledged ids: %w", err)
	}
	defer f.Close()
	r := bufio.NewReader(f)
	for {
		line, err := r.ReadString('\n')
		if err == io.EOF {
			return nil // an unterminated last line: its writer was killed mid-write
		}
		if err != nil {
			return fmt.Errorf("read acknowledged ids: %w", err)
		}
		if line = strings.TrimSpace(line); line != "" {
			fn(line)
		}
	}
}

func exchangeIDs(ctx context.Context, base string) (exchange.Stats, error) {
	var st exchange.Stats
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/stats?ids=1", nil)
	if err != nil {
		return st, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return st, fmt.Errorf("simulator ids: %w", err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return st, fmt.Errorf("simulator ids: %w", err)
	}
	return st, nil
}

// Format renders the soak's faults and audit.
func Format(r Result, cfg Config) string {
	var b strings.Builder
	a := r.Audit
	fmt.Fprintf(&b, "Conservation soak: seed load (time to live %s), %s, %d workers, a fault every %s (seed %d).\n",
		cfg.TTL, cfg.Duration, cfg.Workers, cfg.Every, cfg.Seed)
	counts := map[string]int{}
	for _, ft := range r.Faults {
		counts[ft.Kind]++
		fmt.Fprintf(&b, "  %s  %-30s %s\n", ft.At.Format("15:04:05"), ft.Kind, ft.Detail)
	}
	fmt.Fprintf(&b, "faults: %v\n", counts)
	total := a.Published + a.Unacked
	buried := 0
	for _, n := range a.Buried {
		buried += n
	}
	fmt.Fprintf(&b, "ids published (acknowledged to a producer)  %d\n", a.Published)
	fmt.Fprintf(&b, "  plus stored without a recorded ack        %d (a producer killed mid-publish)\n", a.Unacked)
	fmt.Fprintf(&b, "served (answered 200 by the upstream)      %d\n", a.Served)
	fmt.Fprintf(&b, "buried                                     %d %v (+%d malformed without id)\n", buried-a.Malformed, withoutZero(a.Buried, a.Malformed), a.Malformed)
	sb := 0
	for _, n := range a.ServedAndBuried {
		sb += n
	}
	if ex := expiredAfter(r); len(ex) > 0 {
		fmt.Fprintf(&b, "  expired, by the last fault before their burial:\n")
		for _, e := range ex {
			fmt.Fprintf(&b, "    %5d  %s\n", e.n, e.what)
		}
	}
	fmt.Fprintf(&b, "  of them done by the upstream first        %d\n", sb)
	for why, n := range a.ServedAndBuried {
		fmt.Fprintf(&b, "    %5d  %s\n", n, why)
	}
	fmt.Fprintf(&b, "queued                                     %d\n", a.Queued)
	fmt.Fprintf(&b, "lost                                       %d\n", len(a.Lost))
	fmt.Fprintf(&b, "every id once: %d = served %d + buried %d + queued %d + lost %d\n",
		total, a.Served, buried-a.Malformed, a.Queued, len(a.Lost))
	fmt.Fprintf(&b, "refused at publish (oversize)              %d\n", a.Refused)
	fmt.Fprintf(&b, "simulator ids past its bound               %d\n", a.Untracked)
	fmt.Fprintf(&b, "answered more than once                    %d, by the fault that explains them:\n", len(a.Twice))
	byCause := map[string][]Repeat{}
	var causes []string
	for _, t := range a.Twice {
		cause := t.Cause
		if cause == "" {
			cause = "UNEXPLAINED"
		}
		if byCause[cause] == nil {
			causes = append(causes, cause)
		}
		byCause[cause] = append(byCause[cause], t)
	}
	sort.Strings(causes)
	for _, c := range causes {
		fmt.Fprintf(&b, "  %4d  %s\n", len(byCause[c]), c)
		for i, t := range byCause[c] {
			if i == 3 && c != "UNEXPLAINED" {
				fmt.Fprintf(&b, "          ...\n")
				break
			}
			var ts []string
			for _, x := range t.Times {
				ts = append(ts, x.Format("15:04:05.000"))
			}
			fmt.Fprintf(&b, "          %s done at %s\n", t.ID, strings.Join(ts, ", "))
		}
	}
	for _, id := range a.Lost {
		fmt.Fprintf(&b, "  LOST %s\n", id)
	}
	if r.Load != "" {
		fmt.Fprintf(&b, "load average at the end: %s\n", r.Load)
	}
	return b.String()
}

// withoutZero returns by minus the malformed entries (counted apart).
func withoutZero(by map[string]int, malformed int) map[string]int {
	out := map[string]int{}
	for k, v := range by {
		if k == wire.ReasonMalformed {
			v -= malformed
		}
		if v > 0 {
			out[k] = v
		}
	}
	return out
}
