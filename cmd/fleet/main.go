// Command fleet runs a whole ratefleet on this machine: an embedded NATS server,
// the upstream simulator, a producer, workers and the monitor, each worker a process
// of its own. It is what `make run` starts.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ratefleet/ratefleet/internal/bench"
	"github.com/ratefleet/ratefleet/internal/cli"
	"github.com/ratefleet/ratefleet/internal/embedded"
	"github.com/ratefleet/ratefleet/internal/fleet"
	"github.com/ratefleet/ratefleet/internal/natsconn"
	"github.com/ratefleet/ratefleet/internal/roles"
	"github.com/ratefleet/ratefleet/internal/soak"
	"github.com/ratefleet/ratefleet/wire"
)

func main() {
	cli.Main("fleet", func(ctx context.Context) error { return run(ctx, os.Args[1:], os.Stdout, os.Stderr) })
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	sub := func(name string, run func(context.Context, []string, io.Writer, io.Writer) error) cli.Sub {
		return cli.Sub{Name: name, Run: func(ctx context.Context, args []string) error { return run(ctx, args, stdout, stderr) }}
	}
	return cli.Dispatch(ctx, "fleet", "", args, stdout, stderr,
		func(ctx context.Context, args []string) error { return runFleet(ctx, args, stdout, stderr) },
		sub("bench", benchCmd), sub("delays", delays), sub("models", models), sub("failover", failover), sub("scale", scale), sub("cpu", cpuCmd),
		sub("chaos", chaos), sub("soak", soakCmd), sub("partition", partition), sub("nats", natsServer))
}

// runFleet runs the whole fleet on this machine and prints what happened to
// every request.
func runFleet(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := cli.NewCommand("fleet", "Runs NATS, the exchange simulator, a producer, workers and the monitor on this machine,\nthen prints what happened to every request. The embedded NATS has one user per role\n(`streams roles`), and each process connects as its own. `fleet bench --help` describes the benchmark.\n\nOther commands, each with its own --help:\n  fleet bench      the saturation benchmark\n  fleet delays     the delay benchmark\n  fleet models     the rate-limit models benchmark\n  fleet failover   the failover benchmark\n  fleet scale      the scale benchmark\n  fleet cpu        the CPU each request costs, per kind of process\n  fleet chaos      the cluster benchmark\n  fleet soak       the conservation soak\n  fleet partition  the conservation soak under network partitions of a three-node cluster\n  fleet nats       an embedded NATS with one user per role", stdout, stderr)
	fs := cmd.Flags
	bin, logs := runFlags(fs)
	var (
		workers  = fs.Int("workers", 5, "worker processes to start")
		duration = fs.Duration("duration", 60*time.Second, "how long the producer publishes")
		drain    = fs.Duration("drain", 15*time.Second, "how long to wait for the queue to empty after the producer stops")
		interval = fs.Duration("interval", 5*time.Second, "how often the monitor prints")
		limiter  = fs.String("limiter", "adaptive", "the workers' limiter")
		shape    = fs.String("shape", "seed", "the producer's load shape")
		rate     = fs.Float64("rate", 95, "requests a second, for the rate and poisson shapes")
		monitor  = fs.Bool("monitor", true, "start the monitor and show its block")
		web      = fs.String("http", "", "let the monitor serve its live page and /metrics here, such as 127.0.0.1:9090")
		cluster  = fs.Int("cluster", 1, "NATS nodes: 1, or 3 for an embedded three-node cluster with every stream and bucket R3")
		useTLS   = fs.Bool("tls", false, "make the embedded NATS require TLS and client certificates from a throwaway CA")
		nkeys    = fs.Bool("nkeys", false, "give each role's NATS user an NKey instead of a random password")
		prof     = fs.String("profile", "reference", "the upstream's shape: reference, signed, per-minute, or a profile file")
		ttl      = fs.Duration("ttl", 0, "the requests' time to live (default: the producer's, 1s)")
		outage   = fs.Duration("outage", 0, "make the simulator be down for this long from its start, answering 503 at once: an upstream outage")
	)
	if _, err := cmd.Parse(args, os.Getenv); err != nil {
		return err
	}
	log := cmd.Logger()
	logOut := processLogs(*logs, stderr)
	setup, err := fleet.SetupFor(*prof)
	if err != nil {
		return err
	}
	defer setup.Close()
	if *ttl < 0 || *outage < 0 {
		return cmd.Usage(fmt.Errorf("--ttl %s and --outage %s must not be negative", *ttl, *outage))
	}
	producerArgs := []string{"--shape", *shape, "--rate", fmt.Sprint(*rate)}
	if *ttl > 0 {
		producerArgs = append(producerArgs, "--ttl", ttl.String())
	}
	exchangeArgs := setup.ExchangeArgs
	if *outage > 0 {
		exchangeArgs = append(slices.Clone(exchangeArgs), "--down-for", outage.String())
	}
	f, err := fleet.Up(ctx, fleet.Config{
		Keys: setup.Keys, Profile: setup.Profile, ExchangeArgs: exchangeArgs,
		Bin: *bin, Workers: *workers, Duration: *duration, Drain: *drain,
		ProducerArgs: producerArgs, WorkerArgs: []string{"--limiter", *limiter},
		Monitor: *monitor, MonitorInterval: *interval, MonitorHTTP: *web, Out: stdout, Logs: logOut, Logger: log,
		TLS: *useTLS, NKeys: *nkeys, Cluster: *cluster,
	})
	if err != nil {
		return err
	}
	defer f.Down()
	log.Info("fleet up: producing", "workers", *workers, "duration", *duration, "shape", *shape, "limiter", *limiter)
	start := time.Now()
	if err := f.Produce(ctx); err != nil {
		return err
	}
	producing := time.Since(start)
	if ctx.Err() != nil {
		log.Info("interrupted: draining and stopping cleanly")
	}
	f.Drain(context.WithoutCancel(ctx))
	f.StopWorkers()
	sum, err := f.Summarize(context.WithoutCancel(ctx), producing)
	f.Down()
	if err != nil {
		return err
	}
	fmt.Fprint(stdout, fleet.FormatSummary(sum))
	if sum.Lost() > 0 {
		return fmt.Errorf("%d requests unaccounted for", sum.Lost())
	}
	return nil
}

// processLogs returns where the processes' log lines go: all of them to w, or only
// the warnings and errors.
func processLogs(all bool, w io.Writer) io.Writer {
	if all {
		return w
	}
	return &warnings{w: w}
}

// warnings passes on only log lines at WARN or ERROR.
type warnings struct{ w io.Writer }

func (w *warnings) Write(p []byte) (int, error) {
	if containsLevel(p) {
		return w.w.Write(p)
	}
	return len(p), nil
}

func containsLevel(p []byte) bool {
	s := string(p)
	for _, marker := range []string{"level=WARN", "level=ERROR", `"level":"WARN"`, `"level":"ERROR"`, "panic:", "fatal error:"} {
		if strings.Contains(s, marker) {
			return true
		}
	}
	return false
}

func benchCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := cli.NewCommand("fleet bench", "Saturation benchmark: for each limiter, a fresh NATS, simulator and fleet under the same\noffered load; prints one Markdown table.", stdout, stderr)
	fs := cmd.Flags
	bin, logs := runFlags(fs)
	var (
		workers  = fs.Int("workers", 5, "worker processes")
		duration = fs.Duration("duration", 60*time.Second, "measured time per limiter")
		warmup   = fs.Duration("warmup", 5*time.Second, "time before measuring")
		rate     = fs.Float64("rate", 200, "offered requests a second, far above capacity")
		limiters = fs.String("limiters", "adaptive,interval-ring,ring-buffer,rate-burst1,rate-burst20", "limiters to compare, comma-separated")
		prof     = fs.String("profile", "reference", "the upstream's shape: reference, signed, per-minute, or a profile file")
	)
	if _, err := cmd.Parse(args, os.Getenv); err != nil {
		return err
	}
	logOut := processLogs(*logs, stderr)
	setup, err := fleet.SetupFor(*prof)
	if err != nil {
		return err
	}
	defer setup.Close()
	cfg := bench.Config{
		Bin: *bin, Limiters: strings.Split(*limiters, ","), Workers: *workers, Duration: *duration, Warmup: *warmup,
		Rate: *rate, Setup: setup, Logs: logOut, Logger: cmd.Logger(),
	}
	rows, err := bench.Saturation(ctx, cfg)
	fmt.Fprint(stdout, bench.FormatSaturation(rows, cfg))
	return err
}

func delays(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := cli.NewCommand("fleet delays", "Delay benchmark: the adaptive limiter against (a) the reference, (b) a spread wider than\nits L, (c) delay spikes, (d) many keys on this machine, (e) a slow tail, (f) a tail past the\nrequest timeout, (g) a per-minute rule and (h) no nonce; prints one Markdown table.", stdout, stderr)
	fs := cmd.Flags
	bin, logs := runFlags(fs)
	var (
		duration = fs.Duration("duration", 60*time.Second, "measured time per case")
		warmup   = fs.Duration("warmup", 5*time.Second, "time before measuring")
		keys     = fs.Int("many-keys", 200, "keys in the many-keys case (d)")
		workers  = fs.Int("many-workers", bench.DefaultManyWorkers, "worker processes in the many-keys case (d), which share its keys")
		only     = fs.String("cases", "a,b,c,d,e,f,g,h", "cases to run, comma-separated")
	)
	if _, err := cmd.Parse(args, os.Getenv); err != nil {
		return err
	}
	cfg := bench.Config{Bin: *bin, Duration: *duration, Warmup: *warmup,
		Logs: processLogs(*logs, stderr), Logger: cmd.Logger()}
	var cases []bench.DelayCase
	if *keys < 1 || *workers < 1 {
		return cmd.Usage(fmt.Errorf("--many-keys and --many-workers must be at least 1"))
	}
	for _, c := range bench.DelayCases(*keys, *workers) {
		if strings.Contains(","+*only+",", ","+c.Name[1:2]+",") {
			cases = append(cases, c)
		}
	}
	rows, err := bench.Delays(ctx, cfg, cases)
	fmt.Fprint(stdout, bench.FormatDelays(rows, cfg))
	return err
}

func models(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := cli.NewCommand("fleet models", "Rate-limit models benchmark: the fleet against the simulator's models of real upstreams\n(a rule shared by five keys, Binance's weights and orders, an LLM API's tokens), each with\nthe profile that speaks it; prints one table: 429, 418, 400, the rate of the binding rule,\nits bound and the ratio, and how each bound is computed.", stdout, stderr)
	fs := cmd.Flags
	bin, logs := runFlags(fs)
	var (
		duration   = fs.Duration("duration", 60*time.Second, "measured time per case, unless the case needs whole minutes")
		warmup     = fs.Duration("warmup", 10*time.Second, "time before measuring, unless the case needs more")
		only       = fs.String("cases", "", "model cases to run, by number (1,3); all when empty")
		outside    = fs.Bool("outside", true, "also run the outside-client case: 30 % of one key's budget used by a client outside the fleet, seen only in usage headers")
		batch      = fs.Int("batch", 10000, "routing and priorities: batch requests queued before the workers start; 0 skips the case")
		urgent     = fs.Int("urgent", 300, "routing and priorities: urgent requests published while the batch drains")
		urgentRate = fs.Float64("urgent-rate", 3, "routing and priorities: urgent requests a second")
	)
	if _, err := cmd.Parse(args, os.Getenv); err != nil {
		return err
	}
	all, err := bench.ModelCases()
	if err != nil {
		return err
	}
	var cases []bench.ModelCase
	for i, c := range all {
		if *only == "" || strings.Contains(","+*only+",", fmt.Sprintf(",%d,", i+1)) {
			cases = append(cases, c)
		}
	}
	cfg := bench.Config{Bin: *bin, Duration: *duration, Warmup: *warmup, Logs: processLogs(*logs, stderr), Logger: cmd.Logger()}
	rows, err := bench.Models(ctx, cfg, cases)
	if err == nil && *outside {
		ucfg := bench.UsageConfig{Bin: *bin, Share: 0.3, Duration: *duration, Warmup: *warmup, Logs: cfg.Logs, Logger: cfg.Logger}
		cfg.Logger.Info("models benchmark: case", "case", "outside client")
		var u bench.UsageRow
		if u, err = bench.Usage(ctx, ucfg); err == nil {
			rows = append(rows, bench.OutsideRow(u))
		}
	}
	fmt.Fprint(stdout, bench.FormatModels(rows))
	if err == nil && *batch > 0 {
		cfg.Logger.Info("models benchmark: case", "case", "routing and priorities", "batch", *batch)
		var r bench.RoutingResult
		r, err = bench.Routing(ctx, bench.RoutingConfig{Batch: *batch, Urgent: *urgent, UrgentRate: *urgentRate, Logger: cfg.Logger})
		if err == nil {
			fmt.Fprintf(stdout, "\nRouting and priorities: %d batch requests queued before the workers start, then %d urgent at %g a second; every %dth request names a label two of the five keys carry.\n\n%s",
				r.Batch, r.Urgent, *urgentRate, 5, bench.RoutingTable(r))
		}
	}
	return err
}

func failover(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := cli.NewCommand("fleet failover", "Failover benchmark: stops a key holder every --every, with kill -9 and SIGTERM in turn.", stdout, stderr)
	fs := cmd.Flags
	bin, logs := runFlags(fs)
	var (
		workers  = fs.Int("workers", 8, "worker processes at start")
		duration = fs.Duration("duration", 5*time.Minute, "how long the run lasts")
		every    = fs.Duration("every", 20*time.Second, "how often a key holder is stopped")
		rate     = fs.Float64("rate", 200, "offered requests a second")
	)
	if _, err := cmd.Parse(args, os.Getenv); err != nil {
		return err
	}
	logOut := processLogs(*logs, stderr)
	cfg := bench.FailoverConfig{Bin: *bin, Workers: *workers, Duration: *duration, Every: *every, Rate: *rate,
		Logs: logOut, Logger: cmd.Logger()}
	res, err := bench.Failover(ctx, cfg)
	fmt.Fprint(stdout, bench.FormatFailover(res, cfg))
	return err
}

func soakCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := cli.NewCommand("fleet soak", "Conservation soak: the seed load with a random fault every --every (upstream 5xx bursts,\n"+
		"upstream down, a worker killed or paused, NATS restarted, a producer killed mid-publish, an oversize\n"+
		"and a malformed request, a key made unusable), then an audit of every request id.", stdout, stderr)
	fs := cmd.Flags
	bin, logs := runFlags(fs)
	var (
		workers  = fs.Int("workers", 6, "worker processes at start (five keys, one of which is made unusable)")
		duration = fs.Duration("duration", 10*time.Minute, "how long the producers publish")
		every    = fs.Duration("every", 20*time.Second, "how often a fault is injected")
		ttl      = fs.Duration("ttl", 10*time.Second, "the requests' time to live")
		seed     = fs.Uint64("seed", 1, "random seed of the fault schedule")
	)
	if _, err := cmd.Parse(args, os.Getenv); err != nil {
		return err
	}
	cfg := soak.Config{Bin: *bin, Workers: *workers, Duration: *duration, Every: *every, TTL: *ttl, Seed: *seed,
		Logs: processLogs(*logs, stderr), Logger: cmd.Logger()}
	res, err := soak.Run(ctx, cfg)
	fmt.Fprint(stdout, soak.Format(res, cfg))
	if err == nil && (len(res.Audit.Lost) > 0 || res.Audit.Untracked > 0) {
		err = fmt.Errorf("%d requests lost", len(res.Audit.Lost))
	}
	for _, t := range res.Audit.Twice {
		if err == nil && t.Cause == "" {
			err = fmt.Errorf("request %s answered twice with no fault to explain it", t.ID)
		}
	}
	return err
}

func partition(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := cli.NewCommand("fleet partition", "Partition soak: the seed load on an embedded three-node NATS cluster (R3) whose routes run\n"+
		"through TCP proxies, with random partitions (a minority node cut off, the leader isolated, a flapping\n"+
		"link, a delayed link), each 5-30 s then healed; then every link healed, the queue drained and every\n"+
		"request id audited. Prints one Markdown table; fails if a request is lost, a 429 was drawn or a\n"+
		"request was answered twice with no fault to explain it.", stdout, stderr)
	fs := cmd.Flags
	bin, logs := runFlags(fs)
	var (
		workers  = fs.Int("workers", 6, "worker processes (five keys and a standby)")
		duration = fs.Duration("duration", 10*time.Minute, "how long the producers publish")
		ttl      = fs.Duration("ttl", 10*time.Second, "the requests' time to live")
		seed     = fs.Uint64("seed", 0, "random seed of the partition schedule (0: drawn from the clock, and printed)")
	)
	if _, err := cmd.Parse(args, os.Getenv); err != nil {
		return err
	}
	if *seed == 0 {
		*seed = uint64(time.Now().UnixNano())
	}
	log := cmd.Logger()
	log.Info("partition soak", "seed", *seed, "duration", *duration)
	cfg := soak.Config{Bin: *bin, Workers: *workers, Duration: *duration, TTL: *ttl, Seed: *seed,
		Logs: processLogs(*logs, stderr), Logger: log}
	res, err := soak.Partition(ctx, cfg)
	fmt.Fprint(stdout, soak.FormatPartition(res, cfg))
	if err != nil {
		return err
	}
	if n := len(res.Audit.Lost); n > 0 || res.Audit.Untracked > 0 {
		return fmt.Errorf("%d requests lost (seed %d)", n, *seed)
	}
	if n := res.Exchange.RateLimited; n > 0 {
		return fmt.Errorf("%d requests drew a 429 (seed %d)", n, *seed)
	}
	for _, t := range res.Audit.Twice {
		if t.Cause == "" {
			return fmt.Errorf("request %s answered twice with no fault to explain it (seed %d)", t.ID, *seed)
		}
	}
	return nil
}

func natsServer(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := cli.NewCommand("fleet nats", "Runs an embedded NATS server with JetStream on loopback until interrupted, with one NKey user\nper role (`streams roles`) and streams.yaml applied as admin. Connect a command as a role\nwith --nkey ACCESS/ROLE.nk.", stdout, stderr)
	fs := cmd.Flags
	var (
		port      = fs.Int("port", 4222, "client port on 127.0.0.1")
		store     = fs.String("store", "", "JetStream store folder (default: a temporary one, removed on exit)")
		access    = fs.String("access", "", "folder for each role's NKey seed file and, with --tls, the certificates (default: a temporary one, removed on exit)")
		useTLS    = fs.Bool("tls", false, "require TLS and client certificates from a throwaway CA written to --access")
		usersFile = fs.String("users-file", "", "serve exactly the users of this JSON `file` (as a fleet run writes them), with no roles listed nor streams applied: how `fleet cpu` runs NATS in a process of its own")
	)
	if _, err := cmd.Parse(args, os.Getenv); err != nil {
		return err
	}
	if *usersFile != "" {
		return natsForUsers(ctx, *usersFile, *port, *store, stdout)
	}
	dir := *access
	if dir == "" {
		tmp, err := os.MkdirTemp("", "ratefleet-access-*")
		if err != nil {
			return fmt.Errorf("create the credentials folder: %w", err)
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	} else if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("--access %s: %w", dir, err)
	}
	decl, err := natsconn.LoadStreams("")
	if err != nil {
		return err
	}
	acc, err := fleet.NewAccess(decl, dir, true, *useTLS)
	if err != nil {
		return err
	}
	users, err := acc.Users(decl)
	if err != nil {
		return err
	}
	s, err := embedded.Start(embedded.Options{Port: *port, StoreDir: *store, Users: users, TLS: acc.TLS()})
	if err != nil {
		return err
	}
	defer s.Shutdown()
	admin, err := acc.Connection(s.ClientURL(), roles.Admin)
	if err != nil {
		return err
	}
	conn, err := natsconn.Open(ctx, natsconn.Options{URL: admin.URL, Connect: admin.Options, Auth: admin.Auth, Name: "ratefleet-fleet", Logger: cmd.Logger()})
	if err != nil {
		return err
	}
	conn.Close()
	fmt.Fprintf(stdout, "NATS with JetStream at %s (store %s); Ctrl-C to stop\n", s.ClientURL(), s.StoreDir())
	for _, r := range roles.Names() {
		fmt.Fprintf(stdout, "  as %-9s %s\n", r, strings.Join(acc.Args(r), " "))
	}
	<-ctx.Done()
	return nil
}

// natsForUsers runs an embedded NATS on port until ctx ends, accepting only the
// users the file lists.
func natsForUsers(ctx context.Context, path string, port int, store string, stdout io.Writer) error {
	doc, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("--users-file: %w", err)
	}
	var users []embedded.User
	if err := json.Unmarshal(doc, &users); err != nil {
		return fmt.Errorf("--users-file %s: %w", path, err)
	}
	if len(users) == 0 {
		return fmt.Errorf("--users-file %s: no users: a server for nobody would accept anyone", path)
	}
	s, err := embedded.Start(embedded.Options{Port: port, StoreDir: store, Users: users})
	if err != nil {
		return err
	}
	defer s.Shutdown()
	fmt.Fprintf(stdout, "NATS with JetStream at %s for %d users\n", s.ClientURL(), len(users))
	<-ctx.Done()
	return nil
}

func scale(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := cli.NewCommand("fleet scale", "Scale benchmark: for each number of keys, a fresh fleet holds them all, idle, then under load;\nprints one Markdown table (claim time, idle CPU, control traffic, pulls, throughput, CPU per request).", stdout, stderr)
	fs := cmd.Flags
	bin, logs := runFlags(fs)
	var (
		keyList = fs.String("keys", "5,50,200,500,1000", "numbers of keys to measure, comma-separated")
		workers = fs.Int("workers", 5, "worker processes; each holds an equal share of the keys")
		perKey  = fs.Float64("per-key-rate", 1, "requests a second offered per key under load")
		idle    = fs.Duration("idle", 30*time.Second, "how long the idle phase is measured")
		load    = fs.Duration("load", 30*time.Second, "how long the load phase publishes")
		ttl     = fs.Duration("ttl", 10*time.Second, "the requests' time to live")
		plot    = fs.String("plot", "", "also draw the rows into this file (.svg or .png)")
	)
	if _, err := cmd.Parse(args, os.Getenv); err != nil {
		return err
	}
	var ns []int
	for _, p := range strings.Split(*keyList, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || n < 1 {
			return fmt.Errorf("--keys %q: want positive numbers, comma-separated", *keyList)
		}
		ns = append(ns, n)
	}
	if *workers < 1 {
		return fmt.Errorf("--workers %d must be at least 1", *workers)
	}
	cfg := bench.ScaleConfig{Bin: *bin, Keys: ns, Workers: *workers, PerKeyRate: *perKey, Idle: *idle, Load: *load, TTL: *ttl,
		Logs: processLogs(*logs, stderr), Logger: cmd.Logger()}
	rows, err := bench.Scale(ctx, cfg)
	fmt.Fprint(stdout, bench.FormatScale(rows, cfg))
	if err != nil {
		return err
	}
	if *plot != "" && len(rows) > 0 {
		if err := bench.PlotScale(rows, *plot); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "\nplot written to %s\n", *plot)
	}
	return nil
}

func cpuCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := cli.NewCommand("fleet cpu", "CPU benchmark: for each cell of --keys × --workers, a fresh fleet (NATS in a process of its own)\n"+
		"offered 1.1 × 20 req/s a key; over --duration after --warmup, the CPU time of each kind of process\n"+
		"(workers, NATS, simulator, producer, monitor) per request answered 200, and the cores 1,000 keys\n"+
		"would take. One cell (--profile-cell) also writes CPU profiles, summarised with `go tool pprof -top`.\n"+
		"--nats-alone adds what the same messages cost NATS with nothing else in the way.", stdout, stderr)
	fs := cmd.Flags
	bin, logs := runFlags(fs)
	var (
		keyList    = fs.String("keys", "5,50,100,200", "numbers of keys, comma-separated")
		workerList = fs.String("workers", "1,2,5", "numbers of worker processes sharing the keys, comma-separated")
		warmup     = fs.Duration("warmup", 10*time.Second, "time before measuring, in each cell")
		duration   = fs.Duration("duration", 30*time.Second, "measured time, in each cell")
		profCell   = fs.String("profile-cell", "100x5", "the cell (keys x workers) whose processes write CPU profiles; none if it is not in the matrix, or empty")
		goCmd      = fs.String("go", "go", "the go command, for `go tool pprof`")
		resultsTo  = fs.String("results", "keep", "where served results go: keep, reply or none (the producer's --results, which says what reply and none give up)")
		profDir    = fs.String("profiles-dir", "", "keep the profiled cell's raw CPU profiles in this `folder` (default: a temporary one, removed)")
		against    = fs.String("against", "", "also measure the binaries in this `folder` (another build, such as the last release's: go build -o FOLDER/ ./cmd/...), each cell right after this build's, and add the ratios of their medians")
		runs       = fs.Int("runs", 1, "how many times to run the matrix, one round after the other; with more than one, each cell's medians follow (the profiled cell and NATS alone run once)")
		alone      = fs.Bool("nats-alone", false, "for each number of keys, also measure NATS alone: the same producer, and one client ending each request with the fleet's messages (pull, result stored, reply, ack), without upstream, limiter or control plane")
	)
	if _, err := cmd.Parse(args, os.Getenv); err != nil {
		return err
	}
	ks, err := positiveList("--keys", *keyList)
	if err != nil {
		return cmd.Usage(err)
	}
	ws, err := positiveList("--workers", *workerList)
	if err != nil {
		return cmd.Usage(err)
	}
	if *runs < 1 {
		return cmd.Usage(fmt.Errorf("--runs %d: want 1 or more", *runs))
	}
	if *against != "" {
		for _, name := range []string{"fleet", "worker", "producer", "exchange", "monitor"} {
			if _, err := os.Stat(filepath.Join(*against, name)); err != nil {
				return cmd.Usage(fmt.Errorf("--against %s: no %s there (build the other version with go build -o %s/ ./cmd/...): %w", *against, name, *against, err))
			}
		}
	}
	if *warmup < 0 || *duration <= 0 {
		return cmd.Usage(fmt.Errorf("--warmup %s must not be negative and --duration %s must be positive", *warmup, *duration))
	}
	if err := wire.Results(*resultsTo).Check(); err != nil {
		return cmd.Usage(fmt.Errorf("--%w", err))
	}
	var prof bench.Cell
	if *profCell != "" {
		if prof, err = bench.ParseCell(*profCell); err != nil {
			return cmd.Usage(fmt.Errorf("--profile-cell: %w", err))
		}
	}
	cfg := bench.CPUConfig{Bin: *bin, Keys: ks, Workers: ws, Warmup: *warmup, Duration: *duration, Profile: prof, GoCmd: *goCmd, ProfileDir: *profDir, Results: wire.Results(*resultsTo),
		Alone: *alone, Runs: *runs, Against: *against, Logs: processLogs(*logs, stderr), Logger: cmd.Logger()}
	res, err := bench.CPU(ctx, cfg)
	fmt.Fprint(stdout, bench.FormatCPU(res, cfg))
	return err
}

// positiveList reads a comma-separated list of positive numbers.
func positiveList(flagName, s string) ([]int, error) {
	var out []int
	for _, p := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%s %q: want positive numbers, comma-separated", flagName, s)
		}
		out = append(out, n)
	}
	return out, nil
}

func chaos(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := cli.NewCommand("fleet chaos", "Cluster benchmark: the fleet on an embedded three-node NATS cluster (R3), under load, with one\nnode stopped every --every; ends with the conservation check against the simulator's ids.", stdout, stderr)
	fs := cmd.Flags
	bin, logs := runFlags(fs)
	var (
		workers  = fs.Int("workers", 5, "worker processes")
		rate     = fs.Float64("rate", 80, "offered requests a second")
		duration = fs.Duration("duration", 2*time.Minute, "how long the producer publishes")
		every    = fs.Duration("every", 20*time.Second, "how often a node is stopped")
		down     = fs.Duration("down", 5*time.Second, "how long a stopped node stays down")
		ttl      = fs.Duration("ttl", time.Minute, "the requests' time to live")
	)
	if _, err := cmd.Parse(args, os.Getenv); err != nil {
		return err
	}
	cfg := bench.ChaosConfig{Bin: *bin, Workers: *workers, Rate: *rate, Duration: *duration, Every: *every, Down: *down, TTL: *ttl,
		Logs: processLogs(*logs, stderr), Logger: cmd.Logger()}
	res, err := bench.Chaos(ctx, cfg)
	if err != nil {
		return err
	}
	fmt.Fprint(stdout, bench.FormatChaos(res, cfg))
	if res.Summary.Lost() > 0 {
		return fmt.Errorf("%d requests unaccounted for", res.Summary.Lost())
	}
	return nil
}

// runFlags registers the flags every command that starts processes shares:
// where the binaries are, and whether to show every line of their logs.
func runFlags(fs *flag.FlagSet) (bin *string, logs *bool) {
	bin = fs.String("bin", "bin", "folder with the built commands (make build)")
	logs = fs.Bool("logs", false, "show every process's log lines, not only warnings")
	return bin, logs
}
