// Command worker claims an upstream API key through a NATS KV lease and sends that
// key's requests from the shared queue through its own rate limiter. Run as many as
// you like: each holds up to --keys keys, and the rest stand by to take over.
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
	"syscall"
	"time"

	"github.com/google/uuid"

	"github.com/ratefleet/ratefleet/internal/keys"
	"github.com/ratefleet/ratefleet/internal/limiter"
	"github.com/ratefleet/ratefleet/internal/natsconn"
	"github.com/ratefleet/ratefleet/internal/profile"
	"github.com/ratefleet/ratefleet/internal/upstream"
	"github.com/ratefleet/ratefleet/internal/worker"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "worker:", err)
		}
		os.Exit(2)
	}
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		natsURL     = fs.String("nats", natsconn.DefaultURL, "NATS server URL(s), comma-separated")
		streamsFile = fs.String("streams", "", "streams.yaml to apply (default: the built-in one)")
		checkOnly   = fs.Bool("check-streams", false, "only check the NATS declarations, never create or update them")
		keysFile    = fs.String("keys-file", "", "file of API keys, one `name=secret` or secret a line (default: $"+keys.EnvVar+")")
		maxKeys     = fs.Int("keys", 1, "how many keys this process holds at once, each with its own limiter")
		upstreamURL = fs.String("upstream", "http://127.0.0.1:8080", "base URL of the upstream API")
		id          = fs.String("id", "", "worker id in leases and stats (default: host-pid-random)")
		pacer       = fs.String("limiter", "adaptive", "limiter: adaptive, or a baseline for comparison: "+worker.PacerNames())
		maxDelay    = fs.Duration("max-delay", 50*time.Millisecond, "largest one-way delay to the upstream, including the time it takes to register a request, that the limiter assumes at start (the reference exchange: 50ms; raise it if the upstream can be slower, since a 429 means it was)")
		timeout     = fs.Duration("request-timeout", 2*time.Second, "how long one attempt may take before it counts as a timeout")
		inFlight    = fs.Int("max-in-flight", 16, "requests one key holds at once, waiting or sending")
		logLevel    = fs.String("log-level", "info", "debug, info, warn or error")
		keeper      = fs.Bool("keeper", true, "also bury requests the server gave up on without a worker seeing it (advisories and reconciliation; safe in every worker)")
		profileFile = fs.String("profile", "", "upstream profile (YAML): what to call, where the key and nonce go, how to sign, what answers mean (default: the reference exchange)")
		gatewayHold = fs.Duration("gateway-hold", worker.DefaultGatewayHold, "how long after a gateway's answer (a proxy's 502/503/504, or an answer not in the upstream's format) the request may still reach the upstream; the key's next send waits for it")
	)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: worker [flags]\n\nClaims an API key and sends its requests from the queue, without ever exceeding its rate limit.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	prof := profile.Reference()
	if *profileFile != "" {
		var err error
		if prof, err = profile.Load(*profileFile); err != nil {
			return err
		}
	}
	if set["upstream"] || *profileFile == "" {
		prof.BaseURL = *upstreamURL
	}
	lc := limiter.Config{}
	if set["max-delay"] || prof.Rate.MaxDelay == 0 {
		lc.MaxDelay = *maxDelay
	}
	factory, err := worker.NewPacerFactory(*pacer, prof.LimiterConfig(lc))
	if err != nil {
		return err
	}
	ks, err := keys.Load(*keysFile, os.Getenv)
	if err != nil {
		return err
	}
	if err := prof.CheckKeys(ks); err != nil {
		return err
	}
	if *id == "" {
		host, _ := os.Hostname()
		*id = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), uuid.NewString()[:8])
	}
	conn, err := natsconn.Open(ctx, natsconn.Options{URL: *natsURL, Name: "ratefleet-worker " + *id, StreamsFile: *streamsFile, CheckOnly: *checkOnly, Logger: log})
	if err != nil {
		return err
	}
	defer conn.Close()
	up, err := upstream.NewProfile(prof, *timeout, *inFlight**maxKeys, nil)
	if err != nil {
		return err
	}
	defer up.Close()
	w, err := worker.New(ctx, conn.JS, worker.Config{
		ID: *id, Keys: ks, MaxKeys: *maxKeys, Upstream: up, Streams: conn.Streams,
		NewPacer: factory, MaxInFlight: *inFlight, GatewayHold: *gatewayHold, Keeper: *keeper, Logger: log,
	})
	if err != nil {
		return err
	}
	log.Info("worker started", "id", *id, "keys", len(ks), "max_keys", *maxKeys, "limiter", *pacer, "profile", prof.Name, "upstream", upstream.Redact(prof.BaseURL))
	return w.Run(ctx)
}
