// Command fleet runs a whole ratefleet on this machine: an embedded NATS server,
// the upstream simulator, a producer, workers and the monitor, each worker a process
// of its own. It is what `make run` starts.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/ratefleet/ratefleet/internal/embedded"
	"github.com/ratefleet/ratefleet/internal/fleet"
	"github.com/ratefleet/ratefleet/internal/natsconn"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "fleet:", err)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "bench" {
		return bench(ctx, args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "failover" {
		return failover(ctx, args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "nats" {
		return natsServer(ctx, args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("fleet", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		bin      = fs.String("bin", "bin", "folder with the built commands (make build)")
		workers  = fs.Int("workers", 5, "worker processes to start")
		duration = fs.Duration("duration", 60*time.Second, "how long the producer publishes")
		drain    = fs.Duration("drain", 15*time.Second, "how long to wait for the queue to empty after the producer stops")
		interval = fs.Duration("interval", 5*time.Second, "how often the monitor prints")
		logs     = fs.Bool("logs", false, "show every process's log lines, not only warnings")
		limiter  = fs.String("limiter", "adaptive", "the workers' limiter")
		shape    = fs.String("shape", "seed", "the producer's load shape")
		rate     = fs.Float64("rate", 95, "requests a second, for the rate and poisson shapes")
		monitor  = fs.Bool("monitor", true, "start the monitor and show its block")
		web      = fs.String("http", "", "let the monitor serve its live page and /metrics here, such as 127.0.0.1:9090")
		prof     = fs.String("profile", "reference", "the upstream's shape: reference, signed, per-minute, or a profile file")
	)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: fleet [flags]\n       fleet bench [flags]\n       fleet failover [flags]\n       fleet nats [flags]\n\nRuns NATS, the exchange simulator, a producer, workers and the monitor on this machine,\nthen prints what happened to every request. `fleet bench --help` describes the benchmark.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	logOut := processLogs(*logs, stderr)
	setup, err := fleet.SetupFor(*prof)
	if err != nil {
		return err
	}
	defer setup.Close()
	f, err := fleet.Up(ctx, fleet.Config{
		Keys: setup.Keys, Profile: setup.Profile, ExchangeArgs: setup.ExchangeArgs,
		Bin: *bin, Workers: *workers, Duration: *duration, Drain: *drain,
		ProducerArgs: []string{"--shape", *shape, "--rate", fmt.Sprint(*rate)}, WorkerArgs: []string{"--limiter", *limiter},
		Monitor: *monitor, MonitorInterval: *interval, MonitorHTTP: *web, Out: stdout, Logs: logOut, Logger: log,
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
	for _, marker := range []string{"level=WARN", "level=ERROR", "panic:", "fatal error:"} {
		if strings.Contains(s, marker) {
			return true
		}
	}
	return false
}

func bench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("fleet bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		bin      = fs.String("bin", "bin", "folder with the built commands (make build)")
		workers  = fs.Int("workers", 5, "worker processes")
		duration = fs.Duration("duration", 60*time.Second, "measured time per limiter")
		warmup   = fs.Duration("warmup", 5*time.Second, "time before measuring")
		rate     = fs.Float64("rate", 200, "offered requests a second, far above capacity")
		limiters = fs.String("limiters", "adaptive,interval-ring,ring-buffer,rate-burst1,rate-burst20", "limiters to compare, comma-separated")
		logs     = fs.Bool("logs", false, "show every process's log lines, not only warnings")
		prof     = fs.String("profile", "reference", "the upstream's shape: reference, signed, per-minute, or a profile file")
	)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: fleet bench [flags]\n\nSaturation benchmark: for each limiter, a fresh NATS, simulator and fleet under the same\noffered load; prints one Markdown table.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	logOut := processLogs(*logs, stderr)
	setup, err := fleet.SetupFor(*prof)
	if err != nil {
		return err
	}
	defer setup.Close()
	cfg := fleet.BenchConfig{
		Bin: *bin, Limiters: strings.Split(*limiters, ","), Workers: *workers, Duration: *duration, Warmup: *warmup,
		Rate: *rate, Setup: setup, Logs: logOut, Logger: slog.New(slog.NewTextHandler(stderr, nil)),
	}
	rows, err := fleet.Bench(ctx, cfg)
	fmt.Fprint(stdout, fleet.FormatBench(rows, cfg))
	return err
}

func failover(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("fleet failover", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		bin      = fs.String("bin", "bin", "folder with the built commands (make build)")
		workers  = fs.Int("workers", 8, "worker processes at start")
		duration = fs.Duration("duration", 5*time.Minute, "how long the run lasts")
		every    = fs.Duration("every", 20*time.Second, "how often a key holder is stopped")
		rate     = fs.Float64("rate", 200, "offered requests a second")
		logs     = fs.Bool("logs", false, "show every process's log lines, not only warnings")
	)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: fleet failover [flags]\n\nFailover benchmark: stops a key holder every --every, with kill -9 and SIGTERM in turn.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	logOut := processLogs(*logs, stderr)
	cfg := fleet.FailoverConfig{Bin: *bin, Workers: *workers, Duration: *duration, Every: *every, Rate: *rate,
		Logs: logOut, Logger: slog.New(slog.NewTextHandler(stderr, nil))}
	res, err := fleet.Failover(ctx, cfg)
	fmt.Fprint(stdout, fleet.FormatFailover(res, cfg))
	return err
}

func natsServer(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("fleet nats", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		port  = fs.Int("port", 4222, "client port on 127.0.0.1")
		store = fs.String("store", "", "JetStream store folder (default: a temporary one, removed on exit)")
	)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: fleet nats [flags]\n\nRuns an embedded NATS server with JetStream on loopback until interrupted, with streams.yaml applied.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	s, err := embedded.Start(embedded.Options{Port: *port, StoreDir: *store})
	if err != nil {
		return err
	}
	defer s.Shutdown()
	conn, err := natsconn.Open(ctx, natsconn.Options{URL: s.ClientURL(), Name: "ratefleet-fleet", Logger: slog.New(slog.NewTextHandler(stderr, nil))})
	if err != nil {
		return err
	}
	conn.Close()
	fmt.Fprintf(stdout, "NATS with JetStream at %s (store %s); Ctrl-C to stop\n", s.ClientURL(), s.StoreDir())
	<-ctx.Done()
	return nil
}
