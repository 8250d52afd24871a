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

	"github.com/ratefleet/ratefleet/internal/fleet"
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
	)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: fleet [flags]\n\nRuns NATS, the exchange simulator, a producer, workers and the monitor on this machine,\nthen prints what happened to every request.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	var logOut io.Writer = &warnings{w: stderr}
	if *logs {
		logOut = stderr
	}
	f, err := fleet.Up(ctx, fleet.Config{
		Bin: *bin, Workers: *workers, Duration: *duration, Drain: *drain,
		ProducerArgs: []string{"--shape", *shape}, WorkerArgs: []string{"--limiter", *limiter},
		Monitor: true, MonitorInterval: *interval, Out: stdout, Logs: logOut, Logger: log,
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
	sum, err := f.Summarize(context.WithoutCancel(ctx), producing)
	f.Down()
	if err != nil {
		return err
	}
	fmt.Fprint(stdout, fleet.FormatSummary(sum))
	if sum.Lost() != 0 {
		return fmt.Errorf("%d requests unaccounted for", sum.Lost())
	}
	return nil
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
