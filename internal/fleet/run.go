package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ratefleet/ratefleet"
	"github.com/ratefleet/ratefleet/internal/embedded"
	"github.com/ratefleet/ratefleet/internal/exchange"
	"github.com/ratefleet/ratefleet/internal/keys"
	"github.com/ratefleet/ratefleet/internal/natsconn"
	"github.com/ratefleet/ratefleet/internal/roles"
	"github.com/ratefleet/ratefleet/internal/stats"
)

// Config describes one fleet run.
type Config struct {
	// Bin is the folder holding the built commands.
	Bin string
	// Workers is how many worker processes to start.
	Workers int
	// Duration is how long the producer publishes.
	Duration time.Duration
	// Drain bounds the wait for the queue to empty once the producer stops.
	Drain time.Duration
	// ProducerArgs are extra producer flags (the load shape).
	ProducerArgs []string
	// WorkerArgs are extra worker flags (such as --limiter).
	WorkerArgs []string
	// ExchangeArgs are extra simulator flags.
	ExchangeArgs []string
	// Keys are the API keys the simulator knows and the workers hold;
	// exchange.DefaultKeys() when nil.
	Keys []keys.Key
	// Profile is the workers' upstream profile file; the reference when empty.
	Profile string
	// Monitor starts the monitor, its block printed to Out every MonitorInterval.
	Monitor         bool
	MonitorInterval time.Duration
	// MonitorHTTP, when set, is where the monitor serves its page and /metrics.
	MonitorHTTP string
	// Out receives the processes' output; Logs receives their logs prefixed with
	// their names (io.Discard to hide them).
	Out, Logs io.Writer
	// Logger reports the run's progress.
	Logger *slog.Logger
	// Cluster, when 3, runs NATS as an embedded three-node cluster with every
	// stream and bucket replicated three times; one node otherwise.
	Cluster int
	// ProxyRoutes, with Cluster 3, runs every route between two nodes through a
	// TCP proxy on loopback, so a run can cut, delay and heal links
	// (Fleet.Cluster.Cut and the like); the processes still connect to the nodes
	// directly.
	ProxyRoutes bool
	// NKeys gives each role's user an NKey instead of a password.
	NKeys bool
	// TLS makes the embedded server require TLS and client certificates from a
	// throwaway CA.
	TLS bool
	// NATSProcess runs the one NATS node in a child process (`fleet nats
	// --users-file`, from Bin) instead of inside this one, so that its CPU can be
	// measured apart from the runner's. Not with Cluster 3 or TLS.
	NATSProcess bool
	// Env is added to the environment of every process the fleet starts (such
	// as cli.CPUProfileEnv).
	Env []string
}

// shareCores returns the GOMAXPROCS setting for the fleet's NATS, producer and
// monitor processes on a machine of cpus cores whose environment is environ, or
// nil when GOMAXPROCS is set there or in cfg.Env (it then reaches every process
// as it is). Each gets its share of the cores, at least one, counting every
// process of the run: a Go process allowed every core keeps threads spinning for
// work on the cores the others need (docs/benchmarks.md, CPU per request).
//
// The workers and the simulator keep every core: with the workers on one core
// each, the fleet drew 429s in failover runs, even with the workers watching the
// machine's cores (docs/operating.md, several processes on one machine).
func shareCores(cfg Config, cpus int, environ []string) []string {
	for _, kv := range append(slices.Clone(environ), cfg.Env...) {
		if strings.HasPrefix(kv, "GOMAXPROCS=") {
			return nil
		}
	}
	procs := cfg.Workers + 3 // NATS, the simulator and the producer
	if cfg.Monitor {
		procs++
	}
	return []string{fmt.Sprintf("GOMAXPROCS=%d", max(1, cpus/procs))}
}

// Fleet is a running fleet.
type Fleet struct {
	cfg Config
	log *slog.Logger
	// NATS is the embedded server, or nil when Cluster runs the nodes or
	// NATSProc runs it.
	NATS    *embedded.Server
	Cluster *embedded.Cluster
	// NATSProc is the NATS node's process when Config.NATSProcess is set.
	NATSProc *Proc
	natsURL  string
	// Conn is the run's own connection, as the admin role.
	Conn *natsconn.Conn
	// Access holds the per-role users of the embedded server.
	Access *Access
	// StreamsFile is the streams.yaml every process checks (and the run applies);
	// empty for the built-in one.
	StreamsFile string
	dir         string
	Exchange    *Proc
	// ExchangeURL is the simulator's base URL.
	ExchangeURL string
	Workers     []*Proc
	Monitor     *Proc
	Producer    *Proc
	started     time.Time
	nextWorker  int
	keysFile    string   // the keys of Config.Keys, removed by Down
	share       []string // GOMAXPROCS of NATS, the producer and the monitor: shareCores
}

// Up starts NATS, applies the declarations, and starts the simulator, the workers
// and the monitor; the producer is started by Produce.
func Up(ctx context.Context, cfg Config) (_ *Fleet, err error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Logs == nil {
		cfg.Logs = io.Discard
	}
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	cfg.Out, cfg.Logs = &SyncWriter{W: cfg.Out}, &SyncWriter{W: cfg.Logs}
	f := &Fleet{cfg: cfg, log: cfg.Logger, started: time.Now(), share: shareCores(cfg, runtime.NumCPU(), os.Environ())}
	defer func() {
		if err != nil {
			f.Down()
		}
	}()
	if f.dir, err = os.MkdirTemp("", "ratefleet-access-*"); err != nil {
		return nil, fmt.Errorf("create the folder for the run's credentials: %w", err)
	}
	if cfg.Cluster > 1 {
		if f.StreamsFile, err = writeR3Streams(f.dir); err != nil {
			return nil, err
		}
	}
	decl, err := natsconn.LoadStreams(f.StreamsFile)
	if err != nil {
		return nil, err
	}
	if f.Access, err = NewAccess(decl, f.dir, cfg.NKeys, cfg.TLS); err != nil {
		return nil, err
	}
	users, err := f.Access.Users(decl)
	if err != nil {
		return nil, err
	}
	if cfg.NATSProcess {
		err = f.startNATSProcess(ctx, users)
	} else {
		err = f.startNATS(embedded.Options{Users: users, TLS: f.Access.TLS()})
	}
	if err != nil {
		return nil, err
	}
	admin, err := f.Access.Connection(f.URL(), roles.Admin)
	if err != nil {
		return nil, err
	}
	f.Conn, err = natsconn.Open(ctx, natsconn.Options{URL: admin.URL, Connect: admin.Options, Auth: admin.Auth, Name: "ratefleet-fleet",
		StreamsFile: f.StreamsFile, Routes: keys.RoutesOf(cfg.Keys), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return nil, err
	}
	f.log.Info("embedded NATS started with a user per role, streams.yaml applied as admin", "url", f.URL(), "nodes", max(cfg.Cluster, 1), "tls", cfg.TLS)

	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	f.ExchangeURL = "http://" + addr
	exArgs := append([]string{"--listen", addr}, cfg.ExchangeArgs...)
	if cfg.Keys != nil {
		if f.keysFile, err = writeKeys(cfg.Keys); err != nil {
			return nil, err
		}
		exArgs = append(exArgs, "--keys-file", f.keysFile)
	}
	f.Exchange, err = Start("exchange", f.Bin("exchange"), exArgs, cfg.Env, cfg.Logs, true)
	if err != nil {
		return nil, err
	}
	if err := waitHTTP(ctx, f.ExchangeURL+"/stats", 10*time.Second); err != nil {
		return nil, fmt.Errorf("exchange simulator: %w", err)
	}
	f.log.Info("exchange simulator started", "url", f.ExchangeURL)

	for range cfg.Workers {
		if _, err := f.StartWorker(); err != nil {
			return nil, err
		}
	}
	if cfg.Monitor {
		interval := cfg.MonitorInterval
		if interval == 0 {
			interval = 5 * time.Second
		}
		args := append(f.RoleArgs(roles.Monitor), "--interval", interval.String())
		if cfg.MonitorHTTP != "" {
			args = append(args, "--http", cfg.MonitorHTTP)
		}
		f.Monitor, err = Start("monitor", f.Bin("monitor"), args, slices.Concat(f.share, f.Access.Env(roles.Monitor), cfg.Env), cfg.Out, false)
		if err != nil {
			return nil, err
		}
	}
	return f, nil
}

// Bin returns the path of the named binary the fleet runs.
func (f *Fleet) Bin(name string) string { return filepath.Join(f.cfg.Bin, name) }

// Logger returns the fleet's logger.
func (f *Fleet) Logger() *slog.Logger { return f.cfg.Logger }

// Dir returns the fleet's own temporary folder, removed by Down.
func (f *Fleet) Dir() string { return f.dir }

// Logs returns where the fleet's processes write their logs.
func (f *Fleet) Logs() io.Writer { return f.cfg.Logs }

// startNATS starts the embedded server, or the three-node cluster, with the
// users and TLS of o.
func (f *Fleet) startNATS(o embedded.Options) error {
	var err error
	switch f.cfg.Cluster {
	case 0, 1:
		f.NATS, err = embedded.Start(o)
	case 3:
		f.Cluster, err = embedded.StartClusterWith("ratefleet", embedded.ClusterOptions{Users: o.Users, TLS: o.TLS, ProxyRoutes: f.cfg.ProxyRoutes})
	default:
		err = fmt.Errorf("cluster of %d nodes: the embedded cluster has 3", f.cfg.Cluster)
	}
	return err
}

// startNATSProcess starts the one NATS node as `fleet nats --users-file`, the
// users written to a file of the run's folder (readable by its owner only), and
// waits until it accepts connections.
func (f *Fleet) startNATSProcess(ctx context.Context, users []embedded.User) error {
	if f.cfg.Cluster > 1 || f.cfg.TLS {
		return fmt.Errorf("NATS in a process of its own: one node without TLS only")
	}
	doc, err := json.Marshal(users)
	if err != nil {
		return fmt.Errorf("write the NATS users: %w", err)
	}
	path := filepath.Join(f.dir, "nats-users.json")
	if err := os.WriteFile(path, doc, 0o600); err != nil {
		return fmt.Errorf("write the NATS users: %w", err)
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	args := []string{"nats", "--port", fmt.Sprint(port), "--users-file", path}
	if f.NATSProc, err = Start("nats", f.Bin("fleet"), args, slices.Concat(f.share, f.cfg.Env), f.cfg.Logs, true); err != nil {
		return err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	if err := waitTCP(ctx, addr, 10*time.Second); err != nil {
		return fmt.Errorf("NATS process: %w", err)
	}
	f.natsURL = "nats://" + addr
	return nil
}

// writeR3Streams writes the built-in streams.yaml with every stream and bucket
// replicated three times, for the cluster, into dir.
func writeR3Streams(dir string) (string, error) {
	path := filepath.Join(dir, "streams-r3.yaml")
	r3 := strings.ReplaceAll(string(ratefleet.DefaultStreams()), "replicas: 1", "replicas: 3")
	if err := os.WriteFile(path, []byte(r3), 0o600); err != nil {
		return "", fmt.Errorf("write the cluster's streams.yaml: %w", err)
	}
	return path, nil
}

// URL returns the NATS URL(s) the processes connect to.
func (f *Fleet) URL() string {
	if f.natsURL != "" {
		return f.natsURL
	}
	if f.Cluster != nil {
		return f.Cluster.ClientURLs()
	}
	return f.NATS.ClientURL()
}

// RoleArgs returns the flags that connect a command to the fleet's NATS as role;
// RoleEnv (f.Access.Env) carries the password, if any.
func (f *Fleet) RoleArgs(role string) []string {
	args := append([]string{"--nats", f.URL()}, f.Access.Args(role)...)
	if f.StreamsFile != "" {
		args = append(args, "--streams", f.StreamsFile)
	}
	return args
}

// StartWorker starts one more worker process. Each runs the graveyard keeper, as
// a worker does by default, so each runs as the keeper role.
func (f *Fleet) StartWorker() (*Proc, error) {
	f.nextWorker++
	id := fmt.Sprintf("worker-%d", f.nextWorker)
	args := append(f.RoleArgs(roles.Keeper), "--upstream", f.ExchangeURL, "--id", id)
	args = append(args, f.cfg.WorkerArgs...)
	env := append(f.Access.Env(roles.Keeper), keys.EnvVar+"="+f.keyPairs())
	if f.keysFile != "" {
		args, env = append(args, "--keys-file", f.keysFile), f.Access.Env(roles.Keeper)
	}
	if f.cfg.Profile != "" {
		args = append(args, "--profile", f.cfg.Profile)
	}
	p, err := Start(id, f.Bin("worker"), args, append(env, f.cfg.Env...), f.cfg.Logs, true)
	if err != nil {
		return nil, err
	}
	f.Workers = append(f.Workers, p)
	return p, nil
}

// keyPairs returns the fleet's keys as name=secret, comma-separated.
func (f *Fleet) keyPairs() string {
	ks := f.cfg.Keys
	if len(ks) == 0 {
		ks = exchange.DefaultKeys()
	}
	pairs := make([]string, len(ks))
	for i, k := range ks {
		pairs[i] = k.Name() + "=" + k.Secret()
	}
	return strings.Join(pairs, ",")
}

// StartProducer starts the producer for the configured duration.
func (f *Fleet) StartProducer() error {
	args := append(f.RoleArgs(roles.Producer), "--duration", f.cfg.Duration.String())
	args = append(args, f.cfg.ProducerArgs...)
	p, err := Start("producer", f.Bin("producer"), args, slices.Concat(f.share, f.Access.Env(roles.Producer), f.cfg.Env), f.cfg.Logs, true)
	if err != nil {
		return err
	}
	f.Producer = p
	return nil
}

// Produce runs the producer for the configured duration and waits for it to end;
// when ctx ends first, the producer is stopped and settles what it published.
func (f *Fleet) Produce(ctx context.Context) error {
	if err := f.StartProducer(); err != nil {
		return err
	}
	if err := f.Producer.WaitCtx(ctx); err != nil {
		_ = f.Producer.Stop(10 * time.Second)
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("producer: %w", err)
	}
	return nil
}

// Drain waits until no request is waiting or in flight, or the drain time is up.
func (f *Fleet) Drain(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, f.cfg.Drain)
	defer cancel()
	sc := f.Conn.Streams
	for ctx.Err() == nil {
		busy := false
		for _, rc := range sc.RouteConsumers() {
			c, err := f.Conn.JS.Consumer(ctx, sc.Requests.Stream.Name, rc.Durable)
			if err != nil {
				busy = true // cannot tell: look again
				continue
			}
			info := c.CachedInfo()
			busy = busy || info.NumPending > 0 || info.NumAckPending > 0
		}
		if !busy {
			return
		}
		_ = Sleep(ctx, 100*time.Millisecond)
	}
}

// StopWorkers stops the producer and every worker with SIGTERM and waits: each
// finishes its in-flight requests, hands its key over and publishes its last stats.
func (f *Fleet) StopWorkers() {
	if f.Producer != nil {
		_ = f.Producer.Stop(10 * time.Second)
	}
	for _, w := range f.Workers {
		_ = w.Signal(syscall.SIGTERM)
	}
	for _, w := range f.Workers {
		if err := w.Stop(15 * time.Second); err != nil {
			f.log.Warn("worker exited with an error", "worker", w.Name, "err", err)
		}
	}
}

// Down stops everything: workers first (they hand their keys over), then the
// monitor, the simulator and NATS.
func (f *Fleet) Down() {
	f.StopWorkers()
	if f.Monitor != nil {
		_ = f.Monitor.Stop(5 * time.Second)
	}
	if f.Exchange != nil {
		_ = f.Exchange.Stop(5 * time.Second)
	}
	if f.Conn != nil {
		f.Conn.Close()
	}
	if f.NATS != nil {
		f.NATS.Shutdown()
	}
	if f.NATSProc != nil {
		_ = f.NATSProc.Stop(10 * time.Second)
	}
	if f.Cluster != nil {
		f.Cluster.Shutdown()
	}
	if f.dir != "" {
		_ = os.RemoveAll(f.dir)
	}
	if f.keysFile != "" {
		_ = os.RemoveAll(filepath.Dir(f.keysFile))
	}
}

// writeKeys writes ks to a keys file of its own folder, readable by its owner
// only, one key a line.
func writeKeys(ks []keys.Key) (string, error) {
	dir, err := os.MkdirTemp("", "ratefleet-keys-")
	if err != nil {
		return "", fmt.Errorf("keys file: %w", err)
	}
	var b strings.Builder
	for _, k := range ks {
		groups := ""
		if k.Account() != k.Name() {
			groups += " account=" + k.Account()
		}
		if ls := k.Labels(); len(ls) > 0 {
			groups += " labels=" + strings.Join(ls, ",")
		}
		switch {
		case k.ID() != "":
			fmt.Fprintf(&b, "%s id=%s secret=%s%s\n", k.Name(), k.ID(), k.Secret(), groups)
		case groups != "":
			fmt.Fprintf(&b, "%s secret=%s%s\n", k.Name(), k.Secret(), groups)
		default:
			fmt.Fprintf(&b, "%s=%s\n", k.Name(), k.Secret())
		}
	}
	path := filepath.Join(dir, "keys")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		return "", fmt.Errorf("keys file: %w", err)
	}
	return path, nil
}

// Summary is what a run did, from NATS's and the simulator's own records.
type Summary struct {
	Elapsed      time.Duration     `json:"elapsed"`
	Published    uint64            `json:"published"`
	Successful   uint64            `json:"successful"`
	Buried       uint64            `json:"buried"`
	InQueue      uint64            `json:"in_queue"`
	Results      map[string]uint64 `json:"results"`
	LatencyP50ms int64             `json:"latency_p50_ms"`
	LatencyP99ms int64             `json:"latency_p99_ms"`
	LatencyMaxms int64             `json:"latency_max_ms"`
	Exchange     ExchangeTotals    `json:"exchange"`
	ResultCheck  ResultCheck       `json:"result_check"`
}

// Lost returns how many published requests the upstream never answered 200 and
// that are neither in the graveyard nor still queued: 0 unless something is wrong.
// It is counted from the simulator's distinct request ids and NATS's own state,
// not from the workers' reports.
func (s Summary) Lost() int64 {
	return int64(s.Published) - int64(s.Exchange.Distinct) - int64(s.Buried) - int64(s.InQueue)
}

// Summarize reads the run's totals.
func (f *Fleet) Summarize(ctx context.Context, producing time.Duration) (Summary, error) {
	s := Summary{Elapsed: producing, Results: map[string]uint64{}}
	sc := f.Conn.Streams
	js := f.Conn.JS
	req, err := js.Stream(ctx, sc.Requests.Stream.Name)
	if err != nil {
		return s, fmt.Errorf("read requests stream: %w", err)
	}
	s.Published = req.CachedInfo().State.LastSeq
	s.InQueue = req.CachedInfo().State.Msgs
	grave, err := js.Stream(ctx, sc.Graveyard.Stream.Name)
	if err != nil {
		return s, fmt.Errorf("read graveyard: %w", err)
	}
	s.Buried = grave.CachedInfo().State.Msgs
	reports, err := LastReports(ctx, js, sc.Stats.Stream.Name)
	if err != nil {
		return s, err
	}
	lat := stats.NewLatencyHistogram()
	for _, r := range reports {
		for k, v := range r.Results {
			s.Results[k] += v
		}
		h, err := r.DecodeLatency()
		if err != nil {
			return s, err
		}
		lat.Merge(h)
	}
	s.Successful = s.Results[stats.ResultOK]
	s.LatencyP50ms, s.LatencyP99ms, s.LatencyMaxms = lat.ValueAtQuantile(50), lat.ValueAtQuantile(99), lat.Max()
	if s.Exchange, err = FetchExchangeTotals(ctx, f.ExchangeURL); err != nil {
		return s, err
	}
	s.ResultCheck, err = CheckResults(ctx, js, sc, f.ExchangeURL)
	return s, err
}

// LastReports reads the last report of every worker from the stats stream.
func LastReports(ctx context.Context, js jetstream.JetStream, stream string) ([]stats.Report, error) {
	return stats.LastReports(ctx, js, stream)
}

// ExchangeTotals are the simulator's own counts over all keys.
type ExchangeTotals struct {
	Accepted    uint64 `json:"accepted"`
	OK          uint64 `json:"ok"`
	RateLimited uint64 `json:"rate_limited"`
	BadNonce    uint64 `json:"bad_nonce"`
	Blocked     uint64 `json:"blocked"`
	MaxInWindow int    `json:"max_in_window"`
	Duplicates  uint64 `json:"duplicates"`
	Spikes      uint64 `json:"spikes"`   // requests whose incoming delay a spike lengthened
	Distinct    uint64 `json:"distinct"` // request ids answered 200
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func waitTCP(ctx context.Context, addr string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	for {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			return c.Close()
		}
		if Sleep(ctx, 50*time.Millisecond) != nil {
			return fmt.Errorf("not accepting connections at %s after %s: %w", addr, timeout, err)
		}
	}
}

func waitHTTP(ctx context.Context, url string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			return nil
		}
		if Sleep(ctx, 50*time.Millisecond) != nil {
			return fmt.Errorf("not answering at %s after %s: %w", url, timeout, err)
		}
	}
}

// Sleep waits for d, or until ctx ends (its error then).
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// FetchExchangeStats reads the simulator's /stats.
func FetchExchangeStats(ctx context.Context, baseURL string) (exchange.Stats, error) {
	var st exchange.Stats
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, baseURL+"/stats", nil)
	if err != nil {
		return st, fmt.Errorf("exchange stats: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return st, fmt.Errorf("exchange stats: %w", err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return st, fmt.Errorf("exchange stats: %w", err)
	}
	return st, nil
}

// FetchExchangeTotals reads the simulator's /stats and sums it over the keys.
func FetchExchangeTotals(ctx context.Context, baseURL string) (ExchangeTotals, error) {
	var t ExchangeTotals
	st, err := FetchExchangeStats(ctx, baseURL)
	if err != nil {
		return t, err
	}
	for _, k := range st.Keys {
		t.Accepted += k.Accepted
		t.OK += k.OK
		t.RateLimited += k.RateLimited
		t.BadNonce += k.BadNonce
		if k.Blocked {
			t.Blocked++
		}
		t.MaxInWindow = max(t.MaxInWindow, k.MaxInWindow)
	}
	t.Duplicates, t.Distinct, t.Spikes = uint64(st.Duplicates), uint64(st.DistinctIDs), st.Spikes
	return t, nil
}

// FormatSummary renders a run's summary for people.
func FormatSummary(s Summary) string {
	var b strings.Builder
	rate := 0.0
	if s.Elapsed > 0 {
		rate = float64(s.Successful) / s.Elapsed.Seconds()
	}
	fmt.Fprintf(&b, "\n=== ratefleet run summary ===\n")
	fmt.Fprintf(&b, "producing time        %s\n", s.Elapsed.Round(time.Millisecond))
	fmt.Fprintf(&b, "published             %d\n", s.Published)
	fmt.Fprintf(&b, "successful            %d  (%.2f req/s over the producing time)\n", s.Successful, rate)
	fmt.Fprintf(&b, "in graveyard          %d\n", s.Buried)
	fmt.Fprintf(&b, "still queued          %d\n", s.InQueue)
	fmt.Fprintf(&b, "lost                  %s\n", LostLine(s))
	fmt.Fprintf(&b, "latency p50/p99/max   %d / %d / %d ms (created to answered)\n", s.LatencyP50ms, s.LatencyP99ms, s.LatencyMaxms)
	results := make([]string, 0, len(s.Results))
	for _, r := range slices.Sorted(maps.Keys(s.Results)) {
		results = append(results, fmt.Sprintf("%s %d", r, s.Results[r]))
	}
	fmt.Fprintf(&b, "attempts by result    %s\n", strings.Join(results, ", "))
	e := s.Exchange
	fmt.Fprintf(&b, "exchange saw          %d accepted, %d x 429, %d x 400, %d blocked keys, max %d in any window, %d ids answered 200 more than once\n",
		e.Accepted, e.RateLimited, e.BadNonce, e.Blocked, e.MaxInWindow, e.Duplicates)
	r := s.ResultCheck
	fmt.Fprintf(&b, "results stream        %d results for %d ids (%d served, %d buried), %d ids with a repeated result, %d ids not matching the exchange's\n",
		r.Results, r.Distinct, r.Served, r.Buried, r.Repeated, r.Unmatched)
	return b.String()
}

// LostLine explains Summary.Lost: positive, requests nobody answered, buried or
// queued; negative, requests answered whose worker died before acknowledging
// them, so they are also still queued and will be delivered again.
func LostLine(s Summary) string {
	switch l := s.Lost(); {
	case l > 0:
		return fmt.Sprintf("%d requests UNACCOUNTED FOR", l)
	case l < 0:
		return fmt.Sprintf("none lost (%d answered but still queued: their worker died before acknowledging)", -l)
	}
	return "none lost"
}
