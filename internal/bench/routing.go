package bench

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/ratefleet/ratefleet/client"
	"github.com/ratefleet/ratefleet/internal/embedded"
	"github.com/ratefleet/ratefleet/internal/exchange"
	"github.com/ratefleet/ratefleet/internal/keys"
	"github.com/ratefleet/ratefleet/internal/limiter"
	"github.com/ratefleet/ratefleet/internal/natsconn"
	"github.com/ratefleet/ratefleet/internal/upstream"
	"github.com/ratefleet/ratefleet/internal/worker"
	"github.com/ratefleet/ratefleet/wire"
)

// RoutingLabel is the label the routing benchmark's labelled keys carry.
const RoutingLabel = "spot"

// RoutingConfig describes the routing benchmark: one worker in this process
// holding Keys keys of the simulator, the first two labelled RoutingLabel, an
// embedded NATS server, a backlog of Batch batch requests queued first, then
// Urgent urgent requests arriving at UrgentRate a second. Every LabelEvery-th
// request of each kind names the label.
type RoutingConfig struct {
	// Batch is the backlog queued before the worker starts (10,000 in the
	// benchmark table); Urgent the urgent requests that follow.
	Batch, Urgent int
	// UrgentRate is the urgent requests' arrival rate, a second.
	UrgentRate float64
	// Keys is how many of the simulator's keys the worker holds, at least 3
	// and at most 5; 5 when 0.
	Keys int
	// LabelEvery makes every n-th request name the label; 5 when 0.
	LabelEvery int
	// Exchange is the simulator's configuration (its keys are set here);
	// exchange.DefaultConfig() when nil. Limiter is the workers' limiter, which
	// must know the simulator's rule; limiter.Config{} (the reference) when
	// zero.
	Exchange *exchange.Config
	Limiter  limiter.Config
	// Timeout bounds the whole run; a request without a result by then counts
	// as pending. 30 minutes when 0.
	Timeout time.Duration
	Logger  *slog.Logger
}

// RoutingResult is what the routing benchmark measured. Waits run from just
// before a request is published to its arrival at the simulator (its send).
type RoutingResult struct {
	Batch, Urgent, Labelled int
	// Served, Buried and Pending count the requests by how they ended; Pending
	// had no result by the timeout. Served+Buried+Pending = Batch+Urgent.
	Served, Buried, Pending int
	// Violations counts labelled requests sent by a key without the label.
	Violations int
	// UrgentP50 and UrgentP99 are the urgent requests' waits; BatchWorst the
	// longest wait of a batch request.
	UrgentP50, UrgentP99, BatchWorst time.Duration
	// RateLimited and BadNonce are the simulator's 429 and 400 answers.
	RateLimited, BadNonce uint64
	// Elapsed is the time from the first publish to the last result.
	Elapsed time.Duration
}

// Routing runs the routing benchmark.
func Routing(ctx context.Context, cfg RoutingConfig) (RoutingResult, error) {
	var res RoutingResult
	cfg.Keys = cmp.Or(cfg.Keys, 5)
	cfg.LabelEvery = cmp.Or(cfg.LabelEvery, 5)
	cfg.Timeout = cmp.Or(cfg.Timeout, 30*time.Minute)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Keys < 3 || cfg.Keys > 5 || cfg.Batch < 0 || cfg.Urgent < 0 || (cfg.Urgent > 0 && cfg.UrgentRate <= 0) {
		return res, fmt.Errorf("routing benchmark: want 3 to 5 keys, counts not negative and a positive urgent rate")
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	quiet := slog.New(slog.DiscardHandler)

	ks := exchange.DefaultKeys()[:cfg.Keys]
	for i := range 2 {
		ks[i] = ks[i].WithGroups("", []string{RoutingLabel})
	}
	ns, err := embedded.Start(embedded.Options{})
	if err != nil {
		return res, err
	}
	defer ns.Shutdown()
	conn, err := natsconn.Open(ctx, natsconn.Options{URL: ns.ClientURL(), Name: "bench-routing", Routes: keys.RoutesOf(ks), Priorities: true, Logger: quiet})
	if err != nil {
		return res, err
	}
	defer conn.Close()

	xcfg := exchange.DefaultConfig()
	if cfg.Exchange != nil {
		xcfg = *cfg.Exchange
	}
	xcfg.Keys = ks
	ex, err := exchange.New(xcfg, quiet)
	if err != nil {
		return res, err
	}
	defer func() { _ = ex.Close(context.WithoutCancel(ctx)) }()
	sends := &sendLog{at: map[string]time.Time{}}
	front, err := sends.serve(ex.Handler())
	if err != nil {
		return res, err
	}
	defer front.Close()

	c, err := client.New(conn.NC)
	if err != nil {
		return res, err
	}
	type sub struct {
		id       string
		at       time.Time
		urgent   bool
		labelled bool
	}
	var (
		mu   sync.Mutex
		subs []sub
	)
	submit := func(n int, urgent bool) error {
		r := client.Request{TTL: cfg.Timeout}
		if urgent {
			r.Priority = client.Urgent
		}
		labelled := n%cfg.LabelEvery == 0
		if labelled {
			r.Label = RoutingLabel
		}
		at := time.Now()
		id, err := c.Submit(ctx, r)
		if err != nil {
			return err
		}
		mu.Lock()
		subs = append(subs, sub{id, at, urgent, labelled})
		mu.Unlock()
		return nil
	}
	start := time.Now()
	for i := range cfg.Batch {
		if err := submit(i, false); err != nil {
			return res, fmt.Errorf("routing benchmark: queue the batch: %w", err)
		}
	}
	cfg.Logger.Info("benchmark: routing", "batch", cfg.Batch, "urgent", cfg.Urgent, "urgent_rate", cfg.UrgentRate, "keys", cfg.Keys)

	up, err := upstream.New("http://"+front.Addr().String(), worker.DefaultRequestTimeout, 64, nil)
	if err != nil {
		return res, err
	}
	defer up.Close()
	factory, err := worker.NewPacerFactory(worker.Adaptive, cfg.Limiter)
	if err != nil {
		return res, err
	}
	w, err := worker.New(ctx, conn.JS, worker.Config{
		ID: "bench-routing", Keys: ks, MaxKeys: len(ks), Upstream: up, Streams: conn.Streams, NewPacer: factory, Logger: cfg.Logger,
	})
	if err != nil {
		return res, err
	}
	wctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { _ = w.Run(wctx) })
	defer func() { stop(); wg.Wait() }()

	if cfg.Urgent > 0 {
		tick := time.NewTicker(time.Duration(float64(time.Second) / cfg.UrgentRate))
		for i := range cfg.Urgent {
			if err := submit(i, true); err != nil {
				tick.Stop()
				return res, fmt.Errorf("routing benchmark: publish urgent requests: %w", err)
			}
			select {
			case <-tick.C:
			case <-ctx.Done():
			}
		}
		tick.Stop()
	}

	var urgentWaits []time.Duration
	for _, s := range subs {
		r, err := c.Await(ctx, s.id)
		switch {
		case errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil:
			res.Pending++
			continue
		case err != nil:
			return res, err
		}
		res.Elapsed = max(res.Elapsed, time.Since(start))
		if r.Outcome != wire.Served {
			res.Buried++
			continue
		}
		res.Served++
		if s.labelled && !slices.ContainsFunc(ks, func(k keys.Key) bool { return k.Name() == r.Key && k.HasLabel(RoutingLabel) }) {
			res.Violations++
		}
		sent := sends.first(s.id)
		if sent.IsZero() {
			return res, fmt.Errorf("routing benchmark: request %s was served, but its arrival at the simulator carried no req_id", s.id)
		}
		wait := sent.Sub(s.at)
		if s.urgent {
			urgentWaits = append(urgentWaits, wait)
		} else {
			res.BatchWorst = max(res.BatchWorst, wait)
		}
	}
	for _, s := range subs {
		switch {
		case s.urgent:
			res.Urgent++
		default:
			res.Batch++
		}
		if s.labelled {
			res.Labelled++
		}
	}
	slices.Sort(urgentWaits)
	res.UrgentP50, res.UrgentP99 = quantile(urgentWaits, 0.50), quantile(urgentWaits, 0.99)
	for _, k := range ex.Stats().Keys {
		res.RateLimited += k.RateLimited
		res.BadNonce += k.BadNonce
	}
	return res, nil
}

// quantile returns the q-quantile of sorted ds (nearest rank), 0 for none.
func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	i := int(q*float64(len(ds))+0.999999) - 1
	return ds[min(max(i, 0), len(ds)-1)]
}

// sendLog records when each request id first reached the simulator.
type sendLog struct {
	mu sync.Mutex
	at map[string]time.Time
}

// serve serves h on loopback behind the log, and returns the listener.
func (l *sendLog) serve(h http.Handler) (net.Listener, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := time.Now()
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		id := r.URL.Query().Get("req_id")
		if id == "" {
			if form, err := url.ParseQuery(string(body)); err == nil {
				id = form.Get("req_id")
			}
		}
		id = cmp.Or(id, r.Header.Get("X-Request-Id"))
		l.mu.Lock()
		if _, ok := l.at[id]; !ok && id != "" {
			l.at[id] = now
		}
		l.mu.Unlock()
		h.ServeHTTP(w, r)
	}), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return ln, nil
}

// first returns when id first reached the simulator.
func (l *sendLog) first(id string) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.at[id]
}

// RoutingTable renders the routing benchmark's result as a Markdown table.
func RoutingTable(r RoutingResult) string {
	var b bytes.Buffer
	fmt.Fprintln(&b, "| batch | urgent | labelled | served | buried | pending | label violations | urgent wait p50 / p99 | batch worst wait | 429 | 400 |")
	fmt.Fprintln(&b, "|---|---|---|---|---|---|---|---|---|---|---|")
	fmt.Fprintf(&b, "| %d | %d | %d | %d | %d | %d | %d | %s / %s | %s | %d | %d |\n",
		r.Batch, r.Urgent, r.Labelled, r.Served, r.Buried, r.Pending, r.Violations,
		r.UrgentP50.Round(time.Millisecond), r.UrgentP99.Round(time.Millisecond), r.BatchWorst.Round(time.Millisecond), r.RateLimited, r.BadNonce)
	return b.String()
}
